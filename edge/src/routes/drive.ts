// Google Drive destinations. Connecting Drive is its own OAuth consent, asked
// separately from sign-in and only when the user wants Drive: the scope is
// `drive.file` alone (files TorreClou creates, nothing else in the Drive),
// with offline access so the workers can upload while the user is away.
//
//   GET  /api/drive/connect                  → Google's consent screen (signed state binding + PKCE in cookies)
//   GET  /api/drive/callback                 ← Google; saves a `gdrive` storage profile
//   POST /api/drive/{profileId}/disconnect   revokes the grant at Google, deletes the profile
//
// The grant's refresh token is encrypted before it reaches the database
// (contracts/src/credentials.ts, bound to the profile id) and never leaves
// the server. Connecting the same Google account again (after "needs
// reconnect", say) renews the existing profile instead of adding a second.
//
// The endpoints are Google's by default and overridable (GOOGLE_OAUTH_*_URL,
// DRIVE_API_BASE_URL) so the local stack runs the whole flow offline against
// the Drive double; arctic's Google provider has fixed URLs, so this uses
// arctic's generic OAuth2Client with explicit endpoints.
import { createRoute, z } from "@hono/zod-openapi";
import {
  CredentialsError,
  columnsOf,
  type DriveSecret,
  decryptDriveSecret,
  encryptSecret,
  sealedOf,
} from "@torreclou/contracts";
import { type DriveProfileConfig, type StorageProfile, storageProfiles, users } from "@torreclou/db";
import {
  ArcticFetchError,
  CodeChallengeMethod,
  generateCodeVerifier,
  generateState,
  OAuth2Client,
  OAuth2RequestError,
  type OAuth2Tokens,
} from "arctic";
import { and, asc, eq } from "drizzle-orm";
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { sign, verify } from "hono/jwt";
import type { AppEnv } from "../app.ts";
import { requireUser } from "../auth/index.ts";
import type { Config } from "../config.ts";
import { ApiError } from "../errors/index.ts";
import { rateLimit } from "../limits/index.ts";
import {
  csrfRefused,
  errorResponses,
  registerAuthSchemes,
  sessionOnly,
  signedIn,
} from "../security/openapi.ts";
import { lockUser, passDefaultOn } from "../storage/defaults.ts";
import { router } from "./openapi.ts";

/** The only scope asked for: files this app creates or opens. */
export const driveScope = "https://www.googleapis.com/auth/drive.file";
export const driveCallbackPath = "/api/drive/callback";
/** Where the web app lists storage profiles; the flow ends there. */
const storagePage = "/storage";

// The flow's PKCE verifier and its binding, in short-lived HttpOnly cookies
// seen only by these routes. The binding is a JWT signed with SESSION_SECRET
// that ties the OAuth `state` to the user who started the flow, so the
// callback saves a grant only for that user and only for that flow.
const cookiePath = "/api/drive";
const bindingCookie = "tc_drive_flow";
const verifierCookie = "tc_drive_verifier";
/** Cookies of earlier versions of the flow, cleared at the callback. */
const oldCookies = ["tc_drive_state", "tc_drive_user"];
const bindingAudience = "torreclou:drive-connect";
const flowSeconds = 600;
const cookieOptions = {
  httpOnly: true,
  secure: true,
  // Lax: the cookies must come back on Google's top-level redirect to the callback.
  sameSite: "Lax",
  path: cookiePath,
  maxAge: flowSeconds,
} as const;

/** A Drive connection that cannot go on; a browser is sent back to the storage page with `?drive_error=`. */
class DriveConnectError extends ApiError {}

function driveClient(config: Config, requestUrl: string): OAuth2Client {
  const drive = config.GOOGLE_DRIVE_CLIENT_ID && config.GOOGLE_DRIVE_CLIENT_SECRET;
  const id = drive ? config.GOOGLE_DRIVE_CLIENT_ID : config.GOOGLE_CLIENT_ID;
  const secret = drive ? config.GOOGLE_DRIVE_CLIENT_SECRET : config.GOOGLE_CLIENT_SECRET;
  if (!id || !secret) {
    throw new ApiError(
      503,
      "google_drive_unavailable",
      "Google Drive is not configured on this server (no OAuth client: set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET).",
    );
  }
  const redirectUri = config.GOOGLE_DRIVE_REDIRECT_URI ?? new URL(driveCallbackPath, requestUrl).toString();
  return new OAuth2Client(id, secret, redirectUri);
}

