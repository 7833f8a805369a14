// Job writes that both the edge and the workers make, so the lifecycle rules
// live in one place: creating a job with its files, and moving it from one
// state to another (checked against the contracts' transition table, fenced by
// the attempt number, and recorded in job_transitions).
import {
  assertTransition,
  defaultFolder,
  encryptJobSource,
  type JobRunner,
  type JobSource,
  type JobState,
  jobStates,
  type Keyring,
  type SeedSettings,
  sourceColumnsOf,
  type TraceContext,
  type TransitionCause,
  terminalStates,
  type WebhookPayload,
  webhookEventOf,
  workerStates,
} from "@torreclou/contracts";
import { and, asc, eq, inArray, isNotNull, isNull, sql } from "drizzle-orm";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import {
  type Job,
  type JobFile,
  jobFiles,
  jobs,
  jobTransitions,
  torrents,
  users,
  webhookDeliveries,
  webhookEndpoints,
} from "./schema.ts";

/** Any drizzle Postgres database: node-postgres in workers, Neon in the edge. */
export type Db = PgDatabase<PgQueryResultHKT, Record<string, unknown>>;

/**
 * What a torrent's info dictionary says: the same for everyone who submits it,
 * so it may go on the shared torrents row. Known at once from a .torrent; a
 * magnet's come later from the worker that resolves it.
 */
export interface TorrentFacts {
  infoHashV2?: string | undefined;
  name: string;
  totalSize: number;
  pieceLength: number;
  pieceCount: number;
}

export interface TorrentInput {
  infoHash: string;
  /** From the .torrent's info dictionary; undefined for a magnet. */
  facts?: TorrentFacts | undefined;
  /** Null for a magnet whose metadata a worker has yet to fetch. */
  files: { index: number; path: string; size: number }[] | null;
}

export interface NewJobInput {
  userId: string;
  /** What the submitter calls it: a magnet's dn or the .torrent's name (undefined: none yet). */
  name?: string | undefined;
  /** What the submitter handed in; stored encrypted, bound to the new job's id. */
  source: JobSource;
  torrent: TorrentInput;
  /** Indexes of the files to fetch; undefined means all of them. */
  selected?: number[] | undefined;
  storageProfileId: string;
  targetFolder?: string | undefined;
  /**
   * Runs first in the job's transaction, with the user's row locked, so
   * checks of the user's other jobs (quotas) cannot race another request of
   * the same user; whatever it throws rolls everything back.
   */
  guard?: ((tx: Db) => Promise<void>) | undefined;
  /** A magnet job that waits for its submitter to pick files once the metadata is known. */
  chooseFiles?: boolean | undefined;
  /** The creating request's trace context (tracing on), for the job's queue entry whenever it is written. */
  trace?: TraceContext | undefined;
  /** Who moves its bytes (default the fleet); a browser job is never let into the jobs stream. */
  runner?: JobRunner | undefined;
  /** Seeding back once stored, already bounded by the operator's limits; null or absent: none. */
  seed?: SeedSettings | null | undefined;
}

/**
 * Creates a queued job, its files and its first transition in one
 * transaction. The caller then writes the queue message and calls
 * `markEnqueued`; a job left with `enqueued_at` null is re-enqueued by the
 * reconciler, so a failed queue write loses nothing.
 *
 * The job's name, source and files are its own. The shared torrents row only
 * gains info-dictionary facts, and nothing from it flows back into the job, so
 * creating a job looks the same whether or not anyone else submitted the hash.
 */
