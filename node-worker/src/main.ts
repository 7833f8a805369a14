// The worker process: configuration, logs, health and metrics endpoints.
import { createServer } from "node:http";
import { Redis } from "ioredis";
import pg from "pg";
import { pino } from "pino";
import { collectDefaultMetrics, Registry } from "prom-client";
import { loadConfig } from "./config.ts";

const config = loadConfig();
const log = pino({ level: config.LOG_LEVEL, base: { service: "worker" } });
const registry = new Registry();
collectDefaultMetrics({ register: registry });

const redis = new Redis(config.REDIS_URL, { lazyConnect: true });
const db = new pg.Pool({ connectionString: config.DATABASE_URL, max: 4 });
await redis.connect();
await db.query("select 1");

const server = createServer((req, res) => {
  if (req.url === "/healthz") {
    Promise.all([redis.ping(), db.query("select 1")])
      .then(() => res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}'))
      .catch((err: unknown) =>
        res.writeHead(503, { "content-type": "application/json" }).end(JSON.stringify({ ok: false, error: String(err) })),
      );
    return;
  }
  if (req.url === "/metrics") {
    registry
      .metrics()
      .then((body) => res.writeHead(200, { "content-type": registry.contentType }).end(body))
      .catch(() => res.writeHead(500).end());
    return;
  }
  res.writeHead(404).end();
});
server.listen(config.WORKER_HTTP_PORT, "127.0.0.1", () => log.info({ port: config.WORKER_HTTP_PORT }, "worker up"));

async function shutdown(signal: string): Promise<void> {
  log.info({ signal }, "shutting down");
  server.close();
  redis.disconnect();
  await db.end();
  process.exit(0);
}
process.once("SIGTERM", () => void shutdown("SIGTERM"));
process.once("SIGINT", () => void shutdown("SIGINT"));
