// Bindings (vars and secrets) parsed once per isolate. A missing or malformed
// setting fails with a message that names it, never with an undefined later.
import { z } from "zod";

const Config = z.object({
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// connection string"),
  UPSTASH_REDIS_REST_URL: z.url(),
  UPSTASH_REDIS_REST_TOKEN: z.string().min(1),
  WEB_ORIGIN: z.url().default("http://localhost:5173"),
  /** Signs session JWTs (HS256). */
  SESSION_SECRET: z.string().min(32, "must be at least 32 characters"),
  SESSION_TTL_SECONDS: z.coerce
    .number()
    .int()
    .min(60)
    .max(30 * 86_400)
    .default(86_400),
  /** "true" turns on POST /api/auth/dev (local use only); anything else leaves it a 404. */
  DEV_SIGN_IN: z
    .enum(["true", "false", ""])
    .default("false")
    .transform((v) => v === "true"),
  /** host:port of the local Neon proxy; unset in production. */
  NEON_LOCAL_PROXY: z
    .string()
    .regex(/^[\w.-]+:\d+$/, "must be host:port")
    .optional()
    .or(z.literal("").transform(() => undefined)),
});
export type Config = z.infer<typeof Config>;

export class ConfigError extends Error {
  readonly issues: string[];
  constructor(issues: string[]) {
    super(`invalid configuration: ${issues.join("; ")}`);
    this.issues = issues;
    this.name = "ConfigError";
  }
}

const cache = new WeakMap<object, Config>();

export function parseConfig(bindings: Record<string, unknown>): Config {
  const cached = cache.get(bindings);
  if (cached) return cached;
  const result = Config.safeParse(bindings);
  if (!result.success) {
    throw new ConfigError(result.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`));
  }
  cache.set(bindings, result.data);
  return result.data;
}