export async function insertJob(
  db: Db,
  keyring: Keyring,
  input: NewJobInput,
): Promise<{ job: Job; files: JobFile[] }> {
  const t = input.torrent;
  // The id first: the encrypted source is bound to it.
  const jobId = crypto.randomUUID();
  const sealed = await encryptJobSource(keyring, input.source, jobId);
  return db.transaction(async (tx) => {
    if (input.guard) {
      await tx.select({ id: users.id }).from(users).where(eq(users.id, input.userId)).for("update");
      await input.guard(tx);
    }
    const [torrent] = await tx
      .insert(torrents)
      .values({
        infoHash: t.infoHash,
        infoHashV2: t.facts?.infoHashV2,
        name: t.facts?.name,
        totalSize: t.facts?.totalSize,
        pieceLength: t.facts?.pieceLength,
        pieceCount: t.facts?.pieceCount,
        fileCount: t.facts ? t.files?.length : undefined,
      })
      .onConflictDoUpdate({
        target: torrents.infoHash,
        // Keep what we knew; fill in what a .torrent adds to a hash first seen in a magnet.
        set: {
          infoHashV2: sql`coalesce(${torrents.infoHashV2}, excluded.info_hash_v2)`,
          name: sql`coalesce(${torrents.name}, excluded.name)`,
          totalSize: sql`coalesce(${torrents.totalSize}, excluded.total_size)`,
          pieceLength: sql`coalesce(${torrents.pieceLength}, excluded.piece_length)`,
          pieceCount: sql`coalesce(${torrents.pieceCount}, excluded.piece_count)`,
          fileCount: sql`coalesce(${torrents.fileCount}, excluded.file_count)`,
        },
      })
      .returning({ id: torrents.id });
    const selected = input.selected ? new Set(input.selected) : undefined;
    const chosen = t.files?.filter((f) => !selected || selected.has(f.index)) ?? [];
    const [job] = await tx
      .insert(jobs)
      .values({
        id: jobId,
        userId: input.userId,
        torrentId: torrent!.id,
        storageProfileId: input.storageProfileId,
        targetFolder: input.targetFolder,
        chooseFiles: input.chooseFiles ?? false,
        runner: input.runner ?? "fleet",
        seedRatio: input.seed?.ratio ?? null,
        seedMinutes: input.seed?.minutes ?? null,
        name: input.name,
        traceParent: input.trace?.traceparent,
        traceState: input.trace?.tracestate,
        ...sourceColumnsOf(sealed),
        bytesTotal: chosen.reduce((sum, f) => sum + f.size, 0),
      })
      .returning();
    const files =
      t.files && t.files.length > 0
        ? await tx
            .insert(jobFiles)
            .values(
              t.files.map((f) => ({
                jobId: job!.id,
                fileIndex: f.index,
                path: f.path,
                size: f.size,
                selected: !selected || selected.has(f.index),
                state: !selected || selected.has(f.index) ? ("pending" as const) : ("skipped" as const),
              })),
            )
            .returning()
        : [];
    await tx
      .insert(jobTransitions)
      .values({ jobId: job!.id, toState: "queued", cause: "user", attempt: job!.attempt });
    return { job: job!, files };
  });
}

/** Records that the queue message for this job is written (a job on the queue has had its turn). */
export async function markEnqueued(db: Db, jobId: string): Promise<void> {
  await db
    .update(jobs)
    .set({ enqueuedAt: new Date(), admittedAt: sql`coalesce(${jobs.admittedAt}, now())` })
    .where(eq(jobs.id, jobId));
}

/** Not terminal: the job may still run (queued, or held by a worker). */
// A job waiting for its submitter's choice of files holds no worker: not live here.
export const liveJob = sql`${jobs.state} NOT IN (${sql.join(
  [...terminalStates, "awaiting_selection"].map((state) => sql`${state}`),
  sql`, `,
)})`;

/**
 * A magnet job whose user picks its files, with its metadata still unknown:
 * its next run only fetches the file list (queue.metadataStream), holding no
 * download slot. Known once a worker or the submitter's browser recorded the
 * info dictionary (recordMetadata) and the job's files.
 */
export const awaitsMetadata = sql<boolean>`(${jobs.chooseFiles} and ${jobs.infoDictionary} is null and not exists (select 1 from ${jobFiles} where ${jobFiles.jobId} = ${jobs.id}))`;

export interface AdmitOptions {
  /**
   * The user's running limit (null: none), recorded on the user's row so
   * workers admitting later apply it too. Undefined: the recorded one.
   */
  runningLimit?: number | null | undefined;
}

