// Browser sessions: a signed JWT (HS256) in an HttpOnly cookie, backed by an
// allow-list entry in Redis so that logging out really ends the session even
// though the token itself would still verify until it expires.
import type { Redis } from "@upstash/redis/cloudflare";
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { sign, verify } from "hono/jwt";
import type { Config } from "../config.ts";

export const sessionCookie = "tc_session";
export const sessionKey = (sid: string) => `torreclou:session:${sid}`;

export interface Session {
  userId: string;
  sid: string;
}

/** Creates a session for the user and sets its cookie. */
export async function startSession(
  c: Context,
  config: Config,
  redis: Redis,
  userId: string,
): Promise<Session> {
  const sid = crypto.randomUUID();
  const now = Math.floor(Date.now() / 1000);
  const exp = now + config.SESSION_TTL_SECONDS;
  const token = await sign({ sub: userId, sid, iat: now, exp }, config.SESSION_SECRET, "HS256");
  await redis.set(sessionKey(sid), userId, { ex: config.SESSION_TTL_SECONDS });
  setCookie(c, sessionCookie, token, {
    httpOnly: true,
    secure: true,
    sameSite: "Lax",
    path: "/",
    maxAge: config.SESSION_TTL_SECONDS,
  });
  return { userId, sid };
}

/**
 * What the request's cookie claims, checked by its signature and expiry only
 * (no Redis): the caller must still confirm the session's allow-list entry
 * (`sessionKey(sid)` holds `userId`), as `readSession` does.
 */
export async function claimedSession(c: Context, config: Config): Promise<Session | undefined> {
  const token = getCookie(c, sessionCookie);
  if (!token) return undefined;
  let payload: Record<string, unknown>;
  try {
    payload = await verify(token, config.SESSION_SECRET, "HS256");
  } catch {
    return undefined;
  }
  const { sub, sid } = payload;
  if (typeof sub !== "string" || typeof sid !== "string") return undefined;
  return { userId: sub, sid };
}

/** The session the request's cookie proves, or undefined (tampered, expired, logged out, absent). */
export async function readSession(c: Context, config: Config, redis: Redis): Promise<Session | undefined> {
  const claim = await claimedSession(c, config);
  if (!claim) return undefined;
  const owner = await redis.get<string>(sessionKey(claim.sid));
  return owner === claim.userId ? claim : undefined;
}

/** Ends the session server-side and clears the cookie. */
export async function endSession(c: Context, redis: Redis, session: Session | undefined): Promise<void> {
  if (session) await redis.del(sessionKey(session.sid));
  deleteCookie(c, sessionCookie, { path: "/", secure: true, httpOnly: true, sameSite: "Lax" });
}
