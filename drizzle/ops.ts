// What the operator looks at, read the same way by the edge (the operator's
// page) and the workers (Prometheus gauges): the queue in Postgres, jobs stuck
// in one state, jobs that used up their attempts, and each user's usage.
import { exhaustedReasonPattern, terminalStates } from "@torreclou/contracts";
import { and, desc, eq, like, sql } from "drizzle-orm";
import type { Db } from "./jobs.ts";
import { jobs, jobTransitions, users } from "./schema.ts";

/** States a worker holds a job in: "without an update" here for long means the job is stuck. */
export const runningStates = ["resolving", "downloading", "uploading"] as const;

export interface StuckThresholds {
  /** A running job whose row has not changed for this long (progress counters change it). */
  runningMs: number;
  /** A queued job waiting this long since it was last queued. */
  queuedMs: number;
}

/** When the job last became queued (its latest transition to `queued`). */
const queuedSince = sql<string>`(select max(${jobTransitions.at}) from ${jobTransitions} where ${jobTransitions.jobId} = ${jobs.id} and ${jobTransitions.toState} = 'queued')`;

export interface QueueSummary {
  /** Jobs in state queued: waiting their turn in Postgres, or in the stream unclaimed. */
  queued: number;
  /** Of those, let into the shared queue (a stream entry exists or is being written). */
  admitted: number;
  /** The oldest queued job, by when it was last queued. */
  oldest: { id: string; userId: string; queuedAt: string; ageSeconds: number } | null;
}

export async function queueSummary(db: Db, now: Date): Promise<QueueSummary> {
  const [counts] = await db
    .select({
      queued: sql<number>`count(*)::int`,
      admitted: sql<number>`(count(*) filter (where ${jobs.admittedAt} is not null))::int`,
    })
    .from(jobs)
    .where(eq(jobs.state, "queued"));
  const [oldest] = await db
    .select({
      id: jobs.id,
      userId: jobs.userId,
      queuedAt: sql<string>`to_char(coalesce(${queuedSince}, ${jobs.createdAt}) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`,
    })
    .from(jobs)
    .where(eq(jobs.state, "queued"))
    .orderBy(sql`coalesce(${queuedSince}, ${jobs.createdAt})`)
    .limit(1);
  return {
    queued: counts?.queued ?? 0,
    admitted: counts?.admitted ?? 0,
    oldest: oldest
      ? { ...oldest, ageSeconds: Math.max(0, (now.getTime() - Date.parse(oldest.queuedAt)) / 1000) }
      : null,
  };
}

export interface StuckJob {
  id: string;
  userId: string;
  email: string;
  name: string | null;
  state: string;
  attempt: number;
  /** When the row last changed (running), or when the job was last queued (queued). */
  since: string;
  ageSeconds: number;
}

