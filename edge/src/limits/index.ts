// Rate limits (sliding window in Upstash Redis, @upstash/ratelimit) for the
// expensive or abusable routes: sign-in, torrent analysis, job creation.
// Keyed by user when signed in, else by client IP.
import { Ratelimit } from "@upstash/ratelimit";
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../app.ts";
import { ApiError } from "../errors/index.ts";

type Window = `${number} ${"s" | "m" | "h"}`;

export function rateLimit(name: string, limit: number, window: Window) {
  return createMiddleware<AppEnv>(async (c, next) => {
    const limiter = new Ratelimit({
      redis: c.var.redis,
      limiter: Ratelimit.slidingWindow(limit, window),
      prefix: `torreclou:ratelimit:${name}`,
      // The in-memory cache would outlive the request in workerd isolates.
      ephemeralCache: false,
    });
    const who = c.var.user?.id ?? c.req.header("cf-connecting-ip") ?? "anonymous";
    const result = await limiter.limit(who);
    c.header("RateLimit-Limit", String(result.limit));
    c.header("RateLimit-Remaining", String(result.remaining));
    if (!result.success) {
      const retryAfter = Math.max(1, Math.ceil((result.reset - Date.now()) / 1000));
      c.header("Retry-After", String(retryAfter));
      throw new ApiError(429, "rate_limited", `Too many requests; try again in ${retryAfter} s.`, {
        retryAfter,
      });
    }
    await next();
  });
}
