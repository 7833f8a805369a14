// `npm run dev`: the whole local stack and the app, until Ctrl-C.
//
//   --data-dir DIR    where local data lives (default .local/dev, git-ignored)
//   --ports-from N    use N, N+1, ... instead of the fixed default ports
//   --seed-rate R     the demo seeder uploads at most R (aria2c syntax, e.g. 300K),
//                     to watch a job's progress at a human pace
//   --no-worker       everything but the worker: jobs wait in the queue, and what
//                     the browser does by itself (its own torrent engine) shows
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { answers, spawnEdge } from "./edge.ts";
import { prefixedLog, type Service, spawnService } from "./process.ts";
import {
  defaultPorts,
  localOperatorEmail,
  localS3ProfileName,
  localSecrets,
  type Ports,
  portsFrom,
  type Stack,
  startStack,
} from "./stack.ts";

const root = resolve(import.meta.dirname, "..");
const log = prefixedLog;

/** A random secret made once per data folder and kept there. */
function localSecret(dataDir: string, name: string): string {
  const file = join(dataDir, name);
  if (!existsSync(file)) writeFileSync(file, randomBytes(32).toString("base64url"), { mode: 0o600 });
  return readFileSync(file, "utf8").trim();
}

async function startEdge(stack: Stack, ports: Ports, dataDir: string): Promise<Service> {
  const vars = {
    DATABASE_URL: stack.env.DATABASE_URL,
    NEON_LOCAL_PROXY: stack.env.NEON_LOCAL_PROXY,
    UPSTASH_REDIS_REST_URL: stack.env.UPSTASH_REDIS_REST_URL,
    UPSTASH_REDIS_REST_TOKEN: stack.env.UPSTASH_REDIS_REST_TOKEN,
    WEB_ORIGIN: `http://127.0.0.1:${ports.web}`,
    SESSION_SECRET: localSecret(dataDir, "session-secret"),
    // Local only: sign in with any email, no Google account needed.
    DEV_SIGN_IN: "true",
    // Signed in with this email, one sees the Operator page.
    OPERATOR_EMAILS: localOperatorEmail,
    // The stack's key ring for storage secrets; the worker gets the same one.
    CREDENTIALS_KEYS: stack.env.CREDENTIALS_KEYS,
    // The egress policy's exceptions: storage profiles may name exactly the
    // local S3 server (http, on loopback), nothing else that is not public.
    EGRESS_ALLOW: `127.0.0.1:${ports.s3}`,
    // wrangler dev passes on a CF-Connecting-IP the client sent itself: trust no header.
    CLIENT_IP_HEADER: "",
    // Connecting Google Drive runs against the Drive double: its consent screen
    // approves at once for the signed-in email. A Drive-only client, so Google
    // sign-in stays off locally.
    GOOGLE_DRIVE_CLIENT_ID: localSecrets.googleClientId,
    GOOGLE_DRIVE_CLIENT_SECRET: localSecrets.googleClientSecret,
    GOOGLE_OAUTH_AUTH_URL: stack.env.GOOGLE_OAUTH_AUTH_URL,
    GOOGLE_OAUTH_TOKEN_URL: stack.env.GOOGLE_OAUTH_TOKEN_URL,
    GOOGLE_OAUTH_REVOKE_URL: stack.env.GOOGLE_OAUTH_REVOKE_URL,
    DRIVE_API_BASE_URL: stack.env.DRIVE_API_BASE_URL,
    // Connecting OneDrive and Dropbox runs against their doubles, which approve at once.
    MICROSOFT_CLIENT_ID: localSecrets.microsoftClientId,
    MICROSOFT_CLIENT_SECRET: localSecrets.microsoftClientSecret,
    MICROSOFT_OAUTH_AUTH_URL: stack.env.MICROSOFT_OAUTH_AUTH_URL,
    MICROSOFT_OAUTH_TOKEN_URL: stack.env.MICROSOFT_OAUTH_TOKEN_URL,
    GRAPH_API_BASE_URL: stack.env.GRAPH_API_BASE_URL,
    DROPBOX_APP_KEY: localSecrets.dropboxAppKey,
    DROPBOX_APP_SECRET: localSecrets.dropboxAppSecret,
    DROPBOX_OAUTH_AUTH_URL: stack.env.DROPBOX_OAUTH_AUTH_URL,
    DROPBOX_OAUTH_TOKEN_URL: stack.env.DROPBOX_OAUTH_TOKEN_URL,
    DROPBOX_API_BASE_URL: stack.env.DROPBOX_API_BASE_URL,
    // A new account gets the local S3 bucket as its storage, so the first job needs no setup.
    DEV_S3_PROFILE: JSON.stringify({
      name: localS3ProfileName,
      endpoint: stack.env.S3_ENDPOINT,
      region: "us-east-1",
      bucket: localSecrets.s3Bucket,
      forcePathStyle: true,
      accessKeyId: localSecrets.s3AccessKeyId,
      secretAccessKey: localSecrets.s3SecretAccessKey,
    }),
  };
  const edge = await spawnEdge({ vars, port: ports.edge, inspectorPort: ports.inspector, dataDir, log });
  const url = edge.url;
  return { name: "edge", env: { EDGE_URL: url }, urls: [`edge API  ${url}/api`], stop: edge.stop };
}

