// Worker settings, read from the environment once and typed.

import { createHash } from "node:crypto";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import {
  type AllowedTarget,
  defaultWebhookRetryDelaysMs,
  normalHost,
  parseAllowList,
  queue,
  tracingSettings,
} from "@torreclou/contracts";
import { z } from "zod";

const flag = z
  .enum(["true", "false", "1", "0", "yes", "no", "on", "off"])
  .transform((value) => ["true", "1", "yes", "on"].includes(value));

/** A setting that may be absent; an empty string counts as absent. */
const optionalText = z
  .string()
  .trim()
  .optional()
  .transform((v) => v || undefined);

const Config = z.object({
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// connection string"),
  REDIS_URL: z.string().regex(/^rediss?:\/\//, "must be a redis:// or rediss:// URL"),
  WORKER_HTTP_PORT: z.coerce.number().int().min(0).max(65535).default(9464),
  /** Interface of the health/metrics server; 0.0.0.0 in containers. */
  WORKER_HTTP_HOST: z.string().min(1).default("127.0.0.1"),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  /** Name of this worker in the consumer group and in lease values; unique per process. */
  WORKER_ID: z.string().min(1).optional(),
  /** Jobs this process runs at once. */
  WORKER_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(2),
  /**
   * Magnets' file lists this process fetches at once, apart from the download
   * slots (a job whose user picks its files; no scratch disk used).
   */
  WORKER_METADATA_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(4),
  WORKER_LEASE_MS: z.coerce.number().int().min(1000).default(queue.leaseMs),
  /**
   * How long an idle worker blocks on the jobs stream between two looks at the
   * group while nothing runs anywhere: one blocking read and one look per
   * period (a `watch` notice wakes it at once when a job starts somewhere).
   */
  WORKER_IDLE_CHECK_MS: z.coerce.number().int().min(100).default(120_000),
  /**
   * How long the errand loop (swarm-health requests, webhook wakes) blocks when
   * nothing is due; also the idle period of the metadata stream's read and look.
   */
  WORKER_ERRAND_BLOCK_MS: z.coerce.number().int().min(100).default(300_000),
  /** Default: a folder of this stack's own under $TMPDIR/torreclou-scratch (see `stackIdOf`). */
  WORKER_SCRATCH_DIR: z.string().min(1).optional(),
  /** Disk this process may fill with downloads at once (default 20 GiB). */
  WORKER_SCRATCH_BUDGET_BYTES: z.coerce
    .number()
    .int()
    .min(1)
    .default(20 * 1024 ** 3),
  /**
   * A job that receives no verified piece for this long while it waits for
   * data fails, naming what it tried: a peer or web seed that connects but
   * sends nothing does not keep a job (its slot and disk) forever.
   */
  WORKER_STALL_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(1000)
    .default(5 * 60_000),
  /**
   * Delays (ms, comma-separated) before each retry of a webhook delivery that
   * got no 2xx; after the last it is given up. Default: the Standard Webhooks
   * schedule, about 28 hours.
   */
  WEBHOOK_RETRY_DELAYS_MS: z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value.trim() === "") return [...defaultWebhookRetryDelaysMs];
      const delays = value.split(",").map((part) => Number(part.trim()));
      if (delays.some((d) => !Number.isInteger(d) || d < 0)) {
        ctx.addIssue({ code: "custom", message: "must be whole milliseconds, comma-separated" });
        return z.NEVER;
      }
      return delays;
    }),
  /** How long a tracker has to answer a swarm-health scrape. */
  WORKER_SCRAPE_TIMEOUT_MS: z.coerce.number().int().min(100).default(10_000),
  /** How long a webhook endpoint has to answer a delivery. */
  WEBHOOK_TIMEOUT_MS: z.coerce.number().int().min(100).default(15_000),
  /** A job with no connected peer for this long fails. */
  WORKER_NO_PEERS_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(1000)
    .default(5 * 60_000),
  /**
   * How long a job waits for a storage provider that does not answer (or
   * answers 5xx / 429) before failing; meanwhile its uploads pause and it shows
   * "waiting for storage".
   */
  WORKER_STORAGE_OUTAGE_MS: z.coerce
    .number()
    .int()
    .min(1000)
    .default(30 * 60_000),
  /** Upload parts in flight per job. */
  WORKER_UPLOAD_CONCURRENCY: z.coerce.number().int().min(1).max(32).default(4),
  /** Smallest multipart part (S3 requires >= 5 MiB except the last). */
  WORKER_PART_SIZE_BYTES: z.coerce
    .number()
    .int()
    .min(5 * 1024 * 1024)
    .default(8 * 1024 * 1024),
  /** Upper bound a SIGTERM waits for running jobs to be handed back. */
  WORKER_SHUTDOWN_MS: z.coerce.number().int().min(1000).default(20_000),
  /**
   * BitTorrent discovery; trackers are always on. DHT peers pass the egress
   * policy like any other. Local Service Discovery announces on the host's
   * LAN, and UPnP / NAT-PMP ask its router to open a port: off unless the
   * operator wants them (workers need no inbound port).
   */
  WORKER_DHT: flag.default(true),
  WORKER_LSD: flag.default(false),
  WORKER_NAT_UPNP: flag.default(false),
  WORKER_NAT_PMP: flag.default(false),
  /**
   * Exceptions to the egress policy: exact `host:port` entries (comma or
   * space separated, IPv6 hosts in brackets) a job may connect to although
   * they are private, loopback, etc. The Drive endpoints configured below are
   * added to it.
   */
  EGRESS_ALLOW: z
    .string()
    .optional()
    .transform((value, ctx) => {
      try {
        return parseAllowList(value);
      } catch (error) {
        ctx.addIssue({ code: "custom", message: (error as Error).message });
        return z.NEVER;
      }
    }),
  WORKER_UTP: flag.default(false),
  /**
   * Seeding back (README, "Seeding back"): torrents this process keeps
   * seeding at once after their jobs are stored, apart from its download
   * slots. 0 turns seeding off on this worker.
   */
  WORKER_SEED_MAX_TORRENTS: z.coerce.number().int().min(0).max(256).default(4),
  /** The most of a job's seeding this worker honours: ratio (uploaded ÷ selected bytes) and minutes. */
  WORKER_SEED_MAX_RATIO: z.coerce.number().min(0).max(1000).default(10),
  WORKER_SEED_MAX_MINUTES: z.coerce
    .number()
    .int()
    .min(0)
    .default(7 * 24 * 60),
  /**
   * Whether a job whose files are no longer on this worker's disk (streamed
   * through the budget) seeds by reading pieces back from the stored
   * objects: every byte seeded that way is a ranged GET the provider bills
   * as egress, about the torrent's size × the ratio. Off by default.
   */
  WORKER_SEED_FROM_STORAGE: flag.default(false),
  /** Peer connections per torrent. */
  WORKER_MAX_CONNS: z.coerce.number().int().min(1).default(55),
  /**
   * Google Drive destinations: the OAuth client the edge connects Drive with
   * (the same id and secret). Without them a Drive job fails with a message
   * for the operator.
   */
  GOOGLE_CLIENT_ID: z
    .string()
    .trim()
    .optional()
    .transform((v) => v || undefined),
  GOOGLE_CLIENT_SECRET: z
    .string()
    .trim()
    .optional()
    .transform((v) => v || undefined),
  /** Drive API base; the local stack points it at the Drive double. */
  DRIVE_API_BASE_URL: z.url().default("https://www.googleapis.com"),
  /** Google's OAuth token endpoint (refresh_token grant). */
  GOOGLE_OAUTH_TOKEN_URL: z.url().default("https://oauth2.googleapis.com/token"),
  /** Bytes per Drive upload request; a multiple of 256 KiB. */
  WORKER_DRIVE_CHUNK_BYTES: z.coerce
    .number()
    .int()
    .min(256 * 1024)
    .refine((v) => v % (256 * 1024) === 0, "must be a multiple of 262144 (256 KiB)")
    .default(8 * 1024 * 1024),
  /**
   * OneDrive destinations: the Microsoft OAuth client the edge connects
   * OneDrive with (the same id and secret), Microsoft's token endpoint and
   * Graph. Without the client a OneDrive job fails with a message for the operator.
   */
  MICROSOFT_CLIENT_ID: optionalText,
  MICROSOFT_CLIENT_SECRET: optionalText,
  MICROSOFT_OAUTH_TOKEN_URL: z.url().default("https://login.microsoftonline.com/common/oauth2/v2.0/token"),
  GRAPH_API_BASE_URL: z.url().default("https://graph.microsoft.com"),
  /** Bytes per OneDrive upload request; a multiple of 320 KiB. */
  WORKER_ONEDRIVE_CHUNK_BYTES: z.coerce
    .number()
    .int()
    .min(320 * 1024)
    .refine((v) => v % (320 * 1024) === 0, "must be a multiple of 327680 (320 KiB)")
    .default(32 * 320 * 1024),
  /** Dropbox destinations: the app's key and secret (the edge's), Dropbox's token endpoint and APIs. */
  DROPBOX_APP_KEY: optionalText,
  DROPBOX_APP_SECRET: optionalText,
  DROPBOX_OAUTH_TOKEN_URL: z.url().default("https://api.dropboxapi.com/oauth2/token"),
  DROPBOX_API_BASE_URL: z.url().default("https://api.dropboxapi.com"),
  DROPBOX_CONTENT_BASE_URL: z.url().default("https://content.dropboxapi.com"),
  /** Bytes per Dropbox append (at most 150 MiB). */
  WORKER_DROPBOX_CHUNK_BYTES: z.coerce
    .number()
    .int()
    .min(1)
    .max(150 * 1024 * 1024)
    .default(8 * 1024 * 1024),
  /**
   * What this worker reports as its version in its heartbeat record (the
   * operator's view); default: the image's build id if given, else the
   * package version.
   */
  WORKER_VERSION: optionalText,
  /**
   * Fleet-wide gauges from Postgres (queued jobs, oldest queued, stuck and
   * exhausted jobs) on this worker's /metrics, read when Prometheus scrapes.
   * Off by default: each scrape then wakes Postgres (Neon bills compute), so
   * turn it on for one worker of the fleet, or a Prometheus that scrapes rarely.
   */
  WORKER_FLEET_METRICS: flag.default(false),
  /** For those gauges: a running job without an update for this long is stuck (the edge's setting too). */
  OPERATOR_STUCK_AFTER_SECONDS: z.coerce
    .number()
    .int()
    .min(60)
    .default(30 * 60),
  /** …and a queued job waiting this long since it was (last) queued. */
  OPERATOR_QUEUED_TOO_LONG_SECONDS: z.coerce
    .number()
    .int()
    .min(60)
    .default(60 * 60),
  /**
   * Tracing (README, "Tracing"): OTEL_EXPORTER_OTLP_ENDPOINT turns it on;
   * OTEL_EXPORTER_OTLP_HEADERS is a secret, never logged.
   */
  ...tracingSettings,
  /** Key ring for storage secrets: `keyId:base64(32 bytes)`, comma-separated. */
  CREDENTIALS_KEYS: z
    .string()
    .min(
      1,
      "set it to keyId:base64(32 bytes), the same key ring the edge uses (see contracts/src/credentials.ts)",
    ),
});
export type Config = Omit<z.infer<typeof Config>, "WORKER_SCRATCH_DIR"> & {
  WORKER_ID: string;
  WORKER_SCRATCH_DIR: string;
  /** Which Postgres + Redis this worker serves (no secrets): its scratch folders are marked with it. */
  STACK_ID: string;
};

