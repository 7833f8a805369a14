// The Redis side of a job: the stream workers read, the keys that fence and
// cancel an attempt, and the per-job progress stream the browser polls.
// Edge and worker both build key names here, so they can never disagree.
import { z } from "zod";

export const queue = {
  /** Stream of jobs to run, read by the `workers` consumer group. */
  stream: "torreclou:jobs",
  /**
   * Stream of magnet jobs that only need their metadata before their user
   * picks files (`chooseFiles`, metadata unknown). Read by the same group
   * with slots of its own (WORKER_METADATA_CONCURRENCY), so fetching a file
   * list never waits behind, nor holds, a download slot.
   */
  metadataStream: "torreclou:jobs:metadata",
  group: "workers",
  /**
   * How long a worker's liveness key and its jobs' leases last without
   * renewal (renewed every third of it while it holds jobs). A crashed
   * worker's jobs are taken over once this has passed.
   */
  leaseMs: 6_000,
  /** Bounded length of each job's progress stream (XADD MAXLEN ~). */
  progressMaxLen: 500,
  /**
   * Progress cadence (Upstash bills per command). While someone watches the
   * job (its `watched` key exists), a worker publishes at most one event per
   * `progressWatchedMs`; otherwise at most one per `progressIdleMs`. Phase
   * changes and waits are published at once either way.
   */
  progressWatchedMs: 2_000,
  progressIdleMs: 30_000,
  /**
   * How long one progress poll marks a job watched. Longer than a visible
   * page's poll interval, shorter than a hidden page's, so a tab in the
   * background stops counting as someone watching.
   */
  watchedSeconds: 10,
} as const;

/** Which stream a job's entry goes to: its metadata alone (a magnet whose user picks files), or the whole run. */
export function streamFor(job: { awaitsMetadata: boolean }): string {
  return job.awaitsMetadata ? queue.metadataStream : queue.stream;
}

export const keys = {
  /** Worker id holding the job's current attempt, with a PX expiry (the lease). */
  lease: (jobId: string) => `torreclou:job:${jobId}:lease`,
  /**
   * Set by the edge when a user cancels, to the attempt number the job had
   * then: a worker running that attempt (or an older one) stops as it renews
   * its lease; a later attempt (a retry) is not affected, whatever the order.
   */
  cancel: (jobId: string) => `torreclou:job:${jobId}:cancel`,
  /**
   * Set by the edge when the owner stops a completed job's seeding (or
   * deletes the job): the worker seeding it stops as it renews, in the same
   * command that renews its leases.
   */
  seedStop: (jobId: string) => `torreclou:job:${jobId}:seed-stop`,
  /** Exists while a worker holding jobs is alive (PX, renewed with its leases). */
  alive: (workerId: string) => `torreclou:worker:${workerId}:alive`,
  /** Per-job progress events (a Redis stream). */
  progress: (jobId: string) => `torreclou:job:${jobId}:progress`,
  /** The latest progress event as JSON, for list views that want one snapshot per job. */
  snapshot: (jobId: string) => `torreclou:job:${jobId}:snapshot`,
  /**
   * Jobs waiting for their submitter's choice of files (a sorted set, scored
   * by when each began to wait, ms): the edge's reconcile reads its oldest
   * score first and asks Postgres only when a wait may have run out.
   */
  awaitingSelection: "torreclou:jobs:awaiting-selection",
  /**
   * Exists while someone watches the job's progress: the edge's progress poll
   * sets it (EX `queue.watchedSeconds`) in the same script that reads the
   * events; the worker sees it in its lease renewal, at no extra command.
   */
  watched: (jobId: string) => `torreclou:job:${jobId}:watched`,
  /**
   * Counts job changes that may leave something for the reconcile to do
   * (INCR by edge and workers: a job let in or enqueued, started, settled,
   * requeued or cancelled). The every-minute reconcile compares it with what
   * its last full pass saw (`reconcileState`) and leaves Postgres alone while
   * nothing changed.
   */
  reconcileChanges: "torreclou:reconcile:changes",
  /** What the last full reconcile pass saw (JSON, see edge/src/queue/reconcile.ts). */
  reconcileState: "torreclou:reconcile:state",
  /** Owner's user id, so progress reads are scoped without a database query per poll. */
  owner: (jobId: string) => `torreclou:job:${jobId}:owner`,
  /**
   * While a browser tab transfers the job: its attempt, phase and file sizes
   * (JSON, written when the tab takes it), so the tab's progress posts are
   * fenced and turned into events without a database round-trip.
   */
  transfer: (jobId: string) => `torreclou:job:${jobId}:transfer`,
  /** Exists (PX transferProgressEveryMs) after a tab's progress was written: extra posts are dropped. */
  transferGate: (jobId: string) => `torreclou:job:${jobId}:transfer-gate`,
} as const;

