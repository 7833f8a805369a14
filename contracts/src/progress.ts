// Progress events: what a worker appends to a job's progress stream and what
// the browser reads back through the edge.
import { z } from "zod";
import { FileState, JobState } from "./jobs.ts";
import { SeedingProgress } from "./seeding.ts";

export const FileProgress = z.object({
  index: z.number().int().min(0),
  state: FileState,
  size: z.number().int().min(0),
  downloaded: z.number().int().min(0),
  uploaded: z.number().int().min(0),
});
export type FileProgress = z.infer<typeof FileProgress>;

export const ProgressEvent = z.object({
  jobId: z.uuid(),
  attempt: z.number().int().min(1),
  phase: JobState,
  /** Milliseconds since the epoch, worker clock. */
  at: z.number().int(),
  bytes: z.object({
    total: z.number().int().min(0),
    downloaded: z.number().int().min(0),
    uploaded: z.number().int().min(0),
  }),
  /** Bytes per second, smoothed. */
  rates: z.object({ down: z.number().min(0), up: z.number().min(0) }),
  etaSeconds: z.number().min(0).nullable(),
  peers: z.number().int().min(0),
  /** Files whose state or bytes changed since the previous event. */
  files: z.array(FileProgress),
  /** A human-readable note, e.g. the failure reason on `failed`. */
  message: z.string().optional(),
  /**
   * Set while the job waits on something outside it instead of failing:
   * its storage provider not answering ("connection refused"), or local disk
   * for the next pieces (the worker's scratch budget in use by other jobs),
   * since `since` (ms since the epoch, worker clock).
   */
  waiting: z
    .object({ for: z.enum(["storage", "disk"]), reason: z.string(), since: z.number().int() })
    .optional(),
  /**
   * While a magnet's metadata is sought (`resolving`): since when (ms since
   * the epoch, worker clock) and the trackers asked, by host name only (a
   * tracker's path may carry a passkey).
   */
  resolving: z.object({ since: z.number().int(), trackers: z.array(z.string()).max(20) }).optional(),
  /**
   * After `completed`, for a job that asked to seed back: what its worker
   * has uploaded to peers, the ratio, the peers, until when, and once it
   * ended, why (contracts/src/seeding.ts).
   */
  seeding: SeedingProgress.optional(),
});
export type ProgressEvent = z.infer<typeof ProgressEvent>;

/** Field name of the JSON event inside a progress-stream entry. */
export const progressField = "e";
