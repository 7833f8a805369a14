// Tracing in the worker (README, "Tracing"). Each jobs-stream entry the worker
// takes continues the trace whose context the entry carries (the edge request
// that queued the job), or starts one: `job.claim` (lease, Postgres claim,
// start), then `job.run` with `job.metadata`, `job.download` and a
// `job.upload` per stored file (contracts/src/tracing.ts names them all).
// Spans go over OTLP/HTTP (JSON) in batches, and at the end of each attempt,
// so a job's trace is complete as soon as the attempt is.
//
// Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: `startTracing` registers
// nothing then, the OpenTelemetry API stays its no-op self (spans cost an
// object and no I/O), and log lines carry no trace id.
import {
  type Attributes,
  type Context,
  context,
  isSpanContextValid,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { type ExportResult, setGlobalErrorHandler, W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BatchSpanProcessor,
  ParentBasedSampler,
  type ReadableSpan,
  type SpanExporter,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { type JobMessage, queue, spanAttributes, spanNames, tracingOf } from "@torreclou/contracts";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import { outsideJobs } from "../egress/index.ts";

const SCOPE = "torreclou-worker";

let provider: TracerProvider | undefined;

/**
 * The OTLP endpoint is the operator's configuration, not a user's: its
 * exports leave outside any job's scope, so the egress guard (which checks
 * only connections a job opens, see egress/) neither refuses them nor counts
 * them against a job. Without this, a batch timer started by a span that
 * ended inside a job would export from that job's scope.
 */
class OutsideJobsExporter implements SpanExporter {
  readonly #inner: SpanExporter;
  constructor(inner: SpanExporter) {
    this.#inner = inner;
  }
  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    outsideJobs(() => this.#inner.export(spans, done));
  }
  shutdown(): Promise<void> {
    return outsideJobs(() => this.#inner.shutdown());
  }
  forceFlush(): Promise<void> {
    return outsideJobs(() => this.#inner.forceFlush?.() ?? Promise.resolve());
  }
}

/** Turns tracing on for this process if the configuration asks for it; true if it did. */
export function startTracing(
  config: Pick<
    Config,
    | "OTEL_EXPORTER_OTLP_ENDPOINT"
    | "OTEL_EXPORTER_OTLP_HEADERS"
    | "OTEL_SERVICE_NAME"
    | "OTEL_TRACES_SAMPLER_ARG"
    | "WORKER_ID"
  > & { version: string },
  log: Logger,
): boolean {
  const tracing = tracingOf(config, SCOPE);
  if (!tracing || provider) return provider !== undefined;
  const exporter = new OTLPTraceExporter({ url: tracing.url, headers: tracing.headers });
  provider = new TracerProvider({
    resource: resourceFromAttributes({
      "service.name": tracing.serviceName,
      "service.instance.id": config.WORKER_ID,
      "service.version": config.version,
    }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(tracing.sampleRatio) }),
    spanProcessors: [new BatchSpanProcessor({ exporter: new OutsideJobsExporter(exporter) })],
  });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  // Failed exports, without the headers (the exporter's errors name the status or the network error).
  setGlobalErrorHandler((error) => log.warn({ reason: String(error) }, "trace export failed"));
  // Where to (origin only: no credentials a URL might hold); the headers are a secret and stay out of the log.
  log.info({ endpoint: new URL(tracing.url).origin, ratio: tracing.sampleRatio }, "tracing on");
  return true;
}

/** Sends what is left and stops (a clean exit). */
export async function stopTracing(): Promise<void> {
  await provider?.shutdown().catch(() => {});
}

/** Sends the spans ended so far now rather than at the next batch (an attempt ended). */
export function flushTraces(): void {
  void provider?.forceFlush().catch(() => {});
}

/**
 * Runs `work` (taking one jobs-stream entry: lease, claim, start of the
 * attempt) in a `job.claim` span, a child of the entry's trace context if it
 * carries one, else the root of a new trace. Everything `work` starts,
 * the attempt included, runs in that span's context.
 */
export function inClaimSpan<T>(
  entry: { id: string; message: JobMessage },
  work: () => Promise<T>,
): Promise<T> {
  if (!provider) return work();
  const parent = propagation.extract(ROOT_CONTEXT, entry.message);
  const span = trace.getTracer(SCOPE).startSpan(
    spanNames.claim,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        [spanAttributes.jobId]: entry.message.jobId,
        ...(entry.message.cleanup ? { [spanAttributes.cleanup]: true } : {}),
        "messaging.system": "redis",
        "messaging.operation.type": "process",
        "messaging.destination.name": queue.stream,
        "messaging.message.id": entry.id,
      },
    },
    parent,
  );
  return context.with(trace.setSpan(parent, span), () => settled(span, work));
}

/** Ends the span when `work` settles, marking a failure with the error's type only (messages can carry secrets). */
async function settled<T>(span: Span, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    failed(span, error);
    throw error;
  } finally {
    span.end();
  }
}

/** Marks a span failed, with the error's type only. */
export function failed(span: Span, error?: unknown): void {
  span.setStatus({ code: SpanStatusCode.ERROR });
  if (error !== undefined)
    span.setAttribute("error.type", error instanceof Error ? error.name : typeof error);
}

/** Runs `work` in a span, a child of the current one, made current for what `work` starts. */
export function inSpan<T>(
  name: string,
  attributes: Attributes,
  work: (span: Span) => Promise<T>,
): Promise<T> {
  return trace
    .getTracer(SCOPE)
    .startActiveSpan(name, { attributes }, (span) => settled(span, () => work(span)));
}

/** A span, a child of the current one, that the caller ends (it is not made current). */
export function startSpan(name: string, attributes: Attributes, parent: Context = context.active()): Span {
  return trace.getTracer(SCOPE).startSpan(name, { attributes }, parent);
}

/** Ends a span once; later calls (a failure after success) do nothing. */
export function endSpan(span: Span, error?: unknown): void {
  if (!span.isRecording()) return;
  if (error !== undefined) failed(span, error);
  span.end();
}

/** pino mixin: the current span's ids on each log line written inside a trace. */
export function traceLogFields(): { trace_id?: string; span_id?: string } {
  const span = trace.getSpan(context.active());
  if (!span) return {};
  const ids = span.spanContext();
  return isSpanContextValid(ids) ? { trace_id: ids.traceId, span_id: ids.spanId } : {};
}
