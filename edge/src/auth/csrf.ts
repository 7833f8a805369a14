// Cross-site request forgery. SameSite=Lax keeps the session cookie off
// cross-site POSTs, but not off those from other origins of the same site
// (another port or subdomain of the host), and older browsers ignore it. So a
// request that changes something and is authenticated by the cookie must come
// from the web app itself: browsers send `Origin` on every POST, PUT, PATCH
// and DELETE, same-origin fetches included, and a page cannot forge it. API
// tokens are never sent by the browser on its own, so requests authenticated
// with one are not checked.
import type { Context } from "hono";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors/index.ts";

const safeMethods = new Set(["GET", "HEAD", "OPTIONS"]);

export const csrfCode = "csrf_refused";

/** Throws a 403 unless the request is safe or its Origin is the web app's (WEB_ORIGIN). */
export function requireWebOrigin(c: Context<AppEnv>): void {
  if (safeMethods.has(c.req.method)) return;
  const expected = new URL(c.var.config.WEB_ORIGIN).origin;
  const origin = c.req.header("origin");
  if (origin === expected) return;
  throw new ApiError(
    403,
    csrfCode,
    `${origin ? "This request came from another site" : "This request has no Origin header"}: with the session cookie, only the web app at ${expected} may change anything. Scripts authenticate with an API token (Authorization: Bearer tc_…) instead.`,
  );
}
