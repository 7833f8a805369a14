// The Hono app: configuration once per isolate, one error shape, routes by concern.
import { Hono } from "hono";
import { type Config, ConfigError, parseConfig } from "./config.ts";
import { ApiError, notFound, onError } from "./errors/index.ts";
import { health } from "./routes/health.ts";

export interface AppEnv {
  Bindings: Record<string, unknown>;
  Variables: { config: Config };
}

export const app = new Hono<AppEnv>()
  .use("*", async (c, next) => {
    try {
      c.set("config", parseConfig(c.env));
    } catch (err) {
      if (err instanceof ConfigError) {
        console.error(JSON.stringify({ level: "error", msg: err.message }));
        throw new ApiError(500, "misconfigured", "The server is misconfigured; its operator has been told why.");
      }
      throw err;
    }
    await next();
  })
  .route("/api/health", health)
  .notFound(notFound)
  .onError(onError);

export type App = typeof app;
