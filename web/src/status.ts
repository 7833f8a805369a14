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
