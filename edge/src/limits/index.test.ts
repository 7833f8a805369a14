// The rate-limit middleware against the real local Upstash stand-in: a tiny
// route with a low limit, called as different users and addresses.
import { env } from "cloudflare:workers";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import type { AppEnv } from "../app.ts";
import { parseConfig } from "../config.ts";
import { onError } from "../errors/index.ts";
import { createRedis } from "../redis/index.ts";
import { rateLimit } from "./index.ts";

/** A fresh limiter name per app, so runs and tests never share counters. */
function limitedApp(limit: number) {
  const name = `test-${crypto.randomUUID()}`;
  const app = new Hono<AppEnv>();
  app.use("*", async (c, next) => {
    const config = parseConfig(env as unknown as Record<string, unknown>);
    c.set("config", config);
    c.set("redis", createRedis(config));
    // Stands in for requireUser: the caller is whoever x-user names.
    const user = c.req.header("x-user");
    if (user) c.set("user", { id: user, via: "session" });
    await next();
  });
  app.get("/limited", rateLimit(name, limit, "30 s"), (c) => c.json({ ok: true }));
  app.onError(onError);
  return (headers: Record<string, string>) => app.request("/limited", { headers }, env);
}

describe("rateLimit", () => {
  it("answers 429 with the JSON error shape and Retry-After once the limit is used up", async () => {
    const call = limitedApp(3);
    const alice = { "x-user": crypto.randomUUID() };
    for (let i = 0; i < 3; i++) {
      const ok = await call(alice);
      expect(ok.status).toBe(200);
      expect(ok.headers.get("ratelimit-limit")).toBe("3");
      expect(ok.headers.get("ratelimit-remaining")).toBe(String(2 - i));
    }
    const limited = await call(alice);
    expect(limited.status).toBe(429);
    const retryAfter = Number(limited.headers.get("retry-after"));
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(30);
    expect(await limited.json()).toEqual({
      error: {
        code: "rate_limited",
        message: `Too many requests; try again in ${retryAfter} s.`,
        details: { retryAfter },
      },
    });
    expect(limited.headers.get("ratelimit-remaining")).toBe("0");
  });

  it("counts each user separately", async () => {
    const call = limitedApp(2);
    const alice = { "x-user": crypto.randomUUID() };
    const bob = { "x-user": crypto.randomUUID() };
    expect((await call(alice)).status).toBe(200);
    expect((await call(alice)).status).toBe(200);
    expect((await call(alice)).status).toBe(429);
    expect((await call(bob)).status).toBe(200);
    expect((await call(bob)).status).toBe(200);
    expect((await call(bob)).status).toBe(429);
  });

  it("counts signed-out callers by address", async () => {
    const call = limitedApp(1);
    expect((await call({ "cf-connecting-ip": "203.0.113.7" })).status).toBe(200);
    expect((await call({ "cf-connecting-ip": "203.0.113.7" })).status).toBe(429);
    expect((await call({ "cf-connecting-ip": "203.0.113.8" })).status).toBe(200);
  });
});
