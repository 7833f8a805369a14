// The Worker's cron trigger (wrangler.toml [triggers]): runs the reconciler,
// which enqueues jobs whose queue write never got confirmed. Gated: with no job
// change since its last full pass it reads Redis once and leaves Postgres
// asleep (the database is opened lazily, on first use).
import { parseConfig } from "../config.ts";
import { createDb } from "../db/index.ts";
import { createRedis } from "../redis/index.ts";
import { reconcile } from "./reconcile.ts";

export async function scheduled(
  _controller: ScheduledController,
  env: Record<string, unknown>,
  ctx: ExecutionContext,
): Promise<void> {
  const config = parseConfig(env);
  const handle = createDb(config);
  try {
    await reconcile(handle.db, createRedis(config), {
      selectionTimeoutMs: config.SELECTION_TIMEOUT_SECONDS * 1000,
      // Postgres only when a job changed since the last pass that saw everything.
      gate: true,
    });
  } finally {
    ctx.waitUntil(handle.close().catch(() => {}));
  }
}
