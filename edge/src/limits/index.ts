// Rate limits (sliding window in Upstash Redis, @upstash/ratelimit) for the
// expensive or abusable routes: sign-in, torrent analysis, job creation.
//
// Who is counted:
// - "user" (the default): the signed-in user. Such a limiter must run after
//   requireUser; run before it, it fails loudly instead of quietly counting
//   by address.
// - "client": the caller's address, for routes that nobody is signed in to.
//   The address is read only from the header named by CLIENT_IP_HEADER, which
//   a proxy in front of the edge sets and overwrites (`cf-connecting-ip` on
//   Cloudflare). Without it, any such header is the client's own words, so
//   every signed-out caller shares one bucket. IPv6 callers are counted per
//   /64, the smallest block a single customer is usually given.
import { Ratelimit } from "@upstash/ratelimit";
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import ipaddr from "ipaddr.js";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors/index.ts";

type Window = `${number} ${"s" | "m" | "h"}`;

/** The key shared by callers whose address is not known. */
export const unknownClient = "client:unknown";

/** The bucket of a signed-out caller: its address from the trusted header, or the shared one. */
export function clientKey(c: Context<AppEnv>): string {
  const header = c.var.config.CLIENT_IP_HEADER;
  const value = header ? c.req.header(header)?.trim() : undefined;
  // A zone id (fe80::1%eth0) is never an address a proxy reports.
  if (!value || value.includes("%") || !ipaddr.isValid(value)) return unknownClient;
  try {
    const address = ipaddr.process(value);
    if (address.kind() === "ipv4") return `client:${address.toString()}`;
    const network = ipaddr.IPv6.networkAddressFromCIDR(`${(address as ipaddr.IPv6).toNormalizedString()}/64`);
    return `client:${network.toString()}/64`;
  } catch {
    return unknownClient;
  }
}

export function rateLimit(name: string, limit: number, window: Window, by: "user" | "client" = "user") {
  return createMiddleware<AppEnv>(async (c, next) => {
    let who: string;
    if (by === "user") {
      const user = c.var.user;
      if (!user) throw new Error(`rate limit "${name}" counts users but runs before requireUser`);
      who = `user:${user.id}`;
    } else {
      who = clientKey(c);
    }
    const limiter = new Ratelimit({
      redis: c.var.redis,
      limiter: Ratelimit.slidingWindow(limit, window),
      prefix: `torreclou:ratelimit:${name}`,
      // The in-memory cache would outlive the request in workerd isolates.
      ephemeralCache: false,
    });
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
