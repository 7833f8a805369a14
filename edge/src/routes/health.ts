// GET /api/health: is each backing service reachable, and how fast.
import { Hono } from "hono";
import { createHttpSql } from "../db/index.ts";
import type { AppEnv } from "../env.ts";
import { createRedis } from "../redis/index.ts";

interface Check {
  ok: boolean;
  latencyMs: number;
  error?: string;
}

async function timed(probe: () => Promise<unknown>): Promise<Check> {
  const started = Date.now();
  try {
    await probe();
    return { ok: true, latencyMs: Date.now() - started };
  } catch (err) {
    return {
      ok: false,
      latencyMs: Date.now() - started,
      error: err instanceof Error ? err.message : String(err),
    };
  }
}

export const health = new Hono<AppEnv>().get("/", async (c) => {
  const config = c.get("config");
  const [postgres, redis] = await Promise.all([
    timed(() => createHttpSql(config)`select 1`),
    timed(() => createRedis(config).ping()),
  ]);
  const ok = postgres.ok && redis.ok;
  return c.json({ ok, postgres, redis }, ok ? 200 : 503);
});
