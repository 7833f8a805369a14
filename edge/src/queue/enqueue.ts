// Putting a job on the queue. The job row (Postgres) and the queue message
// (Redis) live in two systems, so the order is fixed: the row is written first
// with `enqueued_at` null, then the message, then `enqueued_at`. A failure
// between the steps leaves a row the reconciler (reconcile.ts) finds and
// enqueues again; a message written twice is harmless because a worker takes a
// lease and bumps the job's attempt before running it.
import { SpanKind } from "@opentelemetry/api";
import {
  type JobMessage,
  keys,
  queue,
  spanAttributes,
  spanNames,
  streamFor,
  type TraceContext,
} from "@torreclou/contracts";
import { admitNext, type Db, markEnqueued } from "@torreclou/db/jobs";
import type { Redis } from "@upstash/redis/cloudflare";
import { inSpan, traceContextFields, traceLogFields } from "../tracing/index.ts";

/**
 * One MULTI, so it happens entirely or not at all: set the owner key (before
 * the message, so progress reads work as soon as a worker can see the job; no
 * expiry, it is deleted with the job), then the queue message. A cancel flag
 * an earlier attempt left stays: it names that attempt, and a retried job
 * runs as a later one, so the flag stops only the attempt it was meant for.
 */
export async function writeQueueMessage(
  redis: Redis,
  jobId: string,
  userId: string,
  stored: TraceContext = {},
  stream: string = queue.stream,
): Promise<string> {
  // The queue hop of the job's trace: the entry carries this span's context (while tracing
  // is on, and the request is about this job: tracing/ `forJob`).
  const attributes = {
    [spanAttributes.jobId]: jobId,
    "messaging.system": "redis",
    "messaging.operation.type": "send",
    "messaging.destination.name": stream,
  };
  return inSpan(spanNames.enqueue, { kind: SpanKind.PRODUCER, attributes }, async (span) => {
    // Else the context of the request that created the job (a job let in on its turn by another).
    const own = traceContextFields(jobId);
    const message: JobMessage = { jobId, ...(own.traceparent ? own : stored) };
    const results = await redis
      .multi()
      .set(keys.owner(jobId), userId)
      .xadd(stream, "*", { job: JSON.stringify(message) })
      .exec();
    const entry = String(results[1]);
    span.setAttribute("messaging.message.id", entry);
    return entry;
  });
}

/**
 * Counts a job change for the reconcile (keys.reconcileChanges), before the
 * change: a request that dies half-way still leaves the mark. Best effort.
 */
export async function noteChange(redis: Redis): Promise<void> {
  await redis.incr(keys.reconcileChanges).catch(() => undefined);
}

export interface EnqueueResult {
  /** True when the message is written and the row says so. */
  enqueued: boolean;
  error?: string;
}

/**
 * Queue message, then `enqueued_at`. Never throws: the job is already saved,
 * and whatever did not happen here the reconciler does later.
 */
export async function enqueueJob(
  db: Db,
  redis: Redis,
  jobId: string,
  userId: string,
  stored: TraceContext = {},
  stream: string = queue.stream,
): Promise<EnqueueResult> {
  await noteChange(redis);
  try {
    await writeQueueMessage(redis, jobId, userId, stored, stream);
  } catch (err) {
    return failed("queue write failed", jobId, err);
  }
  try {
    await markEnqueued(db, jobId);
  } catch (err) {
    return failed("marking the job enqueued failed", jobId, err);
  }
  return { enqueued: true };
}

/**
 * Fair turns: lets the user's next job into the queue if it is their turn
 * (admitNext) and writes its message. `runningLimit` is the operator's
 * current one (recorded for the workers); undefined keeps the recorded one.
 * Never throws: a job left waiting its turn is let in by the next job change
 * of the user, or by the reconciler.
 */
export async function admitAndEnqueue(
  db: Db,
  redis: Redis,
  userId: string,
  runningLimit?: number | null,
): Promise<string | undefined> {
  let next: ({ id: string; awaitsMetadata: boolean } & TraceContext) | undefined;
  await noteChange(redis);
  try {
    next = await admitNext(db, userId, { runningLimit });
  } catch (err) {
    console.warn(
      JSON.stringify({
        level: "warn",
        msg: "letting the user's next job in failed; the reconciler will",
        ...traceLogFields(),
        error: err instanceof Error ? err.message : String(err),
      }),
    );
    return undefined;
  }
  if (next) {
    await enqueueJob(
      db,
      redis,
      next.id,
      userId,
      { traceparent: next.traceparent, tracestate: next.tracestate },
      streamFor(next),
    );
  }
  return next?.id;
}

function failed(what: string, jobId: string, err: unknown): EnqueueResult {
  const error = err instanceof Error ? err.message : String(err);
  console.warn(
    JSON.stringify({
      level: "warn",
      msg: `${what}; the reconciler will enqueue it`,
      jobId,
      error,
      ...traceLogFields(),
    }),
  );
  return { enqueued: false, error };
}