/**
 * Fair turns. A user's jobs enter the shared queue one at a time: the next
 * one (oldest first) is let in only while none of the user's jobs waits in
 * the queue unclaimed, and fewer than the running limit are live there. So
 * the stream never holds more than one unclaimed job per user, and a user
 * with 500 queued jobs is at most one entry ahead of anyone else's first.
 * Called whenever that may have changed: a job created, claimed by a worker,
 * ended, cancelled or retried (and by the reconciler, after a crash between
 * such a change and this call). The user's row is locked, so two callers can
 * never both let a job in. Returns the admitted job (at most one), whose
 * queue message the caller then writes; a message never written is the
 * reconciler's (`enqueued_at` null on an admitted job).
 */
export async function admitNext(
  db: Db,
  userId: string,
  options: AdmitOptions = {},
): Promise<({ id: string; awaitsMetadata: boolean } & TraceContext) | undefined> {
  return db.transaction(async (tx) => {
    const [user] =
      options.runningLimit === undefined
        ? await tx
            .select({ runningLimit: users.runningLimit })
            .from(users)
            .where(eq(users.id, userId))
            .for("update")
        : await tx
            .update(users)
            .set({ runningLimit: options.runningLimit })
            .where(eq(users.id, userId))
            .returning({ runningLimit: users.runningLimit });
    if (!user) return undefined;
    const [counts] = await tx
      .select({
        live: sql<number>`count(*)::int`,
        waiting: sql<number>`(count(*) filter (where ${jobs.claimedAt} is null))::int`,
      })
      .from(jobs)
      .where(and(eq(jobs.userId, userId), isNotNull(jobs.admittedAt), liveJob));
    if ((counts?.waiting ?? 0) > 0) return undefined;
    if (user.runningLimit !== null && (counts?.live ?? 0) >= user.runningLimit) return undefined;
    // Only the fleet's: a job its submitter's browser transfers never goes into the stream.
    const [next] = await tx
      .select({ id: jobs.id })
      .from(jobs)
      .where(
        and(
          eq(jobs.userId, userId),
          isNull(jobs.admittedAt),
          eq(jobs.state, "queued"),
          eq(jobs.runner, "fleet"),
        ),
      )
      .orderBy(asc(jobs.createdAt), asc(jobs.id))
      .limit(1);
    if (!next) return undefined;
    // Still waiting (a cancel may have ended it since the select): else nobody goes in now,
    // and the cancel's own call lets the next one in.
    const [admitted] = await tx
      .update(jobs)
      .set({ admittedAt: new Date(), enqueuedAt: null })
      .where(
        and(
          eq(jobs.id, next.id),
          isNull(jobs.admittedAt),
          eq(jobs.state, "queued"),
          eq(jobs.runner, "fleet"),
        ),
      )
      .returning({
        id: jobs.id,
        traceparent: jobs.traceParent,
        tracestate: jobs.traceState,
        awaitsMetadata,
      });
    return admitted && { id: admitted.id, awaitsMetadata: admitted.awaitsMetadata, ...traceOf(admitted) };
  });
}

/** The stored trace context as entry fields (absent ones left out). */
export function traceOf(row: { traceparent: string | null; tracestate: string | null }): TraceContext {
  return {
    ...(row.traceparent ? { traceparent: row.traceparent } : {}),
    ...(row.tracestate ? { tracestate: row.tracestate } : {}),
  };
}

export class StaleAttemptError extends Error {
  constructor(jobId: string, attempt: number) {
    super(`job ${jobId} has moved past attempt ${attempt}; this worker no longer owns it`);
    this.name = "StaleAttemptError";
  }
}

