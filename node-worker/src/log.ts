// The worker's root logger: JSON lines with the service and the worker's id
// once per line (children never repeat a key their parents bound: every job's
// lines get its id and attempt from one child, see worker.ts and runner.ts).
import { type DestinationStream, type Logger, pino } from "pino";
import type { Config } from "./config.ts";

export function createLogger(
  config: Pick<Config, "LOG_LEVEL" | "WORKER_ID">,
  destination?: DestinationStream,
): Logger {
  const options = { level: config.LOG_LEVEL, base: { service: "worker", worker: config.WORKER_ID } };
  return destination ? pino(options, destination) : pino(options);
}
