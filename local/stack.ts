// The local cloud in one call: each stand-in started in dependency order, its
// readiness awaited, and one environment handed to whatever runs on top
// (the launcher's edge/worker/web, or the test runner's tests).
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { migrate } from "../drizzle/migrate.ts";
import { startDriveDouble } from "./drive/server.ts";
import { startDropboxDouble } from "./dropbox/server.ts";
import { startNeonProxy } from "./neon/proxy.ts";
import { startOneDriveDouble } from "./onedrive/server.ts";
import { startPostgres } from "./postgres.ts";
import { type LogSink, portOpen, type Service } from "./process.ts";
import { startRedis } from "./redis.ts";
import { startS3 } from "./s3.ts";
import { startSeeder } from "./seeder/index.ts";
import { startUpstashServer } from "./upstash/server.ts";

export const portNames = [
  "postgres",
  "redis",
  "neon",
  "upstash",
  "s3",
  "tracker",
  "peer",
  "edge",
  "web",
  "worker",
  "inspector",
  "drive",
  "onedrive",
  "dropbox",
  "webseed",
] as const;
export type PortName = (typeof portNames)[number];
export type Ports = Record<PortName, number>;

/** Fixed ports of `npm run dev`, chosen to stay clear of system services. */
export const defaultPorts: Ports = {
  postgres: 54329,
  redis: 63790,
  neon: 4444,
  upstash: 8079,
  s3: 4569,
  tracker: 6969,
  peer: 6881,
  edge: 8787,
  web: 5173,
  worker: 9464,
  inspector: 9230,
  drive: 4580,
  onedrive: 4581,
  dropbox: 4582,
  webseed: 4583,
};

/** Consecutive ports from `first`, in the order of `portNames`. */
export function portsFrom(first: number): Ports {
  return Object.fromEntries(portNames.map((name, i) => [name, first + i])) as Ports;
}

/**
 * A block of free consecutive ports for a whole stack (tests that start one with
 * local/dev.ts), below the kernel's ephemeral range (32768+), which wrangler,
 * browsers and outgoing connections draw from.
 */
export async function freePortRange(): Promise<Ports> {
  for (;;) {
    const base = 20000 + Math.floor(Math.random() * 12000);
    const ports = portsFrom(base);
    const busy = await Promise.all(portNames.map((name) => portOpen(ports[name])));
    if (!busy.some(Boolean)) return ports;
  }
}

/** Local-only credentials: they guard nothing outside this machine. */
export const localSecrets = {
  upstashToken: "torreclou-local-upstash-token",
  s3AccessKeyId: "torreclou",
  s3SecretAccessKey: "torreclou-local-secret",
  s3Bucket: "torreclou",
  /** The OAuth client the edge and the workers present to the local Google (the Drive double). */
  googleClientId: "torreclou-local.apps.googleusercontent.com",
  googleClientSecret: "torreclou-local-google-secret",
  /** The OAuth clients the edge and the workers present to the OneDrive and Dropbox doubles. */
  microsoftClientId: "torreclou-local-microsoft-client",
  microsoftClientSecret: "torreclou-local-microsoft-secret",
  dropboxAppKey: "torreclou-local-dropbox-app",
  dropboxAppSecret: "torreclou-local-dropbox-secret",
};

/** The web origin the edge's tests run with (edge/vitest.config.ts WEB_ORIGIN). */
export const testWebOrigin = "http://127.0.0.1:5173";

/** The storage profile the dev sign-in gives a new account, pointing at the local S3 server. */
export const localS3ProfileName = "Local S3 (dev stack)";

/** The dev stack's operator (OPERATOR_EMAILS): sign in with it to see the Operator page. */
export const localOperatorEmail = "operator@example.com";

/**
 * The local key ring for storage secrets (CREDENTIALS_KEYS, see
 * contracts/src/credentials.ts): one random key, made the first time a data
 * folder is used and kept there, so profiles saved in dev stay readable across
 * restarts. Every data folder has its own; production sets its own keys.
 */
export function localCredentialsKeys(dataDir: string): string {
  const file = join(dataDir, "credentials-keys");
  if (!existsSync(file)) {
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(file, `local-1:${randomBytes(32).toString("base64")}\n`, { mode: 0o600, flag: "wx" });
  }
  return readFileSync(file, "utf8").trim();
}

