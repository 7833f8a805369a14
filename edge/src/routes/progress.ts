// GET /api/progress?ids=a,b,c: the latest progress snapshot of several jobs at
// once, for the jobs list. One script confirms the session, reads the jobs'
// owner keys and the snapshots of those that are the caller's (marking them
// watched); other ids are simply absent from the answer. Postgres is asked
// only about jobs whose owner key Redis lost.
import { createRoute, z } from "@hono/zod-openapi";
import { keys, ProgressEvent } from "@torreclou/contracts";
import { requireUserInRoute, sessionEnded } from "../auth/index.ts";
import { ownsJobs, pollSnapshots, readEvent } from "../progress/read.ts";
import { errorResponses, registerAuthSchemes, signedIn } from "../security/openapi.ts";
import { router } from "./openapi.ts";

/** Jobs per batch at most. */
export const MAX_BATCH = 50;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const BatchQuery = z.object({
  ids: z
    .string()
    .transform((value, ctx) => {
      const ids = [...new Set(value.split(",").map((id) => id.trim().toLowerCase()))].filter(
        (id) => id !== "",
      );
      if (ids.length === 0) ctx.addIssue({ code: "custom", message: "give at least one job id" });
      else if (ids.length > MAX_BATCH)
        ctx.addIssue({ code: "custom", message: `at most ${MAX_BATCH} job ids` });
      else if (!ids.every((id) => UUID.test(id)))
        ctx.addIssue({ code: "custom", message: "must be job ids (UUIDs)" });
      return ids;
    })
    .openapi({ description: `Comma-separated job ids, at most ${MAX_BATCH}.` }),
});

const batch = createRoute({
  method: "get",
  path: "/",
  tags: ["Jobs"],
  summary: "Latest progress of several jobs",
  description:
    "The latest progress snapshot of each listed job that is yours (null before its first event). Ids of jobs that are not yours are left out.",
  security: signedIn,
  middleware: [requireUserInRoute] as const,
  request: { query: BatchQuery },
  responses: {
    200: {
      description: "Snapshots by job id.",
      content: {
        "application/json": {
          schema: z.object({ snapshots: z.record(z.string(), ProgressEvent.nullable()) }),
        },
      },
    },
    ...errorResponses({ 400: "Missing, too many or malformed ids.", 401: "Not signed in." }),
  },
});

const api = router();
registerAuthSchemes(api);

export const progress = api.openapi(batch, async (c) => {
  const { ids } = c.req.valid("query");
  const redis = c.var.redis;
  const user = c.var.user;
  const result = await pollSnapshots(redis, { ids, userId: user.id, sessionKey: user.unconfirmedSession });
  if (result.status === "session") throw sessionEnded();
  const snapshots: Record<string, ProgressEvent | null> = {};
  for (const [id, { whose, snapshot }] of result.jobs) {
    if (whose === "mine") snapshots[id] = readEvent(snapshot) ?? null;
  }
  // Owner keys Redis lost: Postgres says (and they are written back), then their snapshots.
  const unknown = ids.filter((id) => result.jobs.get(id)?.whose === "unknown");
  if (unknown.length > 0) {
    const owned = await ownsJobs(c.var.db, redis, user.id, new Map(unknown.map((id) => [id, null])));
    const mine = unknown.filter((id) => owned.has(id));
    const values = mine.length > 0 ? await redis.mget<unknown[]>(...mine.map(keys.snapshot)) : [];
    mine.forEach((id, i) => {
      snapshots[id] = readEvent(values[i]) ?? null;
    });
  }
  return c.json({ snapshots }, 200);
});