const iso = (column: unknown) =>
  sql<string>`to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/** Jobs stuck in one state past the thresholds, the longest stuck first (at most `limit`). */
export async function stuckJobs(
  db: Db,
  now: Date,
  thresholds: StuckThresholds,
  limit = 100,
): Promise<StuckJob[]> {
  const runningBefore = new Date(now.getTime() - thresholds.runningMs).toISOString();
  const queuedBefore = new Date(now.getTime() - thresholds.queuedMs).toISOString();
  const since = sql`case when ${jobs.state} = 'queued' then coalesce(${queuedSince}, ${jobs.createdAt}) else ${jobs.updatedAt} end`;
  const rows = await db
    .select({
      id: jobs.id,
      userId: jobs.userId,
      email: users.email,
      name: jobs.name,
      state: jobs.state,
      attempt: jobs.attempt,
      since: iso(since),
    })
    .from(jobs)
    .innerJoin(users, eq(users.id, jobs.userId))
    .where(
      sql`(${jobs.state} in ('resolving', 'downloading', 'uploading') and ${jobs.updatedAt} < ${runningBefore}::timestamptz)
        or (${jobs.state} = 'queued' and coalesce(${queuedSince}, ${jobs.createdAt}) < ${queuedBefore}::timestamptz)`,
    )
    .orderBy(since)
    .limit(limit);
  return rows.map((row) => ({
    ...row,
    ageSeconds: Math.max(0, (now.getTime() - Date.parse(row.since)) / 1000),
  }));
}

export interface ExhaustedJob {
  id: string;
  userId: string;
  email: string;
  name: string | null;
  attempt: number;
  reason: string;
  failedAt: string;
}

const exhausted = and(eq(jobs.state, "failed"), like(jobs.failureReason, exhaustedReasonPattern));

/** Failed jobs that used up their attempts (the worker's MAX_ATTEMPTS), newest first. */
export async function exhaustedJobs(db: Db, limit = 100): Promise<ExhaustedJob[]> {
  const rows = await db
    .select({
      id: jobs.id,
      userId: jobs.userId,
      email: users.email,
      name: jobs.name,
      attempt: jobs.attempt,
      reason: sql<string>`${jobs.failureReason}`,
      failedAt: iso(sql`coalesce(${jobs.finishedAt}, ${jobs.updatedAt})`),
    })
    .from(jobs)
    .innerJoin(users, eq(users.id, jobs.userId))
    .where(exhausted)
    .orderBy(desc(sql`coalesce(${jobs.finishedAt}, ${jobs.updatedAt})`))
    .limit(limit);
  return rows;
}

/** Whether a job is one that used up its attempts (for the operator's retry). */
export async function isExhausted(db: Db, jobId: string): Promise<{ userId: string } | undefined> {
  const [row] = await db
    .select({ userId: jobs.userId })
    .from(jobs)
    .where(and(eq(jobs.id, jobId), exhausted));
  return row;
}

const terminal = sql.join(
  terminalStates.map((state) => sql`${state}`),
  sql`, `,
);

/**
 * What GET /api/usage counts for one user, as columns over their jobs:
 * running (started, not ended; not waiting for a choice of files), queued,
 * and the selected bytes of the jobs created since `monthStart`.
 */
export function usageColumns(monthStart: Date) {
  return {
    runningJobs: sql<number>`(count(*) filter (where ${jobs.state} not in ('queued', 'awaiting_selection') and ${jobs.state} not in (${terminal})))::int`,
    queuedJobs: sql<number>`(count(*) filter (where ${jobs.state} = 'queued'))::int`,
    monthlyBytes: sql<number>`coalesce(sum(${jobs.bytesTotal}) filter (where ${jobs.createdAt} >= ${monthStart.toISOString()}::timestamptz), 0)::float8`,
  };
}

export interface UserUsage {
  userId: string;
  email: string;
  runningJobs: number;
  queuedJobs: number;
  monthlyBytes: number;
}

/**
 * The usage of every user with a job running or queued or bytes this month,
 * the busiest first (at most `limit`).
 */
export async function usageByUser(db: Db, monthStart: Date, limit = 200): Promise<UserUsage[]> {
  const columns = usageColumns(monthStart);
  const rows = await db
    .select({ userId: jobs.userId, email: users.email, ...columns })
    .from(jobs)
    .innerJoin(users, eq(users.id, jobs.userId))
    .where(
      sql`${jobs.state} not in (${terminal}) or ${jobs.createdAt} >= ${monthStart.toISOString()}::timestamptz`,
    )
    .groupBy(jobs.userId, users.email)
    .orderBy(desc(columns.runningJobs), desc(columns.queuedJobs), desc(columns.monthlyBytes), users.email)
    .limit(limit);
  return rows;
}

export interface FleetCounts {
  queued: number;
  oldestQueuedAgeSeconds: number;
  /** Stuck jobs by state (every running state and queued, zero included). */
  stuck: Record<string, number>;
  exhausted: number;
}

/** The numbers the workers' gauges show: one pass over the queue, stuck and exhausted jobs. */
export async function fleetCounts(db: Db, now: Date, thresholds: StuckThresholds): Promise<FleetCounts> {
  const queue = await queueSummary(db, now);
  const stuck: Record<string, number> = Object.fromEntries(
    [...runningStates, "queued"].map((state) => [state, 0]),
  );
  for (const job of await stuckJobs(db, now, thresholds, 10_000))
    stuck[job.state] = (stuck[job.state] ?? 0) + 1;
  const [row] = await db.select({ n: sql<number>`count(*)::int` }).from(jobs).where(exhausted);
  return {
    queued: queue.queued,
    oldestQueuedAgeSeconds: queue.oldest?.ageSeconds ?? 0,
    stuck,
    exhausted: row?.n ?? 0,
  };
}
