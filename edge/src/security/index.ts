// Response hardening for everything the Worker answers (/api/*; the web app's
// static files are served by the assets layer).
//
// - Security headers on every response, errors and redirects included: no
//   MIME sniffing, no referrer, never framed, a Content-Security-Policy that
//   lets a JSON response load nothing at all (a route serving HTML, like
//   /api/docs, sets its own narrower policy and it is kept), HSTS over https,
//   and `Cache-Control: no-store` unless a route chose a caching policy.
// - CORS for exactly one origin, WEB_ORIGIN, with credentials (the session
//   cookie). Requests without an Origin (same-origin navigations, scripts,
//   curl) are untouched; other origins get no CORS headers, and their
//   preflights a 403.
import type { MiddlewareHandler } from "hono";
import { cors } from "hono/cors";
import { createMiddleware } from "hono/factory";
import { secureHeaders } from "hono/secure-headers";
import { parseConfig } from "../config.ts";
import type { AppEnv } from "../env.ts";
import { errorBody } from "../errors/index.ts";

/** The policy for JSON: load nothing, be framed by no one, submit nowhere. */
export const apiContentSecurityPolicy = {
  defaultSrc: ["'none'"],
  frameAncestors: ["'none'"],
  baseUri: ["'none'"],
  formAction: ["'none'"],
};

export const hstsValue = "max-age=31536000; includeSubDomains";

export function securityHeaders(): MiddlewareHandler<AppEnv> {
  const options = {
    contentSecurityPolicy: apiContentSecurityPolicy,
    xFrameOptions: "DENY",
    referrerPolicy: "no-referrer",
    // A route that sets its own value (e.g. the docs page's CSP) keeps it.
    overwrite: false,
  } as const;
  const overHttp = secureHeaders({ ...options, strictTransportSecurity: false });
  const overHttps = secureHeaders({ ...options, strictTransportSecurity: hstsValue });
  return createMiddleware<AppEnv>(async (c, next) => {
    const https = new URL(c.req.url).protocol === "https:";
    await (https ? overHttps : overHttp)(c, next);
    if (!c.res.headers.has("Cache-Control")) c.res.headers.set("Cache-Control", "no-store");
  });
}

/** The web app's origin (scheme://host[:port]), or undefined when the configuration is unusable. */
function webOrigin(bindings: Record<string, unknown>): string | undefined {
  try {
    return new URL(parseConfig(bindings).WEB_ORIGIN).origin;
  } catch {
    return undefined; // the config middleware reports a broken configuration
  }
}

export function corsForWebApp(): MiddlewareHandler<AppEnv> {
  const allowed = cors({
    origin: (origin) => origin,
    credentials: true,
    allowMethods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
    allowHeaders: ["Content-Type", "Authorization"],
    exposeHeaders: ["Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "Location"],
    maxAge: 600,
  });
  return createMiddleware<AppEnv>(async (c, next) => {
    const origin = c.req.header("origin");
    if (!origin) return next();
    if (origin === webOrigin(c.env)) return allowed(c, next);
    const preflight = c.req.method === "OPTIONS" && c.req.header("access-control-request-method");
    if (preflight) {
      c.header("Vary", "Origin");
      return c.json(
        errorBody("origin_not_allowed", `Cross-origin requests from ${origin} are not allowed.`),
        403,
      );
    }
    await next();
    c.header("Vary", "Origin", { append: true });
  });
}
