// Worker settings, read from the environment once and typed.

import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { queue } from "@torreclou/contracts";
import { z } from "zod";

const flag = z
  .enum(["true", "false", "1", "0", "yes", "no", "on", "off"])
  .transform((value) => ["true", "1", "yes", "on"].includes(value));

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
  WORKER_LEASE_MS: z.coerce.number().int().min(1000).default(queue.leaseMs),
  WORKER_SCRATCH_DIR: z.string().min(1).default(join(tmpdir(), "torreclou-scratch")),
  /** Disk this process may fill with downloads at once (default 20 GiB). */
  WORKER_SCRATCH_BUDGET_BYTES: z.coerce
    .number()
    .int()
    .min(1)
    .default(20 * 1024 ** 3),
  /** A job with no connected peer for this long fails. */
  WORKER_NO_PEERS_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(1000)
    .default(5 * 60_000),
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
  /** BitTorrent discovery; trackers are always on. */
  WORKER_DHT: flag.default(true),
  WORKER_LSD: flag.default(true),
  WORKER_NAT_UPNP: flag.default(true),
  WORKER_NAT_PMP: flag.default(true),
  WORKER_UTP: flag.default(false),
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
  /** Key ring for storage secrets: `keyId:base64(32 bytes)`, comma-separated. */
  CREDENTIALS_KEYS: z
    .string()
    .min(
      1,
      "set it to keyId:base64(32 bytes), the same key ring the edge uses (see contracts/src/credentials.ts)",
    ),
});
export type Config = z.infer<typeof Config> & { WORKER_ID: string };

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const result = Config.safeParse(env);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`);
    throw new Error(`invalid worker configuration: ${problems.join("; ")}`);
  }
  const id =
    result.data.WORKER_ID ?? `${hostname()}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  return { ...result.data, WORKER_ID: id };
}
