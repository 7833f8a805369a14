// The worker process: configuration, logs, tracing, the job loop, and the health and
// metrics endpoints. SIGTERM hands running jobs back to the queue and exits
// within WORKER_SHUTDOWN_MS.
//
// `node main.ts` (and the bundle the image runs) starts it. `main` is exported
// for test tooling only, which may pass a stand-in for the transfer (the scale
// simulation, node-worker/test/scale/); nothing here selects one.
import { createServer } from "node:http";
import { loadConfig } from "./config.ts";
import { createPool } from "./db.ts";
import { packageVersion } from "./heartbeat.ts";
import { createLogger } from "./log.ts";
import { createMetrics } from "./metrics.ts";
import { startTracing, stopTracing } from "./tracing/index.ts";
import { Worker, type WorkerDeps } from "./worker.ts";

export interface MainOptions {
  /** Test tooling only: makes each attempt instead of a JobRun (see `WorkerDeps.attempts`). */
  attempts?: WorkerDeps["attempts"];
}

export async function main(options: MainOptions = {}): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config);
  startTracing({ ...config, version: config.WORKER_VERSION ?? packageVersion() }, log);
  const metrics = createMetrics({ fleet: config.WORKER_FLEET_METRICS });

  const { pool, db } = createPool({
    connectionString: config.DATABASE_URL,
    max: Math.max(4, config.WORKER_CONCURRENCY * 3 + config.WORKER_METADATA_CONCURRENCY),
    log,
  });
  await pool.query("select 1");

  const worker = new Worker({ config, db, log, metrics, attempts: options.attempts });
  await worker.start();

  const server = createServer((req, res) => {
    if (req.url === "/healthz") {
      Promise.all([worker.queue.commands.ping(), pool.query("select 1")])
        .then(() =>
          res
            .writeHead(200, { "content-type": "application/json" })
            .end(JSON.stringify({ ok: true, worker: config.WORKER_ID, jobs: worker.activeJobs.length })),
        )
        .catch((err: unknown) =>
          res
            .writeHead(503, { "content-type": "application/json" })
            .end(JSON.stringify({ ok: false, error: String(err) })),
        );
      return;
    }
    if (req.url === "/metrics") {
      metrics.registry
        .metrics()
        .then((body) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(body))
        .catch(() => res.writeHead(500).end());
      return;
    }
    res.writeHead(404).end();
  });
  server.listen(config.WORKER_HTTP_PORT, config.WORKER_HTTP_HOST, () =>
    log.info({ host: config.WORKER_HTTP_HOST, port: config.WORKER_HTTP_PORT }, "worker up"),
  );

  let shuttingDown = false;
  async function shutdown(signal: string): Promise<void> {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info({ signal, boundMs: config.WORKER_SHUTDOWN_MS }, "shutting down: handing running jobs back");
    // Whatever happens, the process is gone within the bound.
    setTimeout(() => process.exit(1), config.WORKER_SHUTDOWN_MS).unref();
    server.close();
    try {
      await worker.shutdown();
      await pool.end();
      await stopTracing();
    } catch (error) {
      log.error({ err: error }, "unclean shutdown");
    }
    process.exit(0);
  }
  process.once("SIGTERM", () => void shutdown("SIGTERM"));
  process.once("SIGINT", () => void shutdown("SIGINT"));
}

if (import.meta.main) await main();