/**
 * A stable id of the stack a worker serves, from the database and Redis it
 * uses (host, port, database; never credentials). Two stacks on one host get
 * different default scratch folders and never delete each other's downloads.
 */
export function stackIdOf(databaseUrl: string, redisUrl: string): string {
  const where = (raw: string) => {
    const url = new URL(raw);
    return `${url.hostname}:${url.port}${url.pathname}`;
  };
  return createHash("sha256")
    .update(`${where(databaseUrl)}|${where(redisUrl)}`)
    .digest("hex")
    .slice(0, 16);
}

/** host:port of a configured URL (default ports filled in), for the egress allow list. */
function targetOf(raw: string): AllowedTarget {
  const url = new URL(raw);
  const port = url.port ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
  return { host: normalHost(url.hostname), port };
}

/** Each host:port once, in first-seen order. */
function distinct(targets: AllowedTarget[]): AllowedTarget[] {
  const seen = new Set<string>();
  return targets.filter((t) => {
    const key = `${t.host}:${t.port}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const result = Config.safeParse(env);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`);
    throw new Error(`invalid worker configuration: ${problems.join("; ")}`);
  }
  const id =
    result.data.WORKER_ID ?? `${hostname()}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const stack = stackIdOf(result.data.DATABASE_URL, result.data.REDIS_URL);
  return {
    ...result.data,
    WORKER_ID: id,
    STACK_ID: stack,
    WORKER_SCRATCH_DIR: result.data.WORKER_SCRATCH_DIR ?? join(tmpdir(), "torreclou-scratch", stack),
    // The providers' endpoints are the operator's choice, not a user's.
    EGRESS_ALLOW: distinct([
      ...result.data.EGRESS_ALLOW,
      targetOf(result.data.DRIVE_API_BASE_URL),
      targetOf(result.data.GOOGLE_OAUTH_TOKEN_URL),
      targetOf(result.data.GRAPH_API_BASE_URL),
      targetOf(result.data.MICROSOFT_OAUTH_TOKEN_URL),
      targetOf(result.data.DROPBOX_API_BASE_URL),
      targetOf(result.data.DROPBOX_CONTENT_BASE_URL),
      targetOf(result.data.DROPBOX_OAUTH_TOKEN_URL),
    ]),
  };
}
