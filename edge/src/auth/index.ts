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
import { claimedSession, readSession, sessionKey } from "./session.ts";
import { hashToken, tokenPrefix } from "./tokens.ts";

export interface CurrentUser {
  id: string;
  via: "session" | "token";
  /** Session id, for logout. */
  sid?: string;
  /**
   * Set by `requireUserInRoute` only: the session's allow-list key, which the
   * route must confirm holds `id` in its own Redis command before answering.
   */
  unconfirmedSession?: string;
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

export const requireUser = createMiddleware<AppEnv>((c, next) => authenticate(c, next, false));

/**
 * Like `requireUser`, but a session cookie is checked by its signature only:
 * the route confirms the session (`user.unconfirmedSession`) in the same Redis
 * command that reads what it answers, so a poll costs one command, not two.
 */
export const requireUserInRoute = createMiddleware<AppEnv>((c, next) => authenticate(c, next, true));

async function authenticate(c: Context<AppEnv>, next: () => Promise<void>, defer: boolean) {
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
  const session = defer
    ? await claimedSession(c, c.var.config)
    : await readSession(c, c.var.config, c.var.redis);
  if (!session) throw sessionEnded();
  // Authenticated by the cookie, which the browser sends whoever made the request.
  requireWebOrigin(c);
  c.set("user", {
    id: session.userId,
    via: "session",
    sid: session.sid,
    ...(defer ? { unconfirmedSession: sessionKey(session.sid) } : {}),
  });
  return next();
}

/** The 401 of a missing, ended or logged-out session. */
export function sessionEnded(): ApiError {
  return new ApiError(401, "unauthenticated", "Sign in to continue: your session is missing or has ended.");
}
