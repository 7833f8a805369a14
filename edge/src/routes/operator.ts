// The operator's view (OPERATOR_EMAILS): the queue, jobs stuck in one state,
// jobs that used up their attempts (with a retry), the workers seen, and each
// user's usage. Everyone else gets the 404 of a route that does not exist
// (auth/operator.ts), and the routes are left out of the public API document.
import { createRoute, z } from "@hono/zod-openapi";
import {
  queue as jobQueue,
  readWorkerBeat,
  workerForgetMs,
  workerSeenWindowMs,
  workersKey,
} from "@torreclou/contracts";
import { retryTransition } from "@torreclou/db/jobs";
import { exhaustedJobs, isExhausted, queueSummary, stuckJobs, usageByUser } from "@torreclou/db/ops";
import type { Redis } from "@upstash/redis/cloudflare";
import { requireOperator } from "../auth/operator.ts";
import { ApiError } from "../errors/index.ts";
import { monthOf, quotasOf } from "../limits/quotas.ts";
import { admitAndEnqueue } from "../queue/enqueue.ts";
import { errorResponses, registerAuthSchemes, signedIn } from "../security/openapi.ts";
import { forJob } from "../tracing/index.ts";
import { router } from "./openapi.ts";

const iso = z.iso.datetime();

const JobRef = {
  id: z.uuid(),
  userId: z.uuid(),
  email: z.string(),
  name: z.string().nullable(),
  attempt: z.number().int(),
};

const Overview = z
  .object({
    now: iso,
    thresholds: z.object({ stuckAfterSeconds: z.number().int(), queuedTooLongSeconds: z.number().int() }),
    queue: z.object({
      queued: z
        .number()
        .int()
        .openapi({ description: "Jobs in state queued (waiting their turn or in the stream)." }),
      admitted: z
        .number()
        .int()
        .openapi({ description: "Of those, let into the shared queue (fair turns)." }),
      oldest: z.object({ id: z.uuid(), userId: z.uuid(), queuedAt: iso, ageSeconds: z.number() }).nullable(),
      stream: z
        .object({
          pending: z
            .number()
            .int()
            .openapi({ description: "Entries delivered to a worker and not acknowledged." }),
          undelivered: z
            .number()
            .int()
            .nullable()
            .openapi({ description: "Entries no worker has read yet." }),
        })
        .nullable()
        .openapi({
          description: "The jobs stream's consumer group (one XINFO); null if Redis would not say.",
        }),
    }),
    stuck: z.array(z.object({ ...JobRef, state: z.string(), since: iso, ageSeconds: z.number() })),
    exhausted: z.array(z.object({ ...JobRef, reason: z.string(), failedAt: iso })),
    workers: z.array(
      z.object({
        id: z.string(),
        host: z.string(),
        version: z.string(),
        pid: z.number().int(),
        jobs: z.array(z.string()),
        concurrency: z.number().int(),
        startedAt: iso,
        seenAt: iso,
        /** Heard from within the last three heartbeats. */
        seen: z.boolean(),
      }),
    ),
    users: z.array(
      z.object({
        userId: z.uuid(),
        email: z.string(),
        runningJobs: z.number().int(),
        queuedJobs: z.number().int(),
        monthlyBytes: z.number(),
      }),
    ),
    limits: z.object({
      runningJobs: z.number().int().nullable(),
      queuedJobs: z.number().int().nullable(),
      monthlyBytes: z.number().int().nullable(),
    }),
  })
  .openapi("OperatorOverview");

const tags = ["Operator"];
const notOperator = "Not an operator (or not signed in): answered like a route that does not exist.";

const overview = createRoute({
  method: "get",
  path: "/",
  tags,
  hide: true,
  summary: "The operator's view",
  security: signedIn,
  middleware: [requireOperator] as const,
  responses: {
    200: {
      description: "Queue, stuck and exhausted jobs, workers, usage.",
      content: { "application/json": { schema: Overview } },
    },
    ...errorResponses({ 404: notOperator }),
  },
});

const retryExhausted = createRoute({
  method: "post",
  path: "/jobs/{id}/retry",
  tags,
  hide: true,
  summary: "Retry a job that used up its attempts",
  description:
    "Queues the job again as a new attempt, counted afresh; it waits for its owner's turn like any job (fair turns). The owner's queued-jobs quota is not applied: the operator decides.",
  security: signedIn,
  middleware: [requireOperator] as const,
  request: {
    params: z.object({
      id: z.uuid("must be a job id (a UUID)").openapi({ param: { name: "id", in: "path" } }),
    }),
  },
  responses: {
    200: {
      description: "The job, queued again.",
      content: {
        "application/json": {
          schema: z.object({ job: z.object({ id: z.uuid(), state: z.string(), attempt: z.number().int() }) }),
        },
      },
    },
    ...errorResponses({
      400: "The id is not a UUID.",
      403: "A browser request not from the web app.",
      404: `${notOperator} Or no such job.`,
      409: "The job has not used up its attempts (only those are retried here; its owner can retry any failed job).",
    }),
  },
});

