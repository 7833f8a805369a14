// The calls a tab transferring a job makes to the edge, exactly as
// contracts/src/transfer.ts lists them. Answers are checked against the
// contract's schemas. Every call but taking the job names the attempt the tab
// holds; a 409 `stale_attempt` means another tab or the fleet has the job now.
import {
  FileUpload,
  PartUrl,
  TransferPlan,
  type TransferPlan as TransferPlanType,
  type TransferProgress,
} from "@torreclou/contracts";
import { ApiError, toApiError } from "../api/client.ts";
import { retryDelay, sleep } from "./layout.ts";

/** Another tab, or the fleet, took the job: this tab stops without touching it. */
export class StaleAttempt extends Error {
  constructor() {
    super("Another tab or the fleet has taken this job over.");
    this.name = "StaleAttempt";
  }
}

export type ProgressReport = Omit<TransferProgress, "attempt">;

export interface TransferEdge {
  /** Takes the job (again): a new attempt, the source and where each file stands. */
  take(): Promise<TransferPlanType>;
  openUpload(index: number): Promise<FileUpload>;
  partUrl(index: number, partNumber: number): Promise<PartUrl>;
  storePart(index: number, partNumber: number, part: { etag: string; size: number }): Promise<void>;
  complete(index: number, driveFileId?: string): Promise<void>;
  progress(report: ProgressReport): Promise<void>;
  finish(): Promise<void>;
  fail(reason: string): Promise<void>;
  /** The attempt taken, once `take` answered. */
  readonly attempt: number | undefined;
}

/** Calls the edge can safely make again after a network error or a 5xx: all of these are idempotent. */
const TRIES = 4;

/** The edge's transfer routes of job `jobId`, from this page's origin. */
export function transferEdge(jobId: string, signal: AbortSignal): TransferEdge {
  const base = `/api/jobs/${encodeURIComponent(jobId)}/transfer`;
  let attempt: number | undefined;

  async function send<T>(
    path: string,
    method: string,
    body: object | undefined,
    schema?: { parse(value: unknown): T },
  ) {
    for (let tries = 1; ; tries++) {
      let response: Response;
      try {
        response = await fetch(`${base}${path}`, {
          method,
          signal,
          credentials: "same-origin",
          ...(body ? { headers: { "content-type": "application/json" }, body: JSON.stringify(body) } : {}),
        });
      } catch {
        if (signal.aborted) throw signal.reason;
        if (tries >= TRIES) throw new ApiError(0, "network", "Cannot reach TorreClou from this browser.");
        await sleep(retryDelay(tries), signal);
        continue;
      }
      if (response.ok) {
        const text = await response.text();
        return schema ? schema.parse(JSON.parse(text)) : undefined;
      }
      const error = await toApiError(response);
      if (error.code === "stale_attempt") throw new StaleAttempt();
      if (response.status < 500 || tries >= TRIES) throw error;
      await sleep(retryDelay(tries), signal);
    }
  }
  const withAttempt = (rest: object = {}) => {
    if (attempt === undefined) throw new Error("the job is not taken yet");
    return { attempt, ...rest };
  };
  const file = (index: number) => `/files/${index}`;

  return {
    get attempt() {
      return attempt;
    },
    async take() {
      const plan = (await send("", "POST", {}, TransferPlan))!;
      attempt = plan.attempt;
      return plan;
    },
    async openUpload(index) {
      return (await send(`${file(index)}/upload`, "POST", withAttempt(), FileUpload))!;
    },
    async partUrl(index, partNumber) {
      return (await send(`${file(index)}/parts/${partNumber}`, "POST", withAttempt(), PartUrl))!;
    },
    async storePart(index, partNumber, part) {
      await send(`${file(index)}/parts/${partNumber}`, "PUT", withAttempt(part));
    },
    async complete(index, driveFileId) {
      await send(`${file(index)}/complete`, "POST", withAttempt(driveFileId ? { driveFileId } : {}));
    },
    async progress(report) {
      await send("/progress", "POST", withAttempt(report));
    },
    async finish() {
      await send("/finish", "POST", withAttempt());
    },
    async fail(reason) {
      await send("/fail", "POST", withAttempt({ reason: reason.slice(0, 500) }));
    },
  };
}

/**
 * Tells the edge the tab is going away: the job waits, queued, for this tab
 * (or another) to resume it, or for the fleet. A beacon, since a fetch may be
 * cut off as the page unloads; it carries the session cookie and the Origin.
 */
export function pauseBeacon(jobId: string, attempt: number): boolean {
  const body = new Blob([JSON.stringify({ attempt })], { type: "application/json" });
  return navigator.sendBeacon(`/api/jobs/${encodeURIComponent(jobId)}/transfer/pause`, body);
}

/** Hands a paused browser job to the worker fleet. */
export async function handToFleet(jobId: string): Promise<void> {
  const response = await fetch(`/api/jobs/${encodeURIComponent(jobId)}/transfer/fleet`, {
    method: "POST",
    credentials: "same-origin",
  });
  if (!response.ok) throw await toApiError(response);
}
