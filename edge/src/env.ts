// The Hono environment every route and middleware shares: its own module, so
// helpers can name it without importing the app that imports them.
import type { Redis } from "@upstash/redis/cloudflare";
import type { NeonDatabase } from "drizzle-orm/neon-serverless";
import type { CurrentUser } from "./auth/index.ts";
import type { Config } from "./config.ts";

export interface AppEnv {
  Bindings: Record<string, unknown>;
  Variables: {
    config: Config;
    redis: Redis;
    /** The request's database, opened on first use and closed after the response. */
    db: () => NeonDatabase;
    user: CurrentUser;
  };
}
