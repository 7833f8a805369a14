// The reconciler closes the gaps between the job rows (Postgres) and the
// queue (Redis). Runs from the Worker's cron trigger; a job is only looked at
// once it has sat unchanged for `olderThanMs`, so a request still between its
// writes is left alone (and a duplicate message would be harmless).
//
// - A user whose jobs wait their turn while none of theirs is in the queue
//   (a worker or request died between a job's change and letting the next
//   one in) gets the next one let in (admitNext).
// - An admitted queued job whose queue write was never confirmed (`enqueued_at` null,
//   e.g. Redis was unreachable when it was created or retried) is enqueued.
// - A live job the queue has lost (no entry in the stream and no lease: a
//   write Redis did not keep across a restart) is enqueued again.
// - An entry still pending for a job that ended or is gone (its worker died
//   between the two) is acknowledged, so it is not taken over for nothing.
// - Both streams are looked at (a magnet waiting for its file list is in the
//   metadata stream, queue.metadataStream); a job put back goes to the one
//   its state calls for (streamFor).
// - A job its submitter's browser transfers (runner `browser`) is never let
//   in, enqueued or requeued: only the fleet's jobs go into the stream.
// - A job that has waited for its submitter's choice of files longer than the
//   selection timeout is cancelled. Redis says first whether any wait can have
//   run out (the oldest score of the awaiting set); only then is Postgres
//   asked, in one statement on its partial index, and on the daily sweep in
//   case the set missed a job.
//
// Cost (the cron passes `gate`): the rest touches Postgres only when something
// may need it. Edge and workers count every job change in Redis
// (keys.reconcileChanges, INCR before the change or inside the script that
// makes it); one read of that counter and of what the last full pass saw
// (keys.reconcileState) says whether a pass is due: the counter moved, or the
// last pass could not yet see every change (they are looked at once older
// than `olderThanMs`), or it left work undone, or a day passed since the last pass
// (a safety net for a change whose mark could not be written, Redis being
// unreachable). An idle system thus costs one Redis command a minute and no
// Postgres at all.
import {
  isTerminal,
  type JobMessage,
  keys,
  queue,
  streamFor,
  terminalStates,
  workerStates,
} from "@torreclou/contracts";
import { jobs, users } from "@torreclou/db";
import { awaitsMetadata, cancelUnchosen, type Db, traceOf } from "@torreclou/db/jobs";
import type { Redis } from "@upstash/redis/cloudflare";
import { and, asc, eq, inArray, isNotNull, isNull, lt, sql } from "drizzle-orm";
import { admitAndEnqueue, enqueueJob, writeQueueMessage } from "./enqueue.ts";

const LIVE_STATES = [...workerStates];
/** Every stream a job's run entry can be in. */
const STREAMS = [queue.stream, queue.metadataStream];
/** What writing a job's entry needs: its owner, trace context, and which stream (streamFor). */
const entryFields = {
  id: jobs.id,
  userId: jobs.userId,
  traceparent: jobs.traceParent,
  tracestate: jobs.traceState,
  awaitsMetadata,
};

/** The default wait for a choice of files (SELECTION_TIMEOUT_SECONDS). */
export const DEFAULT_SELECTION_TIMEOUT_MS = 86_400_000;

/** "24 h", "90 min", "45 s": how long a person was given. */
export function formatWait(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s % 3600 === 0) return `${s / 3600} h`;
  if (s % 60 === 0) return `${s / 60} min`;
  return `${s} s`;
}

/** The reason a job whose files were never chosen is cancelled with. */
export function unchosenReason(timeoutMs: number): string {
  return `No files were chosen within ${formatWait(timeoutMs)}; the job was cancelled.`;
}

export interface ReconcileOptions {
  /** Only jobs unconfirmed for at least this long (default 60 s). */
  olderThanMs?: number;
  /** Most jobs handled per run (default 200). */
  limit?: number;
  now?: Date;
  /** How long a job may wait for its submitter's choice of files (default 24 h). */
  selectionTimeoutMs?: number;
  /**
   * Skip the Postgres pass while nothing changed since a pass that saw
   * everything (the cron's setting; off by default, so a direct call always
   * looks).
   */
  gate?: boolean;
  /** With `gate`: a full pass at least this often anyway (default 24 h). */
  sweepMs?: number;
  /** The gate's counter and state keys (tests give their own). */
  gateKeys?: { changes: string; state: string };
}