/**
 * Appends a progress event and sets the snapshot, unless the snapshot already
 * comes from a newer attempt: a worker or tab that lost the job can never make
 * the browser show an older attempt's numbers. Nor does a newer attempt show
 * fewer bytes than the live attempt it replaced (the old one may report once
 * more after the new one read its numbers): such an event is refused with the
 * numbers to raise it to. A retry of an ended job starts afresh. Returns 1
 * when written, 0 when refused, [2, downloaded, uploaded] when the event must
 * be raised. KEYS: stream, snapshot. ARGV: attempt, event JSON, max length,
 * retention s, field.
 */
export const progressPublishScript = `
local current = redis.call('GET', KEYS[2])
if current then
  local ok, shown = pcall(cjson.decode, current)
  if ok and type(shown) == 'table' and tonumber(shown.attempt) then
    local attempt = tonumber(ARGV[1])
    if tonumber(shown.attempt) > attempt then
      return 0
    end
    local ended = shown.phase == 'completed' or shown.phase == 'failed' or shown.phase == 'cancelled'
    if tonumber(shown.attempt) < attempt and not ended and type(shown.bytes) == 'table' then
      local down = tonumber(shown.bytes.downloaded) or 0
      local up = tonumber(shown.bytes.uploaded) or 0
      local okEvent, event = pcall(cjson.decode, ARGV[2])
      if okEvent and type(event) == 'table' and type(event.bytes) == 'table'
        and ((tonumber(event.bytes.downloaded) or 0) < down or (tonumber(event.bytes.uploaded) or 0) < up) then
        return {2, down, up}
      end
    end
  end
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', ARGV[5], ARGV[2])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
`;

/** What the publish script answered: written, refused, or to be raised to the bytes an earlier attempt showed. */
export type PublishReply = { written: boolean; raiseTo?: { downloaded: number; uploaded: number } };

export function publishReplyOf(raw: unknown): PublishReply {
  if (Array.isArray(raw) && Number(raw[0]) === 2) {
    return { written: false, raiseTo: { downloaded: Number(raw[1]) || 0, uploaded: Number(raw[2]) || 0 } };
  }
  return { written: Number(raw) === 1 };
}

/** How long a job's progress stream and snapshot stay readable after the last event (s). */
export const progressRetentionSeconds = 7 * 24 * 3600;

/** The one field of a jobs-stream entry: `job` = JSON of this shape. */
// Only the id (and, while tracing, a trace context): the job row is the truth. A worker takes the job's lease
// (SET NX PX) and bumps its attempt in Postgres before running it, so a
// duplicate message (retry, reclaim) can never run a job twice at once.
export const JobMessage = z.object({
  jobId: z.uuid(),
  /**
   * Not a run but a clean-up of a job that ended: abort the uploads it left at
   * its provider (the edge asks for one on cancel, which may land while no
   * attempt runs; a worker whose aborts could not be sent asks for one too).
   */
  cleanup: z.literal(true).optional(),
  /**
   * W3C trace context (`traceparent`, `tracestate`) of the edge request the
   * job's entry was written for (its creation, a retry, a choice of files),
   * while tracing is on (contracts/src/tracing.ts): the worker's spans continue
   * that request's trace. A job let in later on its fair turn (by a worker or
   * another request) carries the context of the request that created it,
   * kept on its row, so it is one trace all the same (the reconcile cron's
   * re-enqueue too); a worker's hand-back carries its entry's context on, and
   * an entry taken over from a crashed worker keeps its own. Entries without
   * it (older ones, tracing off) start a new trace at the worker, with the
   * job id on its spans. A malformed value is dropped, never the entry.
   */
  traceparent: z.string().max(64).optional().catch(undefined),
  tracestate: z.string().max(512).optional().catch(undefined),
});
export type JobMessage = z.infer<typeof JobMessage>;
/** The trace context fields of an entry. */
export type TraceContext = Pick<JobMessage, "traceparent" | "tracestate">;
