// What the operator's view reads that workers write: the workers' heartbeat
// records (one Redis hash, a field per worker) and the failure reason of a
// job that used up its attempts.
import { z } from "zod";

/** Redis hash: field = worker id, value = JSON of `WorkerBeat`. */
export const workersKey = "torreclou:workers";

/**
 * How often a worker writes its record (one HSET), idle or busy: every two
 * and a half minutes keeps an idle worker under two Redis commands a minute
 * (its blocking reads make the rest). The record
 * counts as "seen" for three of these. A worker that stops cleanly removes its
 * own field; a crashed one's field goes stale and readers prune it.
 */
export const heartbeatMs = 150_000;
/** A worker not heard from for this long is no longer counted as seen. */
export const workerSeenWindowMs = 3 * heartbeatMs;
/** A record older than this is removed by whoever reads the hash. */
export const workerForgetMs = 24 * 3_600_000;

export const WorkerBeat = z.object({
  id: z.string(),
  host: z.string(),
  version: z.string(),
  pid: z.number().int(),
  /** Jobs this worker runs now (ids). */
  jobs: z.array(z.string()),
  concurrency: z.number().int(),
  startedAt: z.iso.datetime(),
  /** When the record was written (the last heartbeat). */
  seenAt: z.iso.datetime(),
});
export type WorkerBeat = z.infer<typeof WorkerBeat>;

/** Reads a hash value; undefined when it is not a record of this shape. */
export function readWorkerBeat(value: unknown): WorkerBeat | undefined {
  try {
    const parsed = WorkerBeat.safeParse(typeof value === "string" ? JSON.parse(value) : value);
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** A job attempted this many times (since its user last queued it) without finishing is failed. */
export const MAX_ATTEMPTS = 10;

/** The failure reason of a job that used up its attempts; `exhaustedReasonPattern` matches it in SQL. */
export function exhaustedReason(attempts = MAX_ATTEMPTS): string {
  return `The job was started ${attempts} times without finishing; it is stopped to avoid retrying forever.`;
}
export const exhaustedReasonPattern = "The job was started % times without finishing%";
