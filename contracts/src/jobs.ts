// The job lifecycle: one transition table that the edge, the worker and the
// database all obey. `canTransition` is the only way code should decide
// whether a state change is legal.
import { z } from "zod";

export const jobStates = [
  "queued",
  "resolving",
  "awaiting_selection",
  "downloading",
  "uploading",
  "completed",
  "failed",
  "cancelled",
] as const;
export const JobState = z.enum(jobStates);
export type JobState = z.infer<typeof JobState>;

export const terminalStates: readonly JobState[] = ["completed", "failed", "cancelled"];

/**
 * Allowed moves. A worker may skip `resolving` (a .torrent already has its
 * metadata) and `downloading` can go straight to `completed` only through
 * `uploading`. `failed` and `cancelled` jobs may be retried (back to `queued`);
 * a crashed attempt is re-queued by the worker that reclaims it.
 *
 * A magnet job that asked to choose its files stops after `resolving` in
 * `awaiting_selection`, held by no worker: the user's selection queues it
 * again (the metadata is kept, so no worker fetches it twice), and a
 * selection not made in time cancels it. The submitter's browser may find the
 * metadata first, while the job is still queued (no worker has it yet) or
 * resolving (the worker's attempt is then replaced).
 */
export const transitions: Readonly<Record<JobState, readonly JobState[]>> = {
  queued: ["resolving", "awaiting_selection", "downloading", "failed", "cancelled"],
  resolving: ["awaiting_selection", "downloading", "queued", "failed", "cancelled"],
  awaiting_selection: ["queued", "failed", "cancelled"],
  downloading: ["uploading", "queued", "failed", "cancelled"],
  uploading: ["completed", "queued", "failed", "cancelled"],
  completed: [],
  failed: ["queued"],
  cancelled: ["queued"],
};

export function canTransition(from: JobState, to: JobState): boolean {
  return transitions[from].includes(to);
}

/** States a worker may hold a job in (claim, run, reclaim): not waiting for the user, not ended. */
export const workerStates: readonly JobState[] = ["queued", "resolving", "downloading", "uploading"];

export function isTerminal(state: JobState): boolean {
  return terminalStates.includes(state);
}

export class IllegalTransitionError extends Error {
  readonly from: JobState;
  readonly to: JobState;
  constructor(from: JobState, to: JobState) {
    super(`a job cannot go from "${from}" to "${to}"`);
    this.from = from;
    this.to = to;
    this.name = "IllegalTransitionError";
  }
}

/** Throws IllegalTransitionError unless the move is in the table. */
export function assertTransition(from: JobState, to: JobState): void {
  if (!canTransition(from, to)) throw new IllegalTransitionError(from, to);
}

/** Per-file state inside a job. Files upload as soon as they are downloaded. */
export const fileStates = [
  "pending",
  "downloading",
  "downloaded",
  "uploading",
  "uploaded",
  "skipped",
  "failed",
] as const;
export const FileState = z.enum(fileStates);
export type FileState = z.infer<typeof FileState>;

/** Who caused a transition, recorded with it: `browser` is the submitter's tab transferring the job itself. */
export const transitionCauses = ["user", "worker", "system", "browser"] as const;
export const TransitionCause = z.enum(transitionCauses);
export type TransitionCause = z.infer<typeof TransitionCause>;