/** Signs the binding of a flow's `state` to the user who starts it. */
async function signBinding(config: Config, userId: string, state: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return sign(
    { aud: bindingAudience, sub: userId, state, iat: now, exp: now + flowSeconds },
    config.SESSION_SECRET,
    "HS256",
  );
}

/**
 * The user and state a binding names, if it is signed by us for this flow and
 * not expired; a reason otherwise. No session id goes in, so a binding can
 * never pass for a session token.
 */
async function readBinding(
  config: Config,
  token: string | undefined,
): Promise<{ userId: string; state: string } | { problem: "missing" | "invalid" | "expired" }> {
  if (!token) return { problem: "missing" };
  let payload: Record<string, unknown>;
  try {
    // Expiry is checked below, once the signature is known to be ours.
    payload = await verify(token, config.SESSION_SECRET, { alg: "HS256", aud: bindingAudience, exp: false });
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

function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** A top-level browser navigation, as opposed to a script or fetch(). */
function isNavigation(c: Context<AppEnv>): boolean {
  const mode = c.req.header("sec-fetch-mode");
  if (mode) return mode === "navigate";
  return (c.req.header("accept") ?? "").includes("text/html");
}

function storageUrl(c: Context<AppEnv>, params: Record<string, string>): string {
  const url = new URL(storagePage, c.var.config.WEB_ORIGIN);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.toString();
}

function sessionRequired(c: Context<AppEnv>): void {
  if (c.var.user.via !== "session") {
    throw new ApiError(
      403,
      "session_required",
      "Connect Google Drive from the web app: an API token cannot change where files are stored.",
    );
  }
}

const log = (fields: Record<string, unknown>) => console.log(JSON.stringify({ level: "info", ...fields }));

/** The Google account's email, from Drive's `about` (works with the drive.file scope); undefined if it cannot be read. */
async function accountEmail(config: Config, accessToken: string): Promise<string | undefined> {
  try {
    const response = await fetch(
      `${config.DRIVE_API_BASE_URL.replace(/\/+$/, "")}/drive/v3/about?fields=user(emailAddress)`,
      { headers: { Authorization: `Bearer ${accessToken}` }, signal: AbortSignal.timeout(5000) },
    );
    if (!response.ok) {
      await response.body?.cancel();
      return undefined;
    }
    const body = (await response.json()) as { user?: { emailAddress?: unknown } };
    const email = body.user?.emailAddress;
    return typeof email === "string" && /^[^@\s]+@[^@\s]+$/.test(email) && email.length <= 254
      ? email
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Revokes a token at Google. True when Google no longer honours it (revoked
 * now, or already); false when Google could not be asked (network, 5xx).
 */
async function revoke(config: Config, token: string): Promise<boolean> {
  try {
    const response = await fetch(config.GOOGLE_OAUTH_REVOKE_URL, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token }),
      signal: AbortSignal.timeout(10_000),
    });
    const body = (await response.json().catch(() => ({}))) as { error?: unknown };
    if (response.ok) return true;
    // Already revoked or expired: nothing left to revoke.
    return response.status === 400 && body.error === "invalid_token";
  } catch {
    return false;
  }
}

/** Serializes a user's profile writes, as routes/storage.ts does (one default per user). */

/** The grant as stored: the refresh token and the first access token (workers reuse it). */
function secretOf(tokens: OAuth2Tokens): DriveSecret {
  const secret: DriveSecret = { refreshToken: tokens.refreshToken() };
  const data = tokens.data as { access_token?: unknown; expires_in?: unknown };
  if (typeof data.access_token === "string" && data.access_token && typeof data.expires_in === "number") {
    secret.accessToken = data.access_token;
    secret.accessTokenExpiresAt = new Date(Date.now() + data.expires_in * 1000).toISOString();
  }
  return secret;
}

/**
 * Saves the grant: renews the user's profile for the same Google account if
 * there is one (status back to active), else adds a profile, the default if
 * the user has none. Returns the profile and whether it is new.
 */
async function saveGrant(
  c: Context<AppEnv>,
  secret: DriveSecret,
  email: string | undefined,
): Promise<{ profile: StorageProfile; created: boolean }> {
  const { config } = c.var;
  const userId = c.var.user.id;
  return c.var.db().transaction(async (tx) => {
    await lockUser(tx, userId);
    const mine = await tx
      .select()
      .from(storageProfiles)
      .where(eq(storageProfiles.userId, userId))
      .orderBy(asc(storageProfiles.createdAt));
    const same = email
      ? mine.find((p) => p.kind === "gdrive" && (p.config as DriveProfileConfig).accountEmail === email)
      : undefined;
    if (same) {
      // The old refresh token is not revoked: at Google that would end the whole grant, the new token included.
      const sealed = await encryptSecret(config.CREDENTIALS_KEYS, secret, same.id);
      const [renewed] = await tx
        .update(storageProfiles)
        .set({ ...columnsOf(sealed), status: "active" })
        .where(eq(storageProfiles.id, same.id))
        .returning();
      return { profile: renewed!, created: false };
    }
    const base = email ? `Google Drive (${email})` : "Google Drive";
    const taken = new Set(mine.map((p) => p.name));
    let name = base;
    for (let n = 2; taken.has(name); n++) name = `${base} ${n}`;
    const id = crypto.randomUUID();
    const sealed = await encryptSecret(config.CREDENTIALS_KEYS, secret, id);
    const driveConfig: DriveProfileConfig = email ? { accountEmail: email } : {};
    const [inserted] = await tx
      .insert(storageProfiles)
      .values({
        id,
        userId,
        kind: "gdrive",
        name,
        isDefault: !mine.some((p) => p.isDefault),
        config: driveConfig,
        ...columnsOf(sealed),
      })
      .returning();
    return { profile: inserted!, created: true };
  });
}

// --- Routes ------------------------------------------------------------------

const redirect = { description: "Redirect.", headers: { Location: { schema: { type: "string" as const } } } };

const connect = createRoute({
  method: "get",
  path: "/connect",
  tags: ["Storage"],
  summary: "Connect Google Drive",
  description: `Redirects the browser to Google's consent screen for the \`${driveScope}\` scope only (files TorreClou creates), with offline access and PKCE. Google sends it back to \`${driveCallbackPath}\`. Needs the browser session.`,
  security: sessionOnly,
  middleware: [requireUser, rateLimit("drive-connect", 20, "1 m")] as const,
  responses: {
    302: { ...redirect, description: "To Google's consent screen." },
    ...errorResponses({
      401: "Not signed in.",
      403: "Signed in with an API token; connecting Drive needs the browser session.",
      429: "Too many attempts.",
      503: "Google Drive is not configured on this server.",
    }),
  },
});

const callback = createRoute({
  method: "get",
  path: "/callback",
  tags: ["Storage"],
  summary: "Google Drive consent callback",
  description:
    "Where Google returns the browser. Checks the state against the flow's signed binding, which must name the signed-in user and be under 10 minutes old, redeems the code (PKCE), requires a refresh token and the drive.file scope, and saves a Google Drive storage profile with the grant encrypted. Redirects to the web app's storage page (`?drive=connected`); on failure a browser lands there with `?drive_error=<code>`, other clients get the JSON error.",
  security: sessionOnly,
  middleware: [requireUser, rateLimit("drive-connect", 20, "1 m")] as const,
  request: {
    query: z.object({
      code: z.string().optional(),
      state: z.string().optional(),
      scope: z.string().optional(),
      error: z.string().optional(),
      error_description: z.string().optional(),
    }),
  },
  responses: {
    302: { ...redirect, description: "Connected (or, for a browser, failed): the web app's storage page." },
    ...errorResponses({
      400: "Missing, stale, expired or another user's state binding, Google reported an error (e.g. the user cancelled), the code was refused, or Google granted no offline access or not the Drive scope.",
      401: "Not signed in.",
      429: "Too many attempts.",
      502: "Google could not be reached.",
      503: "Google Drive is not configured on this server.",
    }),
  },
});

const disconnect = createRoute({
  method: "post",
  path: "/{profileId}/disconnect",
  tags: ["Storage"],
  summary: "Disconnect Google Drive",
  description:
    "Revokes TorreClou's access at Google, then deletes the Google Drive storage profile and its encrypted grant. Files already in the Drive stay. If Google cannot be reached the profile is kept, so disconnecting can be retried.",
  security: signedIn,
  middleware: [requireUser] as const,
  request: {
    params: z.object({
      profileId: z
        .uuid("must be a storage profile id (a UUID)")
        .openapi({ param: { name: "profileId", in: "path" } }),
    }),
  },
  responses: {
    204: { description: "Revoked and deleted." },
    ...errorResponses({
      400: "The id is not a UUID.",
      401: "Not signed in.",
      403: csrfRefused,
      404: "No Google Drive profile with this id belongs to the caller.",
      502: "Google could not be reached to revoke access; nothing was deleted.",
    }),
  },
});

// --- Handlers ----------------------------------------------------------------

const api = router();
registerAuthSchemes(api);

export const drive = api
  .openapi(connect, async (c) => {
    sessionRequired(c);
    const { config } = c.var;
    const client = driveClient(config, c.req.url);
    const state = generateState();
    const verifier = generateCodeVerifier();
    const url = client.createAuthorizationURLWithPKCE(
      config.GOOGLE_OAUTH_AUTH_URL,
      state,
      CodeChallengeMethod.S256,
      verifier,
      [driveScope],
    );
    url.searchParams.set("access_type", "offline");
    // Always ask: Google sends a refresh token only with a fresh consent.
    url.searchParams.set("prompt", "consent");
    const [user] = await c.var
      .db()
      .select({ email: users.email })
      .from(users)
      .where(eq(users.id, c.var.user.id));
    // Google preselects the account the user signed in with; they may pick another.
    if (user?.email) url.searchParams.set("login_hint", user.email);
    setCookie(c, bindingCookie, await signBinding(config, c.var.user.id, state), cookieOptions);
    setCookie(c, verifierCookie, verifier, cookieOptions);
    c.header("Cache-Control", "no-store");
    return c.redirect(url.toString(), 302);
  })
  .openapi(callback, async (c) => {
    const { config } = c.var;
    const client = driveClient(config, c.req.url);
    const binding = await readBinding(config, getCookie(c, bindingCookie));
    const verifier = getCookie(c, verifierCookie);
    // Each attempt is usable once.
    for (const name of [bindingCookie, verifierCookie, ...oldCookies]) {
      if (getCookie(c, name) !== undefined) {
        deleteCookie(c, name, { path: cookiePath, secure: true, httpOnly: true, sameSite: "Lax" });
      }
    }
    c.header("Cache-Control", "no-store");
    const query = c.req.valid("query");
    const fail: (status: 400 | 502, code: string, message: string) => never = (status, code, message) => {
      throw new DriveConnectError(status, code, message);
    };
    try {
      if (query.error) {
        if (query.error === "access_denied")
          fail(400, "google_denied", "Connecting Google Drive was cancelled.");
        fail(
          400,
          "google_error",
          `Google refused to connect Drive: ${query.error_description ?? query.error}.`,
        );
      }
      if (!query.code || !query.state) {
        fail(
          400,
          "invalid_request",
          "The callback needs the `code` and `state` Google sends; connect Drive again.",
        );
      }
      if ("problem" in binding && binding.problem === "expired") {
        fail(400, "invalid_state", "This Google Drive link has expired. Connect Drive again.");
      }
      if (
        "problem" in binding ||
        !verifier ||
        binding.userId !== c.var.user.id ||
        !sameText(binding.state, query.state!)
      ) {
        fail(
          400,
          "invalid_state",
          "This Google Drive link is stale or was opened in another browser or account. Connect Drive again.",
        );
      }
      let tokens: OAuth2Tokens;
      try {
        tokens = await client.validateAuthorizationCode(
          config.GOOGLE_OAUTH_TOKEN_URL,
          query.code!,
          verifier!,
        );
      } catch (err) {
        if (err instanceof OAuth2RequestError) {
          fail(
            400,
            "google_exchange_failed",
            `Google did not accept the Drive consent (${err.code}). Connect Drive again.`,
          );
        }
        if (err instanceof ArcticFetchError)
          fail(502, "google_unavailable", "Google could not be reached. Please try again.");
        fail(502, "google_unavailable", "Google answered the code exchange unexpectedly. Please try again.");
      }
      const data = tokens!.data as { scope?: unknown; access_token?: unknown };
      const granted = typeof data.scope === "string" ? data.scope.split(" ") : [driveScope];
      if (!granted.includes(driveScope)) {
        // Google's consent screen lets people untick the Drive box; this grant is useless without it.
        if (typeof data.access_token === "string") await revoke(config, data.access_token);
        fail(
          400,
          "drive_scope_denied",
          "Google Drive access was not granted: allow TorreClou to add files to your Drive and connect again.",
        );
      }
      if (!tokens!.hasRefreshToken()) {
        fail(
          400,
          "drive_no_refresh_token",
          "Google granted no offline access, so uploads could not run while you are away. Connect Drive again.",
        );
      }
      const secret = secretOf(tokens!);
      const email = secret.accessToken ? await accountEmail(config, secret.accessToken) : undefined;
      const { profile, created } = await saveGrant(c, secret, email);
      log({
        msg: created ? "storage profile created" : "storage profile reconnected",
        userId: c.var.user.id,
        profileId: profile.id,
        kind: "gdrive",
      });
      return c.redirect(storageUrl(c, { drive: "connected", profile: profile.id }), 302);
    } catch (err) {
      if (err instanceof DriveConnectError && isNavigation(c)) {
        return c.redirect(storageUrl(c, { drive_error: err.code }), 302);
      }
      throw err;
    }
  })
  .openapi(disconnect, async (c) => {
    const { profileId } = c.req.valid("param");
    const { config } = c.var;
    const userId = c.var.user.id;
    const db = c.var.db();
    const [row] = await db
      .select()
      .from(storageProfiles)
      .where(
        and(
          eq(storageProfiles.id, profileId),
          eq(storageProfiles.userId, userId),
          eq(storageProfiles.kind, "gdrive"),
        ),
      );
    if (!row) {
      throw new ApiError(
        404,
        "storage_profile_not_found",
        "You have no Google Drive connection with this id.",
      );
    }
    let refreshToken: string | undefined;
    try {
      refreshToken = (await decryptDriveSecret(config.CREDENTIALS_KEYS, sealedOf(row), row.id)).refreshToken;
    } catch (err) {
      // Unreadable with the server's keys: there is nothing we could revoke.
      if (!(err instanceof CredentialsError)) throw err;
    }
    if (refreshToken && !(await revoke(config, refreshToken))) {
      throw new ApiError(
        502,
        "google_unavailable",
        "Google could not be reached to revoke TorreClou's access; the connection was kept. Please try again.",
      );
    }
    await db.transaction(async (tx) => {
      await lockUser(tx, userId);
      const [deleted] = await tx
        .delete(storageProfiles)
        .where(and(eq(storageProfiles.id, profileId), eq(storageProfiles.userId, userId)))
        .returning({ isDefault: storageProfiles.isDefault });
      if (deleted?.isDefault) await passDefaultOn(tx, userId);
    });
    log({
      msg: "storage profile deleted",
      userId,
      profileId,
      kind: "gdrive",
      revoked: Boolean(refreshToken),
    });
    return c.body(null, 204);
  });