export interface StackOptions {
  dataDir: string;
  ports: Ports;
  log: LogSink;
  /** Durable data (dev) or fast throwaway data (tests). */
  ephemeral: boolean;
  /** Which optional parts to run; the databases always run. */
  s3?: boolean;
  seeder?: boolean;
  drive?: boolean;
  /** The OneDrive and Dropbox doubles. */
  clouds?: boolean;
  /** The demo seeder's upload limit (aria2c syntax, e.g. "300K"); unlimited by default. */
  seedRate?: string;
  /** More Postgres server settings (see PostgresOptions.settings). */
  postgresSettings?: Record<string, string>;
}

export interface Stack {
  env: Record<string, string>;
  services: Service[];
  /** Adds a service started on top, so `stop` takes it down first. */
  add(service: Service): void;
  stop(): Promise<void>;
}

export async function startStack(options: StackOptions): Promise<Stack> {
  const { dataDir, ports, log, ephemeral } = options;
  const services: Service[] = [];
  const env: Record<string, string> = {};
  const stack: Stack = {
    env,
    services,
    add(service) {
      services.push(service);
      Object.assign(env, service.env);
    },
    async stop() {
      for (const service of services.splice(0).reverse()) {
        await service.stop().catch((err: unknown) => log(service.name, `stop failed: ${String(err)}`));
      }
    },
  };
  // Shared by the edge and the workers, like the real deployment's secret.
  env.CREDENTIALS_KEYS = localCredentialsKeys(dataDir);
  try {
    stack.add(
      await startPostgres({
        port: ports.postgres,
        dataDir,
        database: "torreclou",
        log,
        ephemeral,
        settings: options.postgresSettings,
      }),
    );
    // With the key ring, so jobs saved before sources were encrypted get encrypted.
    await migrate(env.DATABASE_URL!, { credentialsKeys: env.CREDENTIALS_KEYS });
    log("postgres", "migrations up to date");
    stack.add(await startRedis({ port: ports.redis, dataDir, log, ephemeral }));
    stack.add(
      await startNeonProxy({ port: ports.neon, postgres: { host: "127.0.0.1", port: ports.postgres }, log }),
    );
    stack.add(
      await startUpstashServer({
        port: ports.upstash,
        redisUrl: env.REDIS_URL!,
        token: localSecrets.upstashToken,
        log,
      }),
    );
    if (options.s3 !== false) {
      stack.add(
        await startS3({
          port: ports.s3,
          dataDir: join(dataDir, "s3"),
          bucket: localSecrets.s3Bucket,
          accessKeyId: localSecrets.s3AccessKeyId,
          secretAccessKey: localSecrets.s3SecretAccessKey,
          // The web app's (browser transfers), and the edge tests' WEB_ORIGIN.
          corsOrigins: [
            ...new Set([`http://127.0.0.1:${ports.web}`, `http://localhost:${ports.web}`, testWebOrigin]),
          ],
          log,
        }),
      );
    }
    if (options.drive !== false) {
      // Google's OAuth endpoints (consent screen, token, revoke) and the Drive API, offline.
      // Its env: DRIVE_API_BASE_URL, GOOGLE_OAUTH_AUTH_URL, GOOGLE_OAUTH_TOKEN_URL, GOOGLE_OAUTH_REVOKE_URL.
      stack.add(await startDriveDouble({ port: ports.drive, dataDir: join(dataDir, "drive"), log }));
    }
    if (options.clouds !== false) {
      // Microsoft's identity platform and Graph, and Dropbox's OAuth and API, offline.
      // Their env: GRAPH_API_BASE_URL, MICROSOFT_OAUTH_*_URL; DROPBOX_API_BASE_URL,
      // DROPBOX_CONTENT_BASE_URL, DROPBOX_OAUTH_*_URL.
      stack.add(await startOneDriveDouble({ port: ports.onedrive, dataDir: join(dataDir, "onedrive"), log }));
      stack.add(await startDropboxDouble({ port: ports.dropbox, dataDir: join(dataDir, "dropbox"), log }));
    }
    if (options.seeder !== false) {
      stack.add(
        await startSeeder({
          dataDir: join(dataDir, "seeder"),
          trackerPort: ports.tracker,
          peerPort: ports.peer,
          // The demo torrent's web seed, so a browser can transfer it too.
          webSeedPort: ports.webseed,
          log,
          ...(options.seedRate ? { uploadLimit: options.seedRate } : {}),
        }),
      );
    }
    return stack;
  } catch (err) {
    await stack.stop();
    throw err;
  }
}
