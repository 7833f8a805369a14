// Bindings (vars and secrets) parsed once per isolate. A missing or malformed
// setting fails with a message that names it, never with an undefined later.
import {
  CredentialsError,
  EgressPolicy,
  parseKeyring,
  type SeedPolicy,
  tracingSettings,
} from "@torreclou/contracts";
import { z } from "zod";

/** A setting that may be absent; an empty string counts as absent. */
const optionalString = z
  .string()
  .trim()
  .optional()
  .transform((v) => v || undefined);

/** A URL setting with a default; an empty string counts as absent. */
const urlOr = (fallback: string) =>
  z
    .string()
    .trim()
    .optional()
    .transform((v) => v || fallback)
    .pipe(z.url());

/** A per-user quota: a whole number from `min`, or unset / empty for no limit (null). */
const quota = (min: number) =>
  z
    .string()
    .trim()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined || v === "") return null;
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < min) {
        ctx.addIssue({ code: "custom", message: `must be a whole number ≥ ${min}, or empty for no limit` });
        return z.NEVER;
      }
      return n;
    });

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
  /**
   * How long a magnet job that asked to choose its files waits for the
   * choice once its metadata is known; the reconcile cron cancels it after.
   */
  SELECTION_TIMEOUT_SECONDS: z.coerce
    .number()
    .int()
    .min(1)
    .max(365 * 86_400)
    .default(86_400),
  /** "true" turns on POST /api/auth/dev (local use only); anything else leaves it a 404. */
  DEV_SIGN_IN: z
    .enum(["true", "false", ""])
    .default("false")
    .transform((v) => v === "true"),
  /**
   * Key ring for storage secrets at rest: `keyId:base64(32 random bytes)`,
   * comma-separated; the first key encrypts, every key decrypts (see
   * contracts/src/credentials.ts). Parsed here, once per isolate.
   */
  CREDENTIALS_KEYS: z
    .string({ error: "is required: keyId:base64(32 random bytes)[,keyId:...]" })
    .transform((spec, ctx) => {
      try {
        return parseKeyring(spec);
      } catch (err) {
        if (!(err instanceof CredentialsError)) throw err;
        ctx.addIssue({ code: "custom", message: err.message.replace(/^CREDENTIALS_KEYS:? */, "") });
        return z.NEVER;
      }
    }),
  /**
   * Google sign-in (OAuth client of type "Web application"). All optional so
   * local dev runs without Google; without an id and secret the Google routes
   * answer 503 google_sign_in_unavailable.
   */
  GOOGLE_CLIENT_ID: optionalString,
  GOOGLE_CLIENT_SECRET: optionalString,
  /**
   * The callback URL registered with Google. Defaults to
   * `<origin of the request>/api/auth/google/callback`.
   */
  GOOGLE_REDIRECT_URI: z
    .url()
    .optional()
    .or(z.literal("").transform(() => undefined)),
  /**
   * Google Drive destinations (destinations/gdrive.ts): the OAuth client defaults to
   * the sign-in one (GOOGLE_CLIENT_ID/SECRET); set these to use another (the
   * workers need the same id and secret). Without any, the Drive routes
   * answer 503 google_drive_unavailable.
   */
  GOOGLE_DRIVE_CLIENT_ID: optionalString,
  GOOGLE_DRIVE_CLIENT_SECRET: optionalString,
  /**
   * Google's OAuth and Drive endpoints for the Drive connection. Google's by
   * default; the local stack points them at the Drive double (local/drive).
   */
  GOOGLE_OAUTH_AUTH_URL: urlOr("https://accounts.google.com/o/oauth2/v2/auth"),
  GOOGLE_OAUTH_TOKEN_URL: urlOr("https://oauth2.googleapis.com/token"),
  GOOGLE_OAUTH_REVOKE_URL: urlOr("https://oauth2.googleapis.com/revoke"),
  DRIVE_API_BASE_URL: urlOr("https://www.googleapis.com"),
  /**
   * The Drive connect callback registered with Google. Defaults to
   * `<origin of the request>/api/drive/callback`.
   */
  GOOGLE_DRIVE_REDIRECT_URI: z
    .url()
    .optional()
    .or(z.literal("").transform(() => undefined)),
  /**
   * OneDrive destinations (destinations/onedrive.ts): an app registered in
   * Microsoft Entra ("Accounts in any organizational directory and personal
   * Microsoft accounts", a Web redirect URI, a client secret). Without them
   * the OneDrive routes answer 503 onedrive_unavailable. The workers need the
   * same id and secret.
   */
  MICROSOFT_CLIENT_ID: optionalString,
  MICROSOFT_CLIENT_SECRET: optionalString,
  MICROSOFT_OAUTH_AUTH_URL: urlOr("https://login.microsoftonline.com/common/oauth2/v2.0/authorize"),
  MICROSOFT_OAUTH_TOKEN_URL: urlOr("https://login.microsoftonline.com/common/oauth2/v2.0/token"),
  GRAPH_API_BASE_URL: urlOr("https://graph.microsoft.com"),
  /** Defaults to `<origin of the request>/api/onedrive/callback`. */
  ONEDRIVE_REDIRECT_URI: z
    .url()
    .optional()
    .or(z.literal("").transform(() => undefined)),
  /**
   * Dropbox destinations (destinations/dropbox.ts): an "App folder" app from
   * the Dropbox App Console (its key and secret). Without them the Dropbox
   * routes answer 503 dropbox_unavailable. The workers need the same pair.
   */
  DROPBOX_APP_KEY: optionalString,
  DROPBOX_APP_SECRET: optionalString,
  DROPBOX_OAUTH_AUTH_URL: urlOr("https://www.dropbox.com/oauth2/authorize"),
  DROPBOX_OAUTH_TOKEN_URL: urlOr("https://api.dropboxapi.com/oauth2/token"),
  DROPBOX_API_BASE_URL: urlOr("https://api.dropboxapi.com"),
  /** Defaults to `<origin of the request>/api/dropbox/callback`. */
  DROPBOX_REDIRECT_URI: z
    .url()
    .optional()
    .or(z.literal("").transform(() => undefined)),
  /**
   * The operator's exceptions to the egress policy (contracts/src/egress.ts):
   * exact `host:port` entries, comma- or space-separated, that storage
   * endpoints may name although they are not public (and only these may use
   * http). Empty in production; the local stack allows its own S3 server.
   */
  EGRESS_ALLOW: z
    .string()
    .optional()
    .transform((spec, ctx) => {
      try {
        return EgressPolicy.fromSpec(spec);
      } catch (err) {
        if (!(err instanceof Error)) throw err;
        ctx.addIssue({ code: "custom", message: err.message });
        return z.NEVER;
      }
    }),
  /** Replaced by EGRESS_ALLOW; left at "true" it would silently stop doing anything. */
  ALLOW_PRIVATE_STORAGE_ENDPOINTS: z
    .string()
    .optional()
    .refine((v) => v === undefined || v === "" || v === "false", {
      message: "is no longer read: list the exact host:port exceptions in EGRESS_ALLOW instead",
    }),
  /**
   * The request header that carries the client's address, set by a proxy in
   * front of the edge that overwrites whatever the client sent
   * (`cf-connecting-ip` on Cloudflare). Unset, no header is trusted and
   * signed-out callers share one rate-limit bucket.
   */
  CLIENT_IP_HEADER: z
    .string()
    .trim()
    .toLowerCase()
    .regex(/^([a-z0-9-]+)?$/, "must be a header name, like cf-connecting-ip")
    .optional()
    .transform((v) => v || undefined),
  /**
   * Local only, with DEV_SIGN_IN: an S3 storage profile (the JSON body of
   * POST /api/storage) that the dev sign-in gives an account with no storage,
   * so a new user of the local stack can start a job at once.
   */
  DEV_S3_PROFILE: z
    .string()
    .optional()
    .transform((spec, ctx) => {
      if (spec === undefined || spec.trim() === "") return undefined;
      try {
        const parsed: unknown = JSON.parse(spec);
        if (parsed && typeof parsed === "object" && !Array.isArray(parsed))
          return parsed as Record<string, unknown>;
      } catch {
        // reported below
      }
      ctx.addIssue({ code: "custom", message: "must be a JSON object (the body of POST /api/storage)" });
      return z.NEVER;
    }),
  /**
   * Per-user quotas (null: no limit, the default). Running: a user's jobs
   * that may run at once; the rest wait their turn, queued (never refused).
   * Queued: jobs waiting to start; a new one beyond it is refused (429).
   * Monthly bytes: the selected bytes of the jobs a user creates in a
   * calendar month (UTC); a job that would go beyond it is refused (403).
   */
  QUOTA_RUNNING_JOBS: quota(1),
  QUOTA_QUEUED_JOBS: quota(1),
  QUOTA_MONTHLY_BYTES: quota(0),
  /**
   * The operators: email addresses (comma- or space-separated, any case) of
   * the accounts that see the operator's view (/api/operator, the Operator
   * page). Empty: nobody. Anyone else gets a 404 from those routes, as for a
   * route that does not exist.
   */
  OPERATOR_EMAILS: z
    .string()
    .optional()
    .transform((spec, ctx) => {
      const emails = (spec ?? "")
        .split(/[\s,]+/)
        .map((e) => e.trim().toLowerCase())
        .filter(Boolean);
      const bad = emails.filter((e) => !z.email().safeParse(e).success);
      if (bad.length > 0) {
        ctx.addIssue({ code: "custom", message: `not an email address: ${bad.join(", ")}` });
        return z.NEVER;
      }
      return new Set(emails) as ReadonlySet<string>;
    }),
  /**
   * Seeding back (README, "Seeding back"): the most a job may ask for — a
   * ratio (uploaded ÷ selected bytes) and minutes, whichever comes first —
   * and what a job that asks nothing gets (0: no seeding, the default).
   * Workers cap it again with their own WORKER_SEED_* settings.
   */
  SEED_MAX_RATIO: z.coerce.number().min(0).max(1000).default(2),
  SEED_MAX_MINUTES: z.coerce
    .number()
    .int()
    .min(0)
    .max(366 * 24 * 60)
    .default(24 * 60),
  SEED_DEFAULT_RATIO: z.coerce.number().min(0).max(1000).default(0),
  SEED_DEFAULT_MINUTES: z.coerce
    .number()
    .int()
    .min(0)
    .max(366 * 24 * 60)
    .default(0),
  /** The operator's view calls a resolving, downloading or uploading job stuck after this long without an update. */
  OPERATOR_STUCK_AFTER_SECONDS: z.coerce
    .number()
    .int()
    .min(60)
    .default(30 * 60),
  /** …and a queued job stuck after waiting this long since it was (last) queued. */
  OPERATOR_QUEUED_TOO_LONG_SECONDS: z.coerce
    .number()
    .int()
    .min(60)
    .default(60 * 60),
  /**
   * Tracing (README, "Tracing"): OTEL_EXPORTER_OTLP_ENDPOINT turns it on;
   * OTEL_EXPORTER_OTLP_HEADERS is a secret (`wrangler secret put`).
   */
  ...tracingSettings,
  /** host:port of the local Neon proxy; unset in production. */
  NEON_LOCAL_PROXY: z
    .string()
    .regex(/^[\w.-]+:\d+$/, "must be host:port")
    .optional()
    .or(z.literal("").transform(() => undefined)),
});
export type Config = z.infer<typeof Config>;

/** The operator's seeding limits and default, as contracts' boundSeed reads them. */
export function seedPolicyOf(config: Config): SeedPolicy {
  return {
    maxRatio: config.SEED_MAX_RATIO,
    maxMinutes: config.SEED_MAX_MINUTES,
    defaultRatio: config.SEED_DEFAULT_RATIO,
    defaultMinutes: config.SEED_DEFAULT_MINUTES,
  };
}

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
