// The rate-limit middleware against the real local Upstash stand-in: a tiny
// route with a low limit, called as different users and addresses.
import { env } from "cloudflare:workers";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../config.ts";
import type { AppEnv } from "../env.ts";
import { onError } from "../errors/index.ts";
import { createRedis } from "../redis/index.ts";
import { rateLimit } from "./index.ts";

/**
 * A fresh limiter name per app, so runs and tests never share counters.
 * `bindings` stand in for the Worker's (CLIENT_IP_HEADER, say).
 */
function limitedApp(limit: number, by: "user" | "client" = "user", bindings: Record<string, unknown> = {}) {
  const name = `test-${crypto.randomUUID()}`;
  const app = new Hono<AppEnv>();
  const settings = { ...(env as unknown as Record<string, unknown>), ...bindings };
  app.use("*", async (c, next) => {
    const config = parseConfig(settings);
    c.set("config", config);
    c.set("redis", createRedis(config));
    // Stands in for requireUser: the caller is whoever x-user names.
    const user = c.req.header("x-user");
    if (user) c.set("user", { id: user, via: "session" });
    await next();
  });
  app.get("/limited", rateLimit(name, limit, "30 s", by), (c) => c.json({ ok: true }));
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

  it("refuses to count users before anyone is authenticated, rather than counting by address", async () => {
    const call = limitedApp(5, "user");
    const response = await call({ "cf-connecting-ip": "203.0.113.7" });
    expect(response.status).toBe(500);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe("internal");
  });
});

describe("rateLimit for signed-out callers", () => {
  it("shares one bucket when no client-address header is configured: cf-connecting-ip is the client's own words", async () => {
    const call = limitedApp(2, "client");
    expect((await call({ "cf-connecting-ip": "203.0.113.7" })).status).toBe(200);
    expect((await call({ "cf-connecting-ip": "203.0.113.8" })).status).toBe(200);
    expect((await call({ "cf-connecting-ip": "198.51.100.9" })).status).toBe(429);
    expect((await call({})).status).toBe(429);
    // Signed in or not: a "client" limiter counts the address, never a user's x-user claim here.
    expect((await call({ "cf-connecting-ip": "192.0.2.1", "x-user": crypto.randomUUID() })).status).toBe(429);
  });

  it("counts by address when the header is configured", async () => {
    const call = limitedApp(1, "client", { CLIENT_IP_HEADER: "CF-Connecting-IP" });
    expect((await call({ "cf-connecting-ip": "203.0.113.7" })).status).toBe(200);
    expect((await call({ "cf-connecting-ip": "203.0.113.7" })).status).toBe(429);
    expect((await call({ "cf-connecting-ip": "203.0.113.8" })).status).toBe(200);
    // Another header carries no weight.
    expect((await call({ "cf-connecting-ip": "203.0.113.8", "x-forwarded-for": "192.0.2.1" })).status).toBe(
      429,
    );
  });

  it("counts IPv6 callers per /64, and anything that is not an address as unknown", async () => {
    const call = limitedApp(1, "client", { CLIENT_IP_HEADER: "cf-connecting-ip" });
    expect((await call({ "cf-connecting-ip": "2001:db8:1:2::1" })).status).toBe(200);
    expect((await call({ "cf-connecting-ip": "2001:db8:1:2:ffff::9" })).status).toBe(429);
    expect((await call({ "cf-connecting-ip": "2001:db8:1:3::1" })).status).toBe(200);
    // The IPv4-mapped form is the IPv4 address.
    expect((await call({ "cf-connecting-ip": "203.0.113.50" })).status).toBe(200);
    expect((await call({ "cf-connecting-ip": "::ffff:203.0.113.50" })).status).toBe(429);
    expect((await call({ "cf-connecting-ip": "not an address" })).status).toBe(200);
    expect((await call({})).status).toBe(429);
    expect((await call({ "cf-connecting-ip": "fe80::1%eth0" })).status).toBe(429);
  });

  it("is a configuration error when the header setting is not a header name", () => {
    const bindings = { ...(env as unknown as Record<string, unknown>), CLIENT_IP_HEADER: "cf connecting ip" };
    expect(() => parseConfig(bindings)).toThrow(/CLIENT_IP_HEADER: must be a header name/);
  });
});
