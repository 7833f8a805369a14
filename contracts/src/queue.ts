// The Redis side of a job: the stream workers read, the keys that fence and
// cancel an attempt, and the per-job progress stream the browser polls.
// Edge and worker both build key names here, so they can never disagree.
import { z } from "zod";

export const queue = {
  /** Stream of jobs to run, read by the `workers` consumer group. */
  stream: "torreclou:jobs",
  group: "workers",
  /** How long a lease lasts without renewal before another worker may reclaim the job. */
  leaseMs: 30_000,
  /** Bounded length of each job's progress stream (XADD MAXLEN ~). */
  progressMaxLen: 500,
  /** Progress events a worker may publish per job per second (Upstash bills per command). */
  progressPerSecond: 2,
} as const;

export const keys = {
  /** Worker id holding the job's current attempt, with a PX expiry (the lease). */
  lease: (jobId: string) => `torreclou:job:${jobId}:lease`,
  /** Set by the edge when a user cancels; a worker checks it as it renews the lease. */
  cancel: (jobId: string) => `torreclou:job:${jobId}:cancel`,
  /** Per-job progress events (a Redis stream). */
  progress: (jobId: string) => `torreclou:job:${jobId}:progress`,
  /** The latest progress event as JSON, for list views that want one snapshot per job. */
  snapshot: (jobId: string) => `torreclou:job:${jobId}:snapshot`,
  /** Owner's user id, so progress reads are scoped without a database query per poll. */
  owner: (jobId: string) => `torreclou:job:${jobId}:owner`,
} as const;

/** The one field of a jobs-stream entry: `job` = JSON of this shape. */
export const JobMessage = z.object({
  jobId: z.uuid(),
  /** The attempt this message starts; workers ignore messages for an older attempt. */
  attempt: z.number().int().min(1),
});
export type JobMessage = z.infer<typeof JobMessage>;