/** The consumer group's pending and undelivered counts, over both job streams (one XINFO GROUPS each); null when not known. */
async function streamCounts(redis: Redis): Promise<{ pending: number; undelivered: number | null } | null> {
  const counts = await Promise.all(
    [jobQueue.stream, jobQueue.metadataStream].map((stream) => groupCounts(redis, stream)),
  );
  const known = counts.filter((c) => c !== null);
  if (known.length === 0) return null;
  return {
    pending: known.reduce((sum, c) => sum + c.pending, 0),
    undelivered: known.some((c) => c.undelivered === null)
      ? null
      : known.reduce((sum, c) => sum + (c.undelivered ?? 0), 0),
  };
}

async function groupCounts(
  redis: Redis,
  stream: string,
): Promise<{ pending: number; undelivered: number | null } | null> {
  try {
    const groups = (await redis.xinfo(stream, { type: "GROUPS" })) as unknown[][];
    for (const group of groups) {
      const field = (name: string) => {
        const at = group.indexOf(name);
        return at >= 0 ? group[at + 1] : undefined;
      };
      if (field("name") !== jobQueue.group) continue;
      const lag = field("lag");
      return {
        pending: Number(field("pending") ?? 0),
        undelivered: lag === null || lag === undefined ? null : Number(lag),
      };
    }
    return { pending: 0, undelivered: 0 };
  } catch {
    // No stream yet (no job ever queued there), or a plan without XINFO.
    return null;
  }
}

/** Every worker record; records older than a day are removed (a crashed worker's). */
async function workersSeen(redis: Redis, now: Date) {
  const hash = (await redis.hgetall<Record<string, unknown>>(workersKey)) ?? {};
  const out = [];
  const forget: string[] = [];
  for (const [field, value] of Object.entries(hash)) {
    const beat = readWorkerBeat(value);
    const age = beat ? now.getTime() - Date.parse(beat.seenAt) : Number.POSITIVE_INFINITY;
    if (!beat || age > workerForgetMs) {
      forget.push(field);
      continue;
    }
    out.push({ ...beat, seen: age <= workerSeenWindowMs });
  }
  if (forget.length > 0) await redis.hdel(workersKey, ...forget).catch(() => undefined);
  return out.sort((a, b) => Number(b.seen) - Number(a.seen) || a.id.localeCompare(b.id));
}

const api = router();
registerAuthSchemes(api);

export const operator = api
  .openapi(overview, async (c) => {
    const config = c.var.config;
    const db = c.var.db();
    const now = new Date();
    const thresholds = {
      runningMs: config.OPERATOR_STUCK_AFTER_SECONDS * 1000,
      queuedMs: config.OPERATOR_QUEUED_TOO_LONG_SECONDS * 1000,
    };
    // One after another: a request's Neon connection runs one query at a time anyway.
    const queue = { ...(await queueSummary(db, now)), stream: await streamCounts(c.var.redis) };
    const stuck = await stuckJobs(db, now, thresholds);
    const exhausted = await exhaustedJobs(db);
    const users = await usageByUser(db, monthOf(now).start);
    const workers = await workersSeen(c.var.redis, now);
    return c.json(
      {
        now: now.toISOString(),
        thresholds: {
          stuckAfterSeconds: config.OPERATOR_STUCK_AFTER_SECONDS,
          queuedTooLongSeconds: config.OPERATOR_QUEUED_TOO_LONG_SECONDS,
        },
        queue,
        stuck,
        exhausted,
        workers,
        users,
        limits: quotasOf(config),
      },
      200,
    );
  })
  .openapi(retryExhausted, async (c) => {
    const { id } = c.req.valid("param");
    const db = c.var.db();
    const job = await isExhausted(db, id);
    if (!job) {
      throw new ApiError(
        409,
        "not_exhausted",
        "This job has not used up its attempts (or does not exist): only those are retried from the operator's view.",
      );
    }
    // Cause "user", a person's retry: the worker counts attempts afresh from it (attemptsSinceUser).
    const retried = await retryTransition(db, id, job.userId, {
      cause: "user",
      reason: "retried by the operator",
    });
    if (!retried) throw new ApiError(409, "not_exhausted", "The job changed meanwhile; reload.");
    // Back in line like a new job: in the queue when it is its owner's turn.
    await forJob(id, () => admitAndEnqueue(db, c.var.redis, job.userId, c.var.config.QUOTA_RUNNING_JOBS));
    return c.json({ job: { id: retried.id, state: retried.state, attempt: retried.attempt } }, 200);
  });
