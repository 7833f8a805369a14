// Who is calling: a browser session cookie or an API token (`Authorization:
// Bearer tc_...`). Routes behind `requireUser` read `c.get("user")`. A request
// that changes something with the cookie must come from the web app (csrf.ts).
import { apiTokens } from "@torreclou/db";
import { and, eq, isNull } from "drizzle-orm";
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors/index.ts";
import { requireWebOrigin } from "./csrf.ts";
import { readSession } from "./session.ts";
import { hashToken, tokenPrefix } from "./tokens.ts";

export interface CurrentUser {
  id: string;
  via: "session" | "token";
  /** Session id, for logout. */
  sid?: string;
}

async function fromToken(c: Context<AppEnv>, token: string): Promise<string | undefined> {
  const hash = await hashToken(token);
  const [row] = await c.var
    .db()
    .select({ id: apiTokens.id, userId: apiTokens.userId })
    .from(apiTokens)
    .where(and(eq(apiTokens.tokenHash, hash), isNull(apiTokens.revokedAt)));
  if (!row) return undefined;
  // Best effort: "last used" must not slow down or fail the request.
  const touch = c.var
    .db()
    .update(apiTokens)
    .set({ lastUsedAt: new Date() })
    .where(eq(apiTokens.id, row.id))
    .then(
      () => {},
      () => {},
    );
  try {
    c.executionCtx.waitUntil(touch);
  } catch {
    await touch; // no execution context (app.request in tests)
  }
  return row.userId;
}

export const requireUser = createMiddleware<AppEnv>(async (c, next) => {
  const header = c.req.header("authorization");
  if (header) {
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    const token = match?.[1];
    if (!token?.startsWith(tokenPrefix)) {
      throw new ApiError(
        401,
        "unauthenticated",
        "The Authorization header must be `Bearer tc_…` (an API token).",
      );
    }
    const userId = await fromToken(c, token);
    if (!userId) throw new ApiError(401, "unauthenticated", "This API token is unknown or has been revoked.");
    c.set("user", { id: userId, via: "token" });
    return next();
  }
  const session = await readSession(c, c.var.config, c.var.redis);
  if (!session)
    throw new ApiError(401, "unauthenticated", "Sign in to continue: your session is missing or has ended.");
  // Authenticated by the cookie, which the browser sends whoever made the request.
  requireWebOrigin(c);
  c.set("user", { id: session.userId, via: "session", sid: session.sid });
  return next();
});
