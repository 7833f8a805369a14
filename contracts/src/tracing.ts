// Tracing settings, the same for the edge and the worker, under OpenTelemetry's
// own names. Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: then
// each part sends its spans there over OTLP/HTTP (JSON), to `<endpoint>/v1/traces`.
// The endpoint is the operator's, never a user's: it is not subject to the
// egress policy (see node-worker/src/tracing/).
import { z } from "zod";

/** A setting that may be absent; an empty string counts as absent. */
const optional = z
  .string()
  .trim()
  .optional()
  .transform((v) => v || undefined);

/**
 * `key=value` pairs, comma-separated, values percent-encoded (the OTLP
 * exporter's header format). Parsed without ever echoing a value: they are
 * secrets (an API key of the tracing backend).
 */
export function parseOtlpHeaders(spec: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [i, pair] of (spec ?? "").split(",").entries()) {
    if (pair.trim() === "") continue;
    const at = pair.indexOf("=");
    const key = at > 0 ? pair.slice(0, at).trim() : "";
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(key)) {
      throw new Error(`entry ${i + 1} is not key=value with a header name as its key`);
    }
    let value: string;
    try {
      value = decodeURIComponent(pair.slice(at + 1).trim());
    } catch {
      throw new Error(`the value of ${key} is not percent-encoded`);
    }
    out[key] = value;
  }
  return out;
}

/** The zod fields both parts spread into their configuration. */
export const tracingSettings = {
  /** Base URL of an OTLP/HTTP receiver (a collector, or a vendor's), e.g. http://collector:4318. Unset: tracing off. */
  OTEL_EXPORTER_OTLP_ENDPOINT: optional.pipe(
    z.url({ protocol: /^https?$/, error: "must be an http(s) URL, e.g. http://collector:4318" }).optional(),
  ),
  /** Headers sent with every export, e.g. `authorization=Bearer%20abc`. A secret: never logged. */
  OTEL_EXPORTER_OTLP_HEADERS: z
    .string()
    .optional()
    .transform((spec, ctx) => {
      try {
        return parseOtlpHeaders(spec);
      } catch (error) {
        ctx.addIssue({ code: "custom", message: (error as Error).message });
        return z.NEVER;
      }
    }),
  /** The service name on every span (default: torreclou-edge / torreclou-worker). */
  OTEL_SERVICE_NAME: optional,
  /**
   * Fraction of traces kept, 0 to 1 (default 1: all). Decided where a trace
   * starts (an edge request, or a worker taking an entry that carries none);
   * a worker follows the decision the entry carries, so a job's trace is kept
   * or dropped whole.
   */
  OTEL_TRACES_SAMPLER_ARG: optional.transform((v, ctx) => {
    const ratio = v === undefined ? 1 : Number(v);
    if (ratio >= 0 && ratio <= 1) return ratio;
    ctx.addIssue({ code: "custom", message: "must be a number from 0 to 1" });
    return z.NEVER;
  }),
};

export interface TracingConfig {
  /** Where spans are posted: `<OTEL_EXPORTER_OTLP_ENDPOINT>/v1/traces`. */
  url: string;
  headers: Record<string, string>;
  serviceName: string;
  sampleRatio: number;
}

type TracingFields = {
  OTEL_EXPORTER_OTLP_ENDPOINT?: string | undefined;
  OTEL_EXPORTER_OTLP_HEADERS: Record<string, string>;
  OTEL_SERVICE_NAME?: string | undefined;
  OTEL_TRACES_SAMPLER_ARG: number;
};

/** The tracing a part's parsed configuration asks for; undefined when it is off. */
export function tracingOf(config: TracingFields, defaultServiceName: string): TracingConfig | undefined {
  const endpoint = config.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!endpoint) return undefined;
  return {
    url: `${endpoint.replace(/\/+$/, "")}/v1/traces`,
    headers: config.OTEL_EXPORTER_OTLP_HEADERS,
    serviceName: config.OTEL_SERVICE_NAME ?? defaultServiceName,
    sampleRatio: config.OTEL_TRACES_SAMPLER_ARG,
  };
}

/**
 * The spans of a job's trace, by name (README, "Tracing"):
 *
 *   edge    `POST /api/jobs` (any API request: `METHOD route`)
 *             └ job.enqueue      the jobs-stream entry written, its context inside
 *   worker        └ job.claim    the worker takes the entry: lease, Postgres claim, start
 *                   └ job.run    the attempt, until its outcome
 *                       ├ job.metadata   a magnet's metadata fetched from peers
 *                       ├ job.download   the chosen files' bytes, until all are on disk
 *                       └ job.upload     one per file stored by the attempt
 */
export const spanNames = {
  enqueue: "job.enqueue",
  claim: "job.claim",
  run: "job.run",
  metadata: "job.metadata",
  download: "job.download",
  upload: "job.upload",
} as const;

/**
 * Attributes on those spans: ids, sizes and counts only. No file name, magnet,
 * tracker URL, storage endpoint or user's email ever goes on a span.
 */
export const spanAttributes = {
  jobId: "torreclou.job.id",
  attempt: "torreclou.job.attempt",
  outcome: "torreclou.job.outcome",
  cleanup: "torreclou.job.cleanup",
  infoHash: "torreclou.torrent.info_hash",
  destination: "torreclou.destination.kind",
  files: "torreclou.files",
  bytes: "torreclou.bytes",
  received: "torreclou.bytes.received",
  fileIndex: "torreclou.file.index",
  parts: "torreclou.upload.parts",
  resumed: "torreclou.upload.resumed",
  peers: "torreclou.peers",
} as const;
