// Words for job and file states, and which states still move.
import { describeSeeding, type FileState, type JobState, type SeedingProgress } from "@torreclou/contracts";
import type { SearchState } from "./engine/searches.ts";
import type { TransferStatus } from "./engine/transfer.ts";
import { formatBytes, formatDuration } from "./format.ts";

/** A search for metadata this tab runs that is worth a line on the job page. */
export type BrowserSearch = Exclude<SearchState, { status: "sent" } | { status: "not_needed" }>;

export const jobStateLabel: Record<JobState, string> = {
  queued: "Queued",
  resolving: "Finding metadata",
  awaiting_selection: "Choose files",
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

/** Not ended: running, or waiting for its user's choice of files. */
export const activeStates: readonly JobState[] = [
  "queued",
  "resolving",
  "awaiting_selection",
  "downloading",
  "uploading",
];

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
  awaiting_selection: 2,
  downloading: 3,
  uploading: 4,
  completed: 5,
  failed: 5,
  cancelled: 5,
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

/**
 * What a job that is looking for a magnet's metadata says: "Finding metadata
 * — no peers found yet, 40 s", naming the trackers asked (by host) when known.
 */
/** What this browser's own search for a magnet's metadata is doing, in a line. */
export function browserSearchText(search: BrowserSearch, now: number): string {
  switch (search.status) {
    case "searching": {
      const found =
        search.peers === 0
          ? "no peers found yet"
          : `${search.peers} peer${search.peers === 1 ? "" : "s"} found, waiting for the metadata`;
      const asked = search.trackers.length === 0 ? "" : ` · asking ${search.trackers.slice(0, 3).join(", ")}`;
      return `This browser is looking too (WebRTC) — ${found}, ${formatDuration(Math.max(0, (now - search.since) / 1000))}${asked}`;
    }
    case "sending":
      return "This browser found the file list; handing it in…";
    case "failed":
      return `This browser's search for the file list stopped: ${search.message}`;
  }
}

export function resolvingText(peers: number, seconds: number, trackers: readonly string[] = []): string {
  const found =
    peers === 0
      ? "no peers found yet"
      : `${peers} peer${peers === 1 ? "" : "s"} found, waiting for the metadata`;
  const asked =
    trackers.length === 0
      ? ""
      : ` · asking ${trackers.length === 1 ? "tracker" : "trackers"} ${trackers.slice(0, 3).join(", ")}${trackers.length > 3 ? ` and ${trackers.length - 3} more` : ""}`;
  return `Finding metadata — ${found}, ${formatDuration(Math.max(0, seconds))}${asked}`;
}

/**
 * What a job the submitter's browser runs says on its page: what this tab is
 * doing with it, or (no transfer here) that it waits for a tab or the fleet.
 */
export function browserTransferText(
  transfer: TransferStatus | undefined,
  jobState: JobState,
): string | undefined {
  switch (transfer?.status) {
    case "starting":
      return "Starting the transfer in this browser…";
    case "running":
      return "This browser is transferring the job. Keep this tab open: closing it pauses the job.";
    case "taken":
      return "Another tab or the fleet has taken this job over; this tab stopped.";
    case "failed":
      // The job's own failure reason says it, once the edge has it.
      return jobState === "failed" ? undefined : `The transfer in this browser stopped: ${transfer.reason}`;
    case "finished":
      return undefined;
    default:
      if (!isActive(jobState) || jobState === "awaiting_selection") return undefined;
      return jobState === "queued"
        ? "Paused: this job runs in a browser tab, and none is transferring it. Resume it here, or hand it to the fleet."
        : "This job is being transferred by a browser tab; if that tab is gone, resume it here.";
  }
}

/** "Seeding · ratio 0.42 · 3 peers · uploaded 120 MiB", or what it did and why it ended. */
export function seedingText(seeding: SeedingProgress): string {
  return describeSeeding(seeding, formatBytes);
}