export interface TransitionInput {
  jobId: string;
  to: JobState;
  cause: TransitionCause;
  reason?: string | undefined;
  /** Fencing: only move the job while it is still at this attempt (workers always pass it). */
  attempt?: number | undefined;
  /** Only from these states (default: every state the table allows to reach `to`). */
  from?: readonly JobState[] | undefined;
  /** Extra columns to set in the same statement, e.g. byte counters. */
  set?:
    | Partial<
        Pick<
          Job,
          | "bytesTotal"
          | "bytesDownloaded"
          | "bytesUploaded"
          | "admittedAt"
          | "claimedAt"
          | "enqueuedAt"
          | "runner"
        >
      >
    | undefined;
  /** Scope to an owner (edge requests act only on the caller's jobs). */
  userId?: string | undefined;
  /**
   * Also bump the attempt (a retry): an attempt still winding down — say, one
   * a cancel is stopping — finds itself stale and can change nothing of the
   * retried job, and a cancel flag naming its attempt does not stop the next.
   */
  newAttempt?: boolean | undefined;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is what Postgres text refuses
const NUL = /\u0000/g;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * Text Postgres can store, whatever a message quotes: NUL (which a text
 * column refuses) and halves of surrogate pairs (not UTF-8) become U+FFFD.
 * Failure reasons and file errors pass through it, so recording why a job
 * failed cannot fail too.
 */
export function storableText(text: string): string {
  return text.replace(NUL, "\uFFFD").replace(LONE_SURROGATE, "\uFFFD");
}

/**
 * Moves a job to `to` if the transition table allows it from its current
 * state, and records the move. Returns the updated job, or undefined when the
 * job is missing, not in an allowed state, or (with `attempt`) owned by a
 * newer attempt. Atomic: the check and the write are one UPDATE.
 */
/** A job as a move left it, with the number of webhook deliveries the move queued (to wake a sender for). */
export type TransitionedJob = Job & { webhookDeliveries: number };

export async function transitionJob(db: Db, input: TransitionInput): Promise<TransitionedJob | undefined> {
  const allowedFrom = (input.from ?? jobStates).filter((state) => {
    try {
      assertTransition(state, input.to);
      return true;
    } catch {
      return false;
    }
  });
  if (allowedFrom.length === 0) return undefined;
  const reason = input.reason === undefined ? undefined : storableText(input.reason);
  const now = new Date();
  const terminal = terminalStates.includes(input.to);
  return db.transaction(async (tx) => {
    const [before] = await tx
      .select({ state: jobs.state })
      .from(jobs)
      .where(eq(jobs.id, input.jobId))
      .for("update");
    if (!before) return undefined;
    const [job] = await tx
      .update(jobs)
      .set({
        ...input.set,
        state: input.to,
        attempt: input.newAttempt ? sql`${jobs.attempt} + 1` : undefined,
        failureReason:
          input.to === "failed" ? (reason ?? "failed") : input.to === "queued" ? null : undefined,
        startedAt:
          input.to === "resolving" || input.to === "downloading"
            ? sql`coalesce(${jobs.startedAt}, now())`
            : undefined,
        finishedAt: terminal ? now : input.to === "queued" ? null : undefined,
        // Set only while the job waits for its submitter's choice (the timeout's index reads it).
        selectionSince: input.to === "awaiting_selection" ? now : null,
      })
      .where(
        and(
          eq(jobs.id, input.jobId),
          inArray(jobs.state, allowedFrom),
          input.attempt === undefined ? undefined : eq(jobs.attempt, input.attempt),
          input.userId === undefined ? undefined : eq(jobs.userId, input.userId),
        ),
      )
      .returning();
    if (!job) return undefined;
    await tx.insert(jobTransitions).values({
      jobId: job.id,
      fromState: before.state,
      toState: input.to,
      cause: input.cause,
      attempt: job.attempt,
      reason,
    });
    return { ...job, webhookDeliveries: await recordWebhooks(tx, job, now) };
  });
}

/**
 * The deliveries a move announces, one per endpoint of the job's owner that
 * asked for the event, in the move's own transaction. Returns how many.
 */
async function recordWebhooks(tx: Db, job: Job, at: Date): Promise<number> {
  const event = webhookEventOf(job.state);
  if (!event) return 0;
  const endpoints = await tx
    .select({ id: webhookEndpoints.id })
    .from(webhookEndpoints)
    .where(and(eq(webhookEndpoints.userId, job.userId), sql`${event} = ANY(${webhookEndpoints.events})`));
  if (endpoints.length === 0) return 0;
  const [torrent] = await tx
    .select({ infoHash: torrents.infoHash })
    .from(torrents)
    .where(eq(torrents.id, job.torrentId));
  const payload: WebhookPayload = {
    type: event,
    timestamp: at.toISOString(),
    data: {
      jobId: job.id,
      name: job.name,
      state: job.state,
      infoHash: torrent?.infoHash ?? "",
      failureReason: job.failureReason,
      bytes: { total: job.bytesTotal, downloaded: job.bytesDownloaded, uploaded: job.bytesUploaded },
      attempt: job.attempt,
    },
  };
  await tx
    .insert(webhookDeliveries)
    .values(endpoints.map((endpoint) => ({ endpointId: endpoint.id, jobId: job.id, event, payload })));
  return endpoints.length;
}

/**
 * A worker takes the job: bumps the attempt (the new fencing token) if the job
 * is still live, and returns it. Undefined when the job is terminal or gone.
 */
/**
 * The user's retry of a failed or cancelled job: queued again as a new
 * attempt, so anything still running for the old one is stale. Its counters
 * start afresh from the files' states (the old attempt's unfinished uploads
 * were aborted when it ended). Undefined when the job isn't retryable.
 */
export async function retryTransition(
  db: Db,
  jobId: string,
  userId?: string | undefined,
  by: { cause: TransitionCause; reason: string } = { cause: "user", reason: "retried by the user" },
): Promise<Job | undefined> {
  return transitionJob(db, {
    jobId,
    to: "queued",
    from: ["failed", "cancelled"],
    cause: by.cause,
    reason: by.reason,
    userId,
    newAttempt: true,
    // It waits for its turn again (admitNext), like a new job.
    set: { bytesDownloaded: 0, bytesUploaded: 0, admittedAt: null, claimedAt: null, enqueuedAt: null },
  });
}

export interface SelectionInput {
  jobId: string;
  userId: string;
  /** Indexes of the files to fetch: checked by the caller against the job's files. */
  selected: readonly number[];
  /** Replaces the job's folder when given ("" or undefined keeps it). */
  targetFolder?: string | undefined;
}

/**
 * The submitter's choice of files for a job waiting in `awaiting_selection`:
 * marks the chosen files pending and the others skipped, sets the bytes to
 * fetch, and queues the job again (unconfirmed until the caller writes the
 * queue message, so the reconciler covers a lost write). One transaction;
 * undefined (and nothing written) unless the job is the user's and still
 * waits for a choice.
 */
export async function applySelection(db: Db, input: SelectionInput): Promise<Job | undefined> {
  return db.transaction(async (tx) => {
    const [row] = await tx
      .select({ id: jobs.id })
      .from(jobs)
      .where(
        and(eq(jobs.id, input.jobId), eq(jobs.userId, input.userId), eq(jobs.state, "awaiting_selection")),
      )
      .for("update");
    if (!row) return undefined;
    const chosen = [...input.selected];
    await tx
      .update(jobFiles)
      .set({
        selected: sql`${inArray(jobFiles.fileIndex, chosen)}`,
        state: sql`(case when ${inArray(jobFiles.fileIndex, chosen)} then 'pending' else 'skipped' end)::file_state`,
      })
      .where(eq(jobFiles.jobId, input.jobId));
    const [total] = await tx
      .select({ bytes: sql<string>`coalesce(sum(${jobFiles.size}), 0)` })
      .from(jobFiles)
      .where(and(eq(jobFiles.jobId, input.jobId), eq(jobFiles.selected, true)));
    await tx
      .update(jobs)
      .set({
        bytesTotal: Number(total?.bytes ?? 0),
        enqueuedAt: null,
        ...(input.targetFolder ? { targetFolder: input.targetFolder } : {}),
      })
      .where(eq(jobs.id, input.jobId));
    return transitionJob(tx, {
      jobId: input.jobId,
      to: "queued",
      from: ["awaiting_selection"],
      cause: "user",
      reason: `${chosen.length} file${chosen.length === 1 ? "" : "s"} chosen by the user`,
      userId: input.userId,
    });
  });
}

export interface ResolvedTorrent {
  /** The info dictionary's name. */
  name: string;
  infoHashV2?: string | undefined;
  totalSize: number;
  pieceLength: number;
  pieceCount: number;
  files: { index: number; path: string; size: number }[];
  /** The files to fetch (a magnet's so=); undefined: all of them. */
  selected?: readonly number[] | undefined;
  /** The info dictionary as peers sent it (its SHA-1 is the info hash), kept for later attempts. */
  infoDictionary?: Uint8Array | undefined;
}

/**
 * A magnet's metadata is known (a worker fetched it from peers, or the
 * submitter's browser did): fills in what the shared torrent row did not know
 * yet (info-dictionary facts only) and, if the job has no file list yet,
 * writes one with the chosen files selected (every file unless the magnet's
 * so= picked some), names the job after the info dictionary unless its magnet
 * had a dn, and gives it the folder named after its files unless it names
 * one. Keeps the info dictionary on the job, so any later attempt continues
 * without fetching it again. Call inside the caller's transaction, with the
 * job's row or attempt locked. Returns the job's files.
 */
export async function recordMetadata(
  tx: Db,
  jobId: string,
  torrentId: string,
  meta: ResolvedTorrent,
): Promise<JobFile[]> {
  await tx
    .update(torrents)
    .set({
      name: sql`coalesce(${torrents.name}, ${meta.name})`,
      infoHashV2: sql`coalesce(${torrents.infoHashV2}, ${meta.infoHashV2 ?? null})`,
      totalSize: sql`coalesce(${torrents.totalSize}, ${meta.totalSize})`,
      pieceLength: sql`coalesce(${torrents.pieceLength}, ${meta.pieceLength})`,
      pieceCount: sql`coalesce(${torrents.pieceCount}, ${meta.pieceCount})`,
      fileCount: sql`coalesce(${torrents.fileCount}, ${meta.files.length})`,
    })
    .where(eq(torrents.id, torrentId));
  const existing = await tx
    .select()
    .from(jobFiles)
    .where(eq(jobFiles.jobId, jobId))
    .orderBy(asc(jobFiles.fileIndex));
  if (meta.infoDictionary) {
    await tx
      .update(jobs)
      .set({ infoDictionary: Buffer.from(meta.infoDictionary) })
      .where(and(eq(jobs.id, jobId), isNull(jobs.infoDictionary)));
  }
  if (existing.length > 0) return existing;
  const chosen = meta.selected ? new Set(meta.selected) : undefined;
  const picked = (index: number) => !chosen || chosen.has(index);
  const inserted = await tx
    .insert(jobFiles)
    .values(
      meta.files.map((file) => ({
        jobId,
        fileIndex: file.index,
        path: file.path,
        size: file.size,
        selected: picked(file.index),
        state: picked(file.index) ? ("pending" as const) : ("skipped" as const),
      })),
    )
    .returning();
  await tx
    .update(jobs)
    .set({
      bytesTotal: meta.files.reduce((sum, file) => sum + (picked(file.index) ? file.size : 0), 0),
      name: sql`coalesce(${jobs.name}, ${meta.name})`,
      targetFolder: sql`coalesce(${jobs.targetFolder}, ${defaultFolder(meta.files) ?? null})`,
    })
    .where(eq(jobs.id, jobId));
  return inserted.sort((a, b) => a.fileIndex - b.fileIndex);
}

export interface BrowserMetadataInput {
  jobId: string;
  userId: string;
  torrentId: string;
  /** Checked by the caller: its info dictionary hashes to the job's info hash and passes the parser. */
  meta: ResolvedTorrent;
}

/**
 * The submitter's browser found a magnet's metadata before the fleet did
 * (whichever is first wins): for a job of theirs that asked to choose its
 * files and whose metadata is still unknown (queued, or resolving on a
 * worker), records it and moves the job to `awaiting_selection`. A new
 * attempt, so a worker still resolving it is stale and can change nothing;
 * the caller stops that worker as a cancel would. One transaction; returns
 * the job and the attempt it left (the one to stop), or undefined (nothing
 * written) when the job is not the user's or does not wait for metadata.
 */
export async function acceptMetadata(
  db: Db,
  input: BrowserMetadataInput,
): Promise<{ job: TransitionedJob; stoppedAttempt: number; wasResolving: boolean } | undefined> {
  return db.transaction(async (tx) => {
    const [row] = await tx
      .select({ attempt: jobs.attempt, state: jobs.state })
      .from(jobs)
      .where(
        and(
          eq(jobs.id, input.jobId),
          eq(jobs.userId, input.userId),
          eq(jobs.chooseFiles, true),
          isNull(jobs.infoDictionary),
          inArray(jobs.state, ["queued", "resolving"]),
        ),
      )
      .for("update");
    if (!row) return undefined;
    const files = await tx
      .select({ id: jobFiles.id })
      .from(jobFiles)
      .where(eq(jobFiles.jobId, input.jobId))
      .limit(1);
    if (files.length > 0) return undefined;
    await recordMetadata(tx, input.jobId, input.torrentId, input.meta);
    const job = await transitionJob(tx, {
      jobId: input.jobId,
      to: "awaiting_selection",
      from: ["queued", "resolving"],
      cause: "user",
      reason: "the metadata was found by the submitter's browser",
      userId: input.userId,
      newAttempt: true,
    });
    return job ? { job, stoppedAttempt: row.attempt, wasResolving: row.state === "resolving" } : undefined;
  });
}

/**
 * Cancels every job that has waited for its submitter's choice of files since
 * before `cutoff`, recording why. One statement on jobs_selection_since_idx;
 * returns the jobs cancelled.
 */
export async function cancelUnchosen(
  db: Db,
  cutoff: Date,
  reason: string,
  limit = 200,
): Promise<{ id: string; attempt: number }[]> {
  const text = storableText(reason);
  const result = await db.execute<{ id: string; attempt: number }>(sql`
    with due as (
      select ${jobs.id} as id from ${jobs}
      where ${jobs.selectionSince} is not null and ${jobs.selectionSince} < ${cutoff.toISOString()}::timestamptz
        and ${jobs.state} = 'awaiting_selection'
      order by ${jobs.selectionSince} limit ${limit}
      for update skip locked
    ), moved as (
      update ${jobs} set state = 'cancelled', selection_since = null, finished_at = now(), updated_at = now()
      from due where ${jobs.id} = due.id
      returning ${jobs.id} as id, ${jobs.attempt} as attempt
    ), recorded as (
      insert into ${jobTransitions} (job_id, from_state, to_state, cause, attempt, reason)
      select id, 'awaiting_selection', 'cancelled', 'system', attempt, ${text} from moved
    )
    select id, attempt from moved`);
  const rows = (result as unknown as { rows?: { id: string; attempt: number }[] }).rows ?? result;
  return (rows as { id: string; attempt: number }[]).map((r) => ({ id: r.id, attempt: Number(r.attempt) }));
}

export interface ClaimOptions {
  /** Who takes it: a worker takes only fleet jobs, a browser tab only browser jobs (default fleet). */
  runner?: JobRunner | undefined;
  /** Scope to an owner (a tab takes only its user's jobs). */
  userId?: string | undefined;
  /** Only a job that awaits its metadata (a worker's metadata slot takes nothing else). */
  awaitsMetadata?: boolean | undefined;
}

export async function claimJob(db: Db, jobId: string, options: ClaimOptions = {}): Promise<Job | undefined> {
  const [job] = await db
    .update(jobs)
    .set({
      attempt: sql`${jobs.attempt} + 1`,
      // No longer waiting in the queue: the user's next job may be let in (admitNext).
      claimedAt: sql`coalesce(${jobs.claimedAt}, now())`,
      admittedAt: sql`coalesce(${jobs.admittedAt}, now())`,
    })
    .where(
      and(
        eq(jobs.id, jobId),
        inArray(jobs.state, [...workerStates]),
        eq(jobs.runner, options.runner ?? "fleet"),
        options.userId === undefined ? undefined : eq(jobs.userId, options.userId),
        options.awaitsMetadata ? awaitsMetadata : undefined,
      ),
    )
    .returning();
  return job;
}

/** Throws StaleAttemptError unless the job is still at `attempt` (for writes outside transitionJob). */
export async function assertAttempt(db: Db, jobId: string, attempt: number): Promise<void> {
  const [row] = await db.select({ attempt: jobs.attempt }).from(jobs).where(eq(jobs.id, jobId));
  if (!row || row.attempt !== attempt) throw new StaleAttemptError(jobId, attempt);
}