async function startWorker(stack: Stack, ports: Ports): Promise<Service> {
  const url = `http://127.0.0.1:${ports.worker}`;
  const worker = await spawnService("worker", process.execPath, {
    // The same V8 flags as the worker image (node-worker/Dockerfile).
    args: [
      "--max-semi-space-size=4",
      "--initial-old-space-size=64",
      join(root, "node-worker", "src", "main.ts"),
    ],
    cwd: root,
    env: {
      ...process.env,
      ...stack.env,
      WORKER_HTTP_PORT: String(ports.worker),
      // The fleet gauges on /metrics (local Postgres: a scrape costs nothing).
      WORKER_FLEET_METRICS: "true",
      // Exactly the local services a job may reach on loopback: the S3 server,
      // the demo tracker, its seeder and web seed (the Drive double's URLs are
      // allowed by the worker itself, as configured endpoints).
      EGRESS_ALLOW: [ports.s3, ports.tracker, ports.peer, ports.webseed]
        .map((port) => `127.0.0.1:${port}`)
        .join(","),
      // Uploads to Google Drive go to the Drive double (its URLs come with stack.env).
      GOOGLE_CLIENT_ID: localSecrets.googleClientId,
      GOOGLE_CLIENT_SECRET: localSecrets.googleClientSecret,
      // And to OneDrive and Dropbox, their doubles (URLs from stack.env).
      MICROSOFT_CLIENT_ID: localSecrets.microsoftClientId,
      MICROSOFT_CLIENT_SECRET: localSecrets.microsoftClientSecret,
      DROPBOX_APP_KEY: localSecrets.dropboxAppKey,
      DROPBOX_APP_SECRET: localSecrets.dropboxAppSecret,
    },
    log,
    ready: () => answers(`${url}/healthz`),
  });
  return { name: "worker", env: {}, urls: [`worker    ${url}/metrics`], stop: worker.stop };
}

async function startWeb(stack: Stack, ports: Ports): Promise<Service> {
  const url = `http://127.0.0.1:${ports.web}`;
  const web = await spawnService("web", process.execPath, {
    args: [join(root, "web", "node_modules", "vite", "bin", "vite.js"), "--clearScreen", "false"],
    cwd: join(root, "web"),
    env: { ...process.env, WEB_PORT: String(ports.web), EDGE_URL: stack.env.EDGE_URL ?? "" },
    log,
    ready: () => answers(url),
  });
  return { name: "web", env: { WEB_URL: url }, urls: [`web app   ${url}`], stop: web.stop };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      "data-dir": { type: "string" },
      "ports-from": { type: "string" },
      "seed-rate": { type: "string" },
      "no-worker": { type: "boolean" },
    },
  });
  const dataDir = resolve(values["data-dir"] ?? join(root, ".local", "dev"));
  const ports = values["ports-from"] ? portsFrom(Number(values["ports-from"])) : defaultPorts;
  mkdirSync(dataDir, { recursive: true });

  let stack: Stack | undefined;
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) {
      log("local", "second signal: killing everything now");
      process.exit(130);
    }
    stopping = true;
    log("local", `${signal}: stopping every service`);
    await stack?.stop();
    log("local", "all stopped");
    process.exit(0);
  };
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const)
    process.on(signal, () => void shutdown(signal));
  // Started by local/bootstrap.mjs (`npm run dev`): when it is gone, so are we.
  process.on("disconnect", () => void shutdown("launcher gone"));

  try {
    const seedRate = values["seed-rate"];
    if (seedRate !== undefined && !/^\d+[KM]?$/.test(seedRate)) {
      throw new Error(`--seed-rate must be bytes per second like 300K or 2M, not "${seedRate}"`);
    }
    stack = await startStack({ dataDir, ports, log, ephemeral: false, ...(seedRate ? { seedRate } : {}) });
    stack.add(await startEdge(stack, ports, dataDir));
    if (values["no-worker"]) log("local", "no worker (--no-worker): jobs wait in the queue");
    else stack.add(await startWorker(stack, ports));
    stack.add(await startWeb(stack, ports));
  } catch (err) {
    await stack?.stop();
    throw err;
  }

  const lines = [
    "",
    `TorreClou is running. Open the web app: ${stack.env.WEB_URL}`,
    "",
    "Services:",
    ...stack.services.flatMap((s) => s.urls ?? []).map((u) => `  ${u}`),
    "",
    "Local S3 (signing in adds it to a new account as the storage profile",
    `"${localS3ProfileName}"; to add it yourself, use these):`,
    `  endpoint           ${stack.env.S3_ENDPOINT}  (path-style)`,
    `  bucket             ${localSecrets.s3Bucket}`,
    `  access key id      ${localSecrets.s3AccessKeyId}`,
    `  secret access key  ${localSecrets.s3SecretAccessKey}`,
    "",
    "Press Ctrl-C to stop everything.",
    "",
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
  log("local", "ready");
}

main().catch((err: unknown) => {
  log("local", err instanceof Error ? err.message : String(err));
  process.exit(1);
});