/** What the last full pass saw (keys.reconcileState). */
interface GateState {
  /** The change counter when it began. */
  seen: number;
  /** Since when the counter has stood at `seen` (ms): changes older than that were all counted. */
  at: number;
  /** It saw every change counted until then and found nothing to do. */
  quiet: boolean;
  /** When the last pass that ran regardless of the counter began (ms). */
  sweptAt: number;
}

/** The default of `sweepMs`. */
export const DEFAULT_SWEEP_MS = 86_400_000;

export interface ReconcileResult {
  enqueued: string[];
  failed: string[];
  /** Jobs let in for users whose turn had stalled. */
  admitted: string[];
  /** Live jobs the queue had lost, enqueued again. */
  requeued: string[];
  /** Jobs that ended whose pending entries were acknowledged. */
  acknowledged: string[];
  /** Jobs cancelled because no files were chosen in time. */
  unchosen: string[];
  /** True when the gate found nothing that could need a pass: Postgres was not touched (but for due waits). */
  skipped?: boolean;
}

export async function reconcile(
  db: Db,
  redis: Redis,
  options: ReconcileOptions = {},
): Promise<ReconcileResult> {
  const cutoff = new Date((options.now ?? new Date()).getTime() - (options.olderThanMs ?? 60_000));
  const result: ReconcileResult = {
    enqueued: [],
    failed: [],
    admitted: [],
    requeued: [],
    acknowledged: [],
    unchosen: [],
  };
  const now = (options.now ?? new Date()).getTime();
  const olderThanMs = options.olderThanMs ?? 60_000;
  const gateKeys = options.gateKeys ?? { changes: keys.reconcileChanges, state: keys.reconcileState };
  let gate: { changes: number; state: GateState | undefined; sweep: boolean } | undefined;
  if (options.gate) {
    const [changesRaw, stateRaw] = await redis.mget<[unknown, unknown]>(gateKeys.changes, gateKeys.state);
    const changes = Number(changesRaw ?? 0);
    const state = readGateState(stateRaw);
    const sweep = !state || now - state.sweptAt >= (options.sweepMs ?? DEFAULT_SWEEP_MS);
    gate = { changes, state, sweep };
  }
  // First: a wait that ran out ends, and may free its user's turn. The daily
  // sweep asks Postgres even when the awaiting set names none (its write may
  // have failed), so no wait outlives the timeout by more than a day.
  await cancelUnchosenJobs(
    db,
    redis,
    options.now ?? new Date(),
    options.selectionTimeoutMs ?? DEFAULT_SELECTION_TIMEOUT_MS,
    result,
    gate?.sweep ?? false,
  );
  if (gate?.state && !gate.sweep && gate.state.quiet && gate.state.seen === gate.changes)
    return { ...result, skipped: true };
  await admitStalled(db, redis, cutoff, options.limit ?? 200, result);
  // jobs_unenqueued_idx (partial, enqueued_at IS NULL) keeps this scan small.
  const pending = await db
    .select(entryFields)
    .from(jobs)
    .where(
      and(
        isNull(jobs.enqueuedAt),
        isNotNull(jobs.admittedAt),
        eq(jobs.state, "queued"),
        eq(jobs.runner, "fleet"),
        lt(jobs.updatedAt, cutoff),
      ),
    )
    .orderBy(asc(jobs.createdAt))
    .limit(options.limit ?? 200);
  for (const job of pending) {
    // The entry carries the creating request's trace context (tracing on), as on any turn.
    const { enqueued } = await enqueueJob(db, redis, job.id, job.userId, traceOf(job), streamFor(job));
    (enqueued ? result.enqueued : result.failed).push(job.id);
  }
  await requeueLost(db, redis, cutoff, options.limit ?? 200, result);
  await settleEnded(db, redis, cutoff, result);
  if (gate) {
    const { changes, state, sweep } = gate;
    // Quiet: no change since the last pass began, that was long enough ago for this pass to
    // have looked at every change, and this pass left nothing undone (a failed write, or a
    // batch cut at its limit). What it did itself (letting a job in) counts as a change.
    const worked = result.failed.length > 0 || pending.length >= (options.limit ?? 200);
    const quiet = state !== undefined && state.seen === changes && now - state.at >= olderThanMs && !worked;
    const next: GateState = {
      seen: changes,
      // Since when the counter stands still (a change starts the wait over).
      at: state !== undefined && state.seen === changes ? state.at : now,
      quiet,
      sweptAt: sweep ? now : (state?.sweptAt ?? now),
    };
    await redis.set(gateKeys.state, JSON.stringify(next)).catch(() => undefined);
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

function readGateState(raw: unknown): GateState | undefined {
  try {
    const value = (typeof raw === "string" ? JSON.parse(raw) : raw) as Partial<GateState> | null;
    if (
      value &&
      typeof value.seen === "number" &&
      typeof value.at === "number" &&
      typeof value.quiet === "boolean" &&
      typeof value.sweptAt === "number"
    )
      return value as GateState;
  } catch {
    // unreadable: a full pass writes it again
  }
  return undefined;
}

/**
 * Users whose turn stalled: jobs waiting their turn since before the cutoff,
 * none in the queue unclaimed, and fewer live jobs let in than their running
 * limit. Only those are looked at, so users who are simply waiting behind
 * their own running jobs cost nothing here.
 */
async function admitStalled(db: Db, redis: Redis, cutoff: Date, limit: number, result: ReconcileResult) {
  const terminal = sql.join(
    terminalStates.map((state) => sql`${state}`),
    sql`, `,
  );
  const held = await db
    .selectDistinct({ userId: jobs.userId })
    .from(jobs)
    .innerJoin(users, eq(users.id, jobs.userId))
    .where(
      and(
        isNull(jobs.admittedAt),
        eq(jobs.state, "queued"),
        eq(jobs.runner, "fleet"),
        lt(jobs.updatedAt, cutoff),
        sql`not exists (select 1 from ${jobs} as w where w.user_id = ${jobs.userId} and w.admitted_at is not null and w.claimed_at is null and w.state not in (${terminal}))`,
        sql`(${users.runningLimit} is null or (select count(*) from ${jobs} as l where l.user_id = ${jobs.userId} and l.admitted_at is not null and l.state not in (${terminal})) < ${users.runningLimit})`,
      ),
    )
    .orderBy(jobs.userId)
    .limit(limit);
  for (const { userId } of held) {
    const id = await admitAndEnqueue(db, redis, userId);
    if (id) result.admitted.push(id);
  }
}

function jobOf(fields: Record<string, unknown> | undefined): JobMessage | undefined {
  const raw = fields?.job;
  try {
    const parsed = (typeof raw === "string" ? JSON.parse(raw) : raw) as JobMessage | undefined;
    return parsed?.jobId ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** Job ids with a run entry in either stream (delivered or not). The streams hold only unsettled entries. */
async function jobsInStream(redis: Redis): Promise<Set<string>> {
  const ids = new Set<string>();
  for (const stream of STREAMS) await collectJobs(redis, stream, ids);
  return ids;
}

async function collectJobs(redis: Redis, stream: string, ids: Set<string>): Promise<void> {
  let start = "-";
  for (let page = 0; page < 100; page++) {
    const entries = (await redis.xrange(stream, start, "+", 500)) as Record<string, Record<string, unknown>>;
    const entryIds = Object.keys(entries);
    for (const id of entryIds) {
      const message = jobOf(entries[id]);
      if (message && !message.cleanup) ids.add(message.jobId);
    }
    if (entryIds.length < 500) break;
    start = `(${entryIds.at(-1)}`;
  }
}

async function requeueLost(db: Db, redis: Redis, cutoff: Date, limit: number, result: ReconcileResult) {
  const live = await db
    .select(entryFields)
    .from(jobs)
    .where(
      and(
        inArray(jobs.state, LIVE_STATES),
        eq(jobs.runner, "fleet"),
        isNotNull(jobs.enqueuedAt),
        lt(jobs.updatedAt, cutoff),
      ),
    )
    .orderBy(asc(jobs.updatedAt))
    .limit(limit);
  if (live.length === 0) return;
  const inStream = await jobsInStream(redis);
  const lost = live.filter((job) => !inStream.has(job.id));
  if (lost.length === 0) return;
  const leases = await redis.mget<(string | null)[]>(...lost.map((job) => keys.lease(job.id)));
  for (const [i, job] of lost.entries()) {
    if (leases[i] !== null) continue; // a worker holds it
    try {
      await writeQueueMessage(redis, job.id, job.userId, traceOf(job), streamFor(job));
      result.requeued.push(job.id);
    } catch {
      result.failed.push(job.id);
    }
  }
  if (result.requeued.length > 0)
    console.log(
      JSON.stringify({
        level: "warn",
        msg: "re-enqueued jobs the queue had lost",
        jobs: result.requeued.length,
      }),
    );
}

async function settleEnded(db: Db, redis: Redis, cutoff: Date, result: ReconcileResult) {
  for (const stream of STREAMS) await settleEndedIn(db, redis, stream, cutoff, result);
}

async function settleEndedIn(db: Db, redis: Redis, stream: string, cutoff: Date, result: ReconcileResult) {
  const pending = (await redis.xpending(stream, queue.group, "-", "+", 500).catch(() => [])) as [
    string,
    string,
    number,
    number,
  ][];
  if (pending.length === 0) return;
  const byJob = new Map<string, string[]>();
  for (const [entryId] of pending) {
    const entries = (await redis.xrange(stream, entryId, entryId, 1)) as Record<
      string,
      Record<string, unknown>
    >;
    const message = jobOf(entries[entryId]);
    if (!message || message.cleanup) continue;
    byJob.set(message.jobId, [...(byJob.get(message.jobId) ?? []), entryId]);
  }
  if (byJob.size === 0) return;
  const rows = await db
    .select({ id: jobs.id, state: jobs.state, updatedAt: jobs.updatedAt })
    .from(jobs)
    .where(inArray(jobs.id, [...byJob.keys()]));
  const known = new Map(rows.map((row) => [row.id, row]));
  for (const [jobId, entryIds] of byJob) {
    const row = known.get(jobId);
    if (row && (!isTerminal(row.state) || row.updatedAt >= cutoff)) continue;
    if ((await redis.get(keys.lease(jobId))) !== null) continue;
    await redis.multi().xack(stream, queue.group, entryIds).xdel(stream, entryIds).exec();
    result.acknowledged.push(jobId);
  }
}

/**
 * Cancels jobs that waited for a choice of files longer than `timeoutMs`.
 * One Redis read when none can be due; Postgres only when one may be, or on
 * the daily `sweep`.
 */
async function cancelUnchosenJobs(
  db: Db,
  redis: Redis,
  now: Date,
  timeoutMs: number,
  result: ReconcileResult,
  sweep: boolean,
): Promise<void> {
  const cutoff = now.getTime() - timeoutMs;
  const due = await redis.zrange<string[]>(keys.awaitingSelection, "-inf", cutoff, {
    byScore: true,
    offset: 0,
    count: 1,
  });
  if (due.length === 0 && !sweep) return;
  const cancelled = await cancelUnchosen(db, new Date(cutoff), unchosenReason(timeoutMs));
  result.unchosen.push(...cancelled.map((job) => job.id));
  // Entries up to the cutoff are settled: cancelled now, or chosen (or cancelled) before.
  if (cancelled.length < 200) await redis.zremrangebyscore(keys.awaitingSelection, "-inf", cutoff);
  if (cancelled.length > 0)
    console.log(
      JSON.stringify({
        level: "info",
        msg: "cancelled jobs whose files were not chosen",
        jobs: cancelled.length,
      }),
    );
}
