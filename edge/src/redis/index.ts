// Upstash Redis over REST: one client per request is cheap (plain fetch).
import { Redis } from "@upstash/redis/cloudflare";
import type { Config } from "../config.ts";

export function createRedis(
  config: Pick<Config, "UPSTASH_REDIS_REST_URL" | "UPSTASH_REDIS_REST_TOKEN">,
): Redis {
  return new Redis({ url: config.UPSTASH_REDIS_REST_URL, token: config.UPSTASH_REDIS_REST_TOKEN });
}
