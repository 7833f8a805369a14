// Per-user quotas set by the operator (QUOTA_* in config.ts): what a user has
// in use, and the checks that refuse a new job over a limit.
//
// - Running jobs: never refused. Jobs beyond the limit wait their turn queued
//   and start as the user's others end (admitNext in drizzle/jobs.ts).
// - Queued jobs (waiting to start, held or in the queue): a new job beyond
//   the limit is refused with 429 `quota_queued_jobs`; no time is known at
//   which one starts, so no Retry-After.
// - Bytes a month: the selected bytes of the jobs a user created this
//   calendar month (UTC), counted when the job is created whether or not it
//   completes; a magnet counts its bytes once its metadata is known. A job
//   that would go beyond it is refused with 403 `quota_monthly_bytes` and a
//   Retry-After up to the first of next month.
//
// The checks run inside the job's insert transaction with the user's row
// locked (insertJob's guard), so two requests cannot both take the last slot,
// and a refusal writes nothing.
import { jobs } from "@torreclou/db";
import type { Db } from "@torreclou/db/jobs";
import { usageColumns } from "@torreclou/db/ops";
import { eq } from "drizzle-orm";
import type { Config } from "../config.ts";
import { ApiError } from "../errors/index.ts";

export interface Quotas {
  runningJobs: number | null;
  queuedJobs: number | null;
  monthlyBytes: number | null;
}

export interface Usage {
  /** Jobs started and not ended (resolving, downloading, uploading, …). */
  runningJobs: number;
  /** Jobs waiting to start. */
  queuedJobs: number;
  /** Selected bytes of the jobs created this month (UTC). */
  monthlyBytes: number;
}

export function quotasOf(config: Config): Quotas {
  return {
    runningJobs: config.QUOTA_RUNNING_JOBS,
    queuedJobs: config.QUOTA_QUEUED_JOBS,
    monthlyBytes: config.QUOTA_MONTHLY_BYTES,
  };
}

/** The calendar month (UTC) `now` is in: its first instant, and the next month's. */
export function monthOf(now: Date): { start: Date; resetsAt: Date } {
  const y = now.getUTCFullYear();
  const m = now.getUTCMonth();
  return { start: new Date(Date.UTC(y, m, 1)), resetsAt: new Date(Date.UTC(y, m + 1, 1)) };
}

/** One query over the user's jobs (jobs_user_state_idx / jobs_user_created_idx); the columns are the operator's too. */
export async function usageOf(db: Db, userId: string, now: Date): Promise<Usage> {
  const { start } = monthOf(now);
  const [row] = await db.select(usageColumns(start)).from(jobs).where(eq(jobs.userId, userId));
  return {
    runningJobs: row?.runningJobs ?? 0,
    queuedJobs: row?.queuedJobs ?? 0,
    monthlyBytes: row?.monthlyBytes ?? 0,
  };
}

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** Bytes for people: "4.2 GiB", "310 MiB", "12 KiB". */
export function formatBytes(bytes: number): string {
  if (bytes >= GiB) return `${(bytes / GiB).toFixed(1).replace(/\.0$/, "")} GiB`;
  if (bytes >= MiB) return `${Math.round(bytes / MiB)} MiB`;
  if (bytes >= 1024) return `${Math.round(bytes / 1024)} KiB`;
  return `${bytes} bytes`;
}

/** "1 December 2026" */
function formatDay(date: Date): string {
  return date.toLocaleDateString("en-GB", {
    day: "numeric",
    month: "long",
    year: "numeric",
    timeZone: "UTC",
  });
}

/**
 * Refuses a new job of `bytes` selected bytes over a quota; runs in the
 * insert transaction. `setHeader` adds Retry-After to the refusal.
 */
export async function checkNewJob(
  db: Db,
  config: Config,
  userId: string,
  bytes: number,
  now: Date,
  setHeader: (name: string, value: string) => void,
): Promise<void> {
  const quotas = quotasOf(config);
  if (quotas.queuedJobs === null && quotas.monthlyBytes === null) return;
  const usage = await usageOf(db, userId, now);
  refuseOverQueued(quotas, usage);
  refuseOverMonthly(quotas, usage, bytes, now, setHeader);
}

/** A retried job waits to start again: refused like a new one while the queue quota is full. */
export async function checkRetry(db: Db, config: Config, userId: string, now: Date): Promise<void> {
  const quotas = quotasOf(config);
  if (quotas.queuedJobs === null) return;
  refuseOverQueued(quotas, await usageOf(db, userId, now));
}

function refuseOverQueued(quotas: Quotas, usage: Usage): void {
  if (quotas.queuedJobs !== null && usage.queuedJobs >= quotas.queuedJobs) {
    throw new ApiError(
      429,
      "quota_queued_jobs",
      `You have ${usage.queuedJobs} jobs waiting to start, the most allowed (${quotas.queuedJobs}). Add this one when one of them has started or been cancelled.`,
      { quota: "queuedJobs", limit: quotas.queuedJobs, used: usage.queuedJobs, resetsAt: null },
    );
  }
}

function refuseOverMonthly(
  quotas: Quotas,
  usage: Usage,
  bytes: number,
  now: Date,
  setHeader: (name: string, value: string) => void,
): void {
  const limit = quotas.monthlyBytes;
  // Used up, nothing more goes (a magnet, whose size is not known yet, included).
  if (limit !== null && (usage.monthlyBytes + bytes > limit || usage.monthlyBytes >= limit)) {
    const { resetsAt } = monthOf(now);
    const retryAfter = Math.max(1, Math.ceil((resetsAt.getTime() - now.getTime()) / 1000));
    setHeader("Retry-After", String(retryAfter));
    const over =
      usage.monthlyBytes >= limit
        ? `You have used this month's allowance of ${formatBytes(limit)} (${formatBytes(usage.monthlyBytes)} in the jobs you created).`
        : `This job's ${formatBytes(bytes)} would take this month's transfers to ${formatBytes(usage.monthlyBytes + bytes)}, over your allowance of ${formatBytes(limit)} (${formatBytes(usage.monthlyBytes)} used).`;
    throw new ApiError(
      403,
      "quota_monthly_bytes",
      `${over} The allowance renews on ${formatDay(resetsAt)} (00:00 UTC).`,
      {
        quota: "monthlyBytes",
        limit,
        used: usage.monthlyBytes,
        requested: bytes,
        resetsAt: resetsAt.toISOString(),
      },
    );
  }
}
