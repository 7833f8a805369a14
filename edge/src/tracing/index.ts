// Tracing on the edge (README, "Tracing"): a span per API request, a child
// span for each jobs-stream entry written (whose W3C trace context goes into
// the entry, so the worker's spans continue the trace), exported over
// OTLP/HTTP JSON. Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: nothing is
// registered then, the OpenTelemetry API stays its no-op self, and no entry
// carries a trace context.
//
// Built for workerd, where Node's SDK does not run: the SDK's tracer
// (@opentelemetry/sdk-trace) and the OTLP/HTTP exporter, whose fetch build
// wrangler bundles (the browser flavour: JSON over `fetch`). The SDK's batch
// processor flushes on timers that would outlive a request, so a processor of
// our own keeps ended spans until the request is done and sends them in one
// POST from `waitUntil`. Context flows through AsyncLocalStorage (nodejs_compat).
// node-worker/test/tracing.test.ts runs all of it in workerd (`wrangler dev`).

import {
  type Attributes,
  context,
  createContextKey,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { ExportResultCode, W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  ParentBasedSampler,
  type ReadableSpan,
  type SpanExporter,
  type SpanProcessor,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { spanAttributes, type TraceContext, type TracingConfig, tracingOf } from "@torreclou/contracts";
import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import { parseConfig } from "../config.ts";
import type { AppEnv } from "../env.ts";

const SCOPE = "torreclou-edge";
/** Ended spans kept for the next flush, at most. */
const MAX_BUFFERED = 512;

/**
 * Keeps ended spans until `forceFlush`, which the request middleware calls
 * from `waitUntil` once its response is sent. Each flush sends what has ended
 * by then (spans of a concurrent request included) in one POST.
 */
class RequestSpanProcessor implements SpanProcessor {
  readonly #exporter: SpanExporter;
  #ended: ReadableSpan[] = [];
  constructor(exporter: SpanExporter) {
    this.#exporter = exporter;
  }
  onStart(): void {}
  onEnd(span: ReadableSpan): void {
    // Sampled spans only; and a bound, for spans no request flushes (the cron's enqueues wait for the next request).
    if (span.spanContext().traceFlags & 1 && this.#ended.length < MAX_BUFFERED) this.#ended.push(span);
  }
  forceFlush(): Promise<void> {
    const spans = this.#ended.splice(0);
    if (spans.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) =>
      this.#exporter.export(spans, (result) => {
        // The exporter's message names the status or the network error, never the headers (a secret).
        if (result.code !== ExportResultCode.SUCCESS) {
          console.warn(
            JSON.stringify({ level: "warn", msg: "trace export failed", error: result.error?.message }),
          );
        }
        resolve();
      }),
    );
  }
  shutdown(): Promise<void> {
    return this.forceFlush();
  }
}

interface Tracing {
  processor: RequestSpanProcessor;
}

/** Set up on the first request that has tracing configured; one per isolate. */
let installed: Tracing | undefined;

function install(config: TracingConfig): Tracing {
  if (installed) return installed;
  const processor = new RequestSpanProcessor(
    new OTLPTraceExporter({ url: config.url, headers: config.headers }),
  );
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ "service.name": config.serviceName }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.sampleRatio) }),
    spanProcessors: [processor],
  });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  installed = { processor };
  return installed;
}

/** Tracing for these bindings, or undefined when it is off (or the configuration is invalid: the app reports that). */
function tracingFor(bindings: Record<string, unknown>): Tracing | undefined {
  let config: TracingConfig | undefined;
  try {
    config = tracingOf(parseConfig(bindings), SCOPE);
  } catch {
    return undefined;
  }
  return config ? install(config) : undefined;
}

/**
 * A SERVER span around each request, named `METHOD route` (the route's
 * pattern, never the path: paths and queries can carry what a user typed).
 * A client's own `traceparent` is not followed: the API is public, so every
 * request starts a trace of its own.
 */
export function tracing(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const on = tracingFor(c.env);
    if (!on) return next();
    const method = c.req.method;
    const span = trace
      .getTracer(SCOPE)
      .startSpan(
        method,
        { kind: SpanKind.SERVER, attributes: { "http.request.method": method } },
        ROOT_CONTEXT,
      );
    try {
      await context.with(trace.setSpan(ROOT_CONTEXT, span), next);
    } finally {
      const route = routePath(c, -1);
      span.updateName(`${method} ${route}`);
      span.setAttribute("http.route", route);
      span.setAttribute("http.response.status_code", c.res.status);
      if (c.res.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
      const flushing = on.processor.forceFlush();
      try {
        c.executionCtx.waitUntil(flushing);
      } catch {
        await flushing; // no execution context (app.request in tests)
      }
    }
  };
}

/**
 * Runs `work` in a child span of the current one; a failure marks the span
 * with the error's type only (messages can name what a user typed).
 */
export async function inSpan<T>(
  name: string,
  options: { kind?: SpanKind; attributes?: Attributes },
  work: (span: Span) => Promise<T>,
): Promise<T> {
  return trace.getTracer(SCOPE).startActiveSpan(name, options, async (span) => {
    try {
      return await work(span);
    } catch (error) {
      span.setStatus({ code: SpanStatusCode.ERROR });
      span.setAttribute("error.type", error instanceof Error ? error.name : typeof error);
      throw error;
    } finally {
      span.end();
    }
  });
}

const JOB = createContextKey("torreclou.job");

/**
 * Runs `work` as the request's own job's: the request's span gets the job's
 * id, and an entry it writes for `jobId` carries the request's trace context.
 * Entries it writes for other jobs (fair turns: a user's older job let in by
 * this request) carry that job's own creating request's context instead
 * (kept on its row), so a job's trace never hangs under another job's request.
 */
export function forJob<T>(jobId: string, work: () => Promise<T>): Promise<T> {
  trace.getActiveSpan()?.setAttribute(spanAttributes.jobId, jobId);
  return context.with(context.active().setValue(JOB, jobId), work);
}

/**
 * The current trace context as the fields of `jobId`'s jobs-stream entry
 * (`traceparent`, `tracestate`), if the request is about that job (`forJob`);
 * none while tracing is off.
 */
export function traceContextFields(jobId: string): TraceContext {
  return context.active().getValue(JOB) === jobId ? requestTraceContext() : {};
}

/**
 * The request's own trace context (none while tracing is off), kept on a new
 * job's row: whenever the job's turn comes, its entry carries it.
 */
export function requestTraceContext(): TraceContext {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return {
    ...(carrier.traceparent ? { traceparent: carrier.traceparent } : {}),
    ...(carrier.tracestate ? { tracestate: carrier.tracestate } : {}),
  };
}

/** `trace_id` for a log line written inside a traced request; nothing otherwise. */
export function traceLogFields(): { trace_id?: string } {
  const span = trace.getSpan(context.active());
  return span?.isRecording() ? { trace_id: span.spanContext().traceId } : {};
}
