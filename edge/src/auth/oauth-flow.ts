// The pieces every OAuth flow of the edge shares: Google sign-in
// (auth/google.ts) and connecting a destination (destinations/connect.ts).
// Short-lived HttpOnly cookies scoped to the flow's routes, a signed binding
// of the flow's `state` to the user who started it, constant-time compares,
// and telling a browser navigation (sent back to the web app with an error
// code) from a script (answered with the JSON error).
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { sign, verify } from "hono/jwt";

/** Seconds a flow may take from its start to its callback. */
export const flowSeconds = 600;

/** Equal strings, compared in time independent of where they differ. */
export function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** A top-level browser navigation, as opposed to a script or fetch(). */
export function isNavigation(c: Context): boolean {
  const mode = c.req.header("sec-fetch-mode");
  if (mode) return mode === "navigate";
  return (c.req.header("accept") ?? "").includes("text/html");
}

/**
 * A flow's cookies: HttpOnly, Secure, Lax (they must come back on the
 * provider's top-level redirect to the callback), scoped to `path`, ten
 * minutes. `take` reads and clears them: each attempt is usable once.
 */
export class FlowCookies<Name extends string> {
  readonly path: string;
  readonly #names: readonly Name[];
  readonly #old: readonly string[];

  constructor(path: string, names: readonly Name[], old: readonly string[] = []) {
    this.path = path;
    this.#names = names;
    this.#old = old;
  }

  set(c: Context, values: Record<Name, string>): void {
    for (const name of this.#names) {
      setCookie(c, name, values[name], {
        httpOnly: true,
        secure: true,
        sameSite: "Lax",
        path: this.path,
        maxAge: flowSeconds,
      });
    }
  }

  take(c: Context, clearAlways = true): Partial<Record<Name, string>> {
    const out: Partial<Record<Name, string>> = {};
    for (const name of [...this.#names, ...this.#old]) {
      const value = getCookie(c, name);
      if ((this.#names as readonly string[]).includes(name) && value !== undefined) out[name as Name] = value;
      if (clearAlways || value !== undefined) {
        deleteCookie(c, name, { path: this.path, secure: true, httpOnly: true, sameSite: "Lax" });
      }
    }
    return out;
  }
}

/**
 * Signs the binding of a flow's `state` to the user who starts it: a JWT
 * signed with SESSION_SECRET for one audience, carrying no session id, so it
 * can never pass for a session token.
 */
export async function signBinding(
  secret: string,
  audience: string,
  userId: string,
  state: string,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return sign({ aud: audience, sub: userId, state, iat: now, exp: now + flowSeconds }, secret, "HS256");
}

/** The user and state a binding names, if signed by us for `audience` and not expired; a reason otherwise. */
export async function readBinding(
  secret: string,
  audience: string,
  token: string | undefined,
): Promise<{ userId: string; state: string } | { problem: "missing" | "invalid" | "expired" }> {
  if (!token) return { problem: "missing" };
  let payload: Record<string, unknown>;
  try {
    // Expiry is checked below, once the signature is known to be ours.
    payload = await verify(token, secret, { alg: "HS256", aud: audience, exp: false });
  } catch {
    return { problem: "invalid" };
  }
  const { sub, state, exp } = payload;
  if (typeof sub !== "string" || typeof state !== "string" || typeof exp !== "number") {
    return { problem: "invalid" };
  }
  if (exp <= Math.floor(Date.now() / 1000)) return { problem: "expired" };
  return { userId: sub, state };
}
