// The reconciler: re-enqueues queued jobs whose queue write was never
// confirmed (`enqueued_at` null), e.g. because Redis was unreachable when the
// job was created or retried. Runs from the Worker's cron trigger; a job is
// only picked up once it has sat unconfirmed for `olderThanMs`, so a request
// still between its two writes is left alone (and a duplicate would be harmless).
import { jobs } from "@torreclou/db";
import type { Db } from "@torreclou/db/jobs";
import type { Redis } from "@upstash/redis/cloudflare";
import { and, asc, eq, isNull, lt } from "drizzle-orm";
import { enqueueJob } from "./enqueue.ts";

export interface ReconcileOptions {
  /** Only jobs unconfirmed for at least this long (default 60 s). */
  olderThanMs?: number;
  /** Most jobs handled per run (default 200). */
  limit?: number;
  now?: Date;
}

export interface ReconcileResult {
  enqueued: string[];
  failed: string[];
}

export async function reconcile(
  db: Db,
  redis: Redis,
  options: ReconcileOptions = {},
): Promise<ReconcileResult> {
  const cutoff = new Date((options.now ?? new Date()).getTime() - (options.olderThanMs ?? 60_000));
  // jobs_unenqueued_idx (partial, enqueued_at IS NULL) keeps this scan small.
  const pending = await db
    .select({ id: jobs.id, userId: jobs.userId })
    .from(jobs)
    .where(and(isNull(jobs.enqueuedAt), eq(jobs.state, "queued"), lt(jobs.updatedAt, cutoff)))
    .orderBy(asc(jobs.createdAt))
    .limit(options.limit ?? 200);
  const result: ReconcileResult = { enqueued: [], failed: [] };
  for (const job of pending) {
    const { enqueued } = await enqueueJob(db, redis, job.id, job.userId);
    (enqueued ? result.enqueued : result.failed).push(job.id);
  }
  if (pending.length > 0) {
    console.log(
      JSON.stringify({
        level: result.failed.length > 0 ? "warn" : "info",
        msg: "reconciled unenqueued jobs",
        enqueued: result.enqueued.length,
        failed: result.failed.length,
      }),
    );
  }
  return result;
}
