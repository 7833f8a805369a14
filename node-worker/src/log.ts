// The worker's root logger: JSON lines with the service and the worker's id
// once per line (children never repeat a key their parents bound: every job's
// lines get its id and attempt from one child, see worker.ts and runner.ts).
// While tracing is on, a line written inside a job's trace also carries its
// `trace_id` and `span_id` (tracing/).
import { type DestinationStream, type Logger, pino } from "pino";
import type { Config } from "./config.ts";
import { traceLogFields } from "./tracing/index.ts";

export function createLogger(
  config: Pick<Config, "LOG_LEVEL" | "WORKER_ID" | "OTEL_EXPORTER_OTLP_ENDPOINT">,
  destination?: DestinationStream,
): Logger {
  const options = {
    level: config.LOG_LEVEL,
    base: { service: "worker", worker: config.WORKER_ID },
    ...(config.OTEL_EXPORTER_OTLP_ENDPOINT ? { mixin: traceLogFields } : {}),
  };
  return destination ? pino(options, destination) : pino(options);
}
