// The edge as it runs in production: `wrangler dev` bundles edge/src the way
// `wrangler deploy` does and runs it in workerd (waitUntil, nodejs_compat and
// all). Used by the dev stack (dev.ts) and by tests that need the real
// Workers runtime from Node (node-worker/test/tracing.test.ts).
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { type LogSink, type Spawned, spawnService } from "./process.ts";

const root = resolve(import.meta.dirname, "..");

/** Quiet, offline wrangler: no metrics, no error reports, no outside lookups. */
export const wranglerEnv = {
  WRANGLER_SEND_METRICS: "false",
  WRANGLER_SEND_ERROR_REPORTS: "false",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
  WRANGLER_HIDE_BANNER: "true",
};

/** True once `url` answers (anything but a 5xx other than 503). */
export async function answers(url: string): Promise<boolean> {
  const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
  await response.body?.cancel();
  return response.status < 500 || response.status === 503;
}

export interface EdgeOptions {
  /** The Worker's vars and secrets. */
  vars: Record<string, string | undefined>;
  port: number;
  inspectorPort: number;
  /** Where its env file, local state and (empty) assets folder go. */
  dataDir: string;
  log?: LogSink;
}

/** Starts `wrangler dev` on 127.0.0.1:`port` and waits until /api/health answers. */
export async function spawnEdge(opts: EdgeOptions): Promise<Spawned & { url: string }> {
  const envFile = join(opts.dataDir, "edge.env");
  writeFileSync(
    envFile,
    Object.entries(opts.vars)
      // Single quotes keep a JSON value as it is.
      .map(([k, v]) => `${k}=${v?.startsWith("{") ? `'${v}'` : (v ?? "")}\n`)
      .join(""),
    { mode: 0o600 },
  );
  // Vite serves the app in dev, so the Worker's assets are an empty folder of
  // this stack's own: a build of web/dist (npm run deploy) meanwhile does not
  // make wrangler reload under a running stack.
  const assets = join(opts.dataDir, "assets");
  mkdirSync(assets, { recursive: true });
  const url = `http://127.0.0.1:${opts.port}`;
  const edge = await spawnService("edge", process.execPath, {
    args: [
      join(root, "edge", "node_modules", "wrangler", "bin", "wrangler.js"),
      "dev",
      "--config",
      join(root, "wrangler.toml"),
      "--ip",
      "127.0.0.1",
      "--port",
      String(opts.port),
      "--inspector-port",
      String(opts.inspectorPort),
      "--env-file",
      envFile,
      "--persist-to",
      join(opts.dataDir, "wrangler"),
      "--assets",
      assets,
      "--show-interactive-dev-session=false",
      "--log-level",
      "warn",
    ],
    cwd: root,
    env: { ...process.env, ...wranglerEnv },
    log: opts.log,
    ready: () => answers(`${url}/api/health`),
    readyTimeoutMs: 60_000,
  });
  return { ...edge, url };
}
