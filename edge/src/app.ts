// The Hono app: configuration once per isolate, per-request clients, one error
// shape, and routes by concern.
import { type Config, ConfigError, parseConfig } from "./config.ts";
import { createDb, type Db } from "./db/index.ts";
import { connectRoutes, oauthOf } from "./destinations/connect.ts";
import { destinations } from "./destinations/index.ts";
import { ApiError, notFound, onError } from "./errors/index.ts";
import { createRedis } from "./redis/index.ts";
import { auth } from "./routes/auth.ts";
import { docsRoute } from "./routes/docs.ts";
import { health } from "./routes/health.ts";
import { jobsApi } from "./routes/jobs.ts";
import { router } from "./routes/openapi.ts";
import { operator } from "./routes/operator.ts";
import { progress } from "./routes/progress.ts";
import { storage } from "./routes/storage.ts";
import { tokens } from "./routes/tokens.ts";
import { torrents } from "./routes/torrents.ts";
import { transferApi } from "./routes/transfer.ts";
import { usage } from "./routes/usage.ts";
import { webhooks } from "./routes/webhooks.ts";
import { corsForWebApp, securityHeaders } from "./security/index.ts";
import { tracing } from "./tracing/index.ts";

export type { AppEnv } from "./env.ts";

export const app = router();

// Outermost: a span for the whole request (while tracing is on, see tracing/).
app.use("*", tracing());
// Around everything else, so errors, redirects and preflights get them too.
app.use("*", securityHeaders());
app.use("*", corsForWebApp());

app.use("*", async (c, next) => {
  let config: Config;
  try {
    config = parseConfig(c.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(JSON.stringify({ level: "error", msg: err.message }));
      throw new ApiError(
        500,
        "misconfigured",
        "The server is misconfigured; its operator has been told why.",
      );
    }
    throw err;
  }
  c.set("config", config);
  c.set("redis", createRedis(config));
  let opened: Db | undefined;
  c.set("db", () => {
    opened ??= createDb(config);
    return opened.db;
  });
  try {
    await next();
  } finally {
    if (opened) {
      const closing = opened.close().catch(() => {});
      try {
        c.executionCtx.waitUntil(closing);
      } catch {
        await closing; // no execution context (e.g. app.request in tests)
      }
    }
  }
});

// Chained so the type carries every route, for the web client (hono/client).
const routes = app
  .route("/api/health", health)
  .route("/api/auth", auth)
  .route("/api/tokens", tokens)
  .route(
    "/api/docs",
    docsRoute((env) => app.request("/api/openapi.json", { headers: { accept: "application/json" } }, env)),
  )
  .route("/api/storage", storage)
  // One connect flow per OAuth destination, from its module (destinations/).
  .route("/api/drive", connectRoutes(oauthOf(destinations.gdrive)))
  .route("/api/onedrive", connectRoutes(oauthOf(destinations.onedrive)))
  .route("/api/dropbox", connectRoutes(oauthOf(destinations.dropbox)))
  .route("/api/torrents", torrents)
  .route("/api/jobs", jobsApi)
  // A browser tab's transfer of its own job (routes/transfer.ts).
  .route("/api/jobs", transferApi)
  .route("/api/progress", progress)
  .route("/api/webhooks", webhooks)
  .route("/api/usage", usage)
  .route("/api/operator", operator);

app.doc31("/api/openapi.json", {
  openapi: "3.1.0",
  info: { title: "TorreClou API", version: "1.0.0", description: "Torrents into your own cloud storage." },
});
app.notFound(notFound);
app.onError(onError);

export type App = typeof routes;
