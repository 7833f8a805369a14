// The caller's quotas and what they use of them (limits/quotas.ts): running
// and queued jobs, and this month's transfer allowance with when it renews.
import { createRoute, z } from "@hono/zod-openapi";
import { requireUser } from "../auth/index.ts";
import { monthOf, quotasOf, usageOf } from "../limits/quotas.ts";
import { errorResponses, registerAuthSchemes, signedIn } from "../security/openapi.ts";
import { router } from "./openapi.ts";

const Limit = z.number().int().nullable().openapi({ description: "null: no limit." });

const UsageSchema = z
  .object({
    limits: z.object({
      runningJobs: Limit.openapi({
        description:
          "Jobs that may run at once (null: no limit). More wait their turn, queued, and start as others end.",
      }),
      queuedJobs: Limit.openapi({
        description: "Jobs that may wait to start (null: no limit); a new job beyond it is refused (429).",
      }),
      monthlyBytes: Limit.openapi({
        description:
          "Selected bytes of the jobs created in a calendar month, UTC (null: no limit); a job beyond it is refused (403).",
      }),
    }),
    usage: z.object({
      runningJobs: z.number().int().openapi({ description: "Jobs started and not ended." }),
      queuedJobs: z.number().int().openapi({ description: "Jobs waiting to start." }),
      monthlyBytes: z.number().openapi({
        description:
          "Selected bytes of the jobs you created this month (a magnet's once its files are known), finished or not.",
      }),
    }),
    month: z.object({
      start: z.iso.datetime().openapi({ example: "2026-11-01T00:00:00.000Z" }),
      resetsAt: z.iso
        .datetime()
        .openapi({ example: "2026-12-01T00:00:00.000Z", description: "When the monthly allowance renews." }),
    }),
  })
  .openapi("Usage");

const getUsage = createRoute({
  method: "get",
  path: "/",
  tags: ["Account"],
  summary: "Your quotas and usage",
  description: "The operator's per-user limits, what you use of them now, and when the monthly one renews.",
  security: signedIn,
  middleware: [requireUser] as const,
  responses: {
    200: { description: "Limits and usage.", content: { "application/json": { schema: UsageSchema } } },
    ...errorResponses({ 401: "Not signed in." }),
  },
});

const api = router();
registerAuthSchemes(api);

export const usage = api.openapi(getUsage, async (c) => {
  const now = new Date();
  const month = monthOf(now);
  return c.json(
    {
      limits: quotasOf(c.var.config),
      usage: await usageOf(c.var.db(), c.var.user.id, now),
      month: { start: month.start.toISOString(), resetsAt: month.resetsAt.toISOString() },
    },
    200,
  );
});
