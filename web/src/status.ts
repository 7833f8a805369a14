// Words for job and file states, and which states still move.
import type { FileState, JobState } from "@torreclou/contracts";

export const jobStateLabel: Record<JobState, string> = {
  queued: "Queued",
  resolving: "Finding metadata",
  downloading: "Downloading",
  uploading: "Uploading",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};

export const fileStateLabel: Record<FileState, string> = {
  pending: "Waiting",
  downloading: "Downloading",
  downloaded: "Downloaded",
  uploading: "Uploading",
  uploaded: "Stored",
  skipped: "Not selected",
  failed: "Failed",
};

export const activeStates: readonly JobState[] = ["queued", "resolving", "downloading", "uploading"];

export function isActive(state: JobState): boolean {
  return activeStates.includes(state);
}

export function fileLabel(state: string): string {
  return (fileStateLabel as Record<string, string>)[state] ?? state;
}

/** How far along the lifecycle a state is; the three endings are equally far. */
const stateRank: Record<JobState, number> = {
  queued: 0,
  resolving: 1,
  downloading: 2,
  uploading: 3,
  completed: 4,
  failed: 4,
  cancelled: 4,
};

/** Of two reports of one attempt, the one further along (the first on a tie). */
export function laterState(a: JobState, b: JobState): JobState {
  return stateRank[b] > stateRank[a] ? b : a;
}

/**
 * A transition's reason, unless it only repeats what the line already says
 * ("Cancelled by user: cancelled by the user").
 */
export function timelineReason(t: {
  to: JobState;
  cause: string;
  reason?: string | null;
}): string | undefined {
  const reason = t.reason?.trim();
  if (!reason) return undefined;
  const words = reason
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s]/gu, " ")
    .split(/\s+/)
    .filter((w) => w && !["by", "the", "a", "an", "was", "job"].includes(w));
  const said = new Set([...jobStateLabel[t.to].toLowerCase().split(/\s+/), t.to, t.cause.toLowerCase()]);
  return words.every((w) => said.has(w)) ? undefined : reason;
}
