// Connecting Google Drive end to end inside workerd. The app's outbound calls
// (arctic's code exchange, Drive's `about`, the revoke) go to the test stack's
// Drive double (local/drive), which checks them as Google does (PKCE, single-
// use codes, redirect URI, offline access); a fetch spy records them.
// Postgres and Redis are the real local services.
import { env } from "cloudflare:workers";
import { decryptDriveSecret, parseKeyring, sealedOf } from "@torreclou/contracts";
import { type StorageProfile, storageProfiles } from "@torreclou/db";
import { eq } from "drizzle-orm";
import { sign, verify } from "hono/jwt";
import { afterEach, beforeEach, describe, expect, it, type MockInstance, vi } from "vitest";
import { fromWebApp, signIn } from "../../test/helpers.ts";
import { app } from "../app.ts";
import { createDb } from "../db/index.ts";

const driveScope = "https://www.googleapis.com/auth/drive.file";

let outbound: string[];
let spy: MockInstance<typeof fetch>;
beforeEach(() => {
  outbound = [];
  const real = globalThis.fetch.bind(globalThis);
  spy = vi.spyOn(globalThis, "fetch").mockImplementation((input, init) => {
    outbound.push(input instanceof Request ? input.url : String(input));
    return real(input, init);
  });
});
afterEach(() => spy.mockRestore());

function call(path: string, init: RequestInit = {}, bindings: object = env): Promise<Response> {
  return Promise.resolve(app.request(path, init, bindings));
}

function cookiesFrom(response: Response): Map<string, string> {
  const jar = new Map<string, string>();
  for (const line of response.headers.getSetCookie()) {
    const [pair] = line.split(";");
    const at = pair!.indexOf("=");
    jar.set(pair!.slice(0, at), pair!.slice(at + 1));
  }
  return jar;
}

async function errorOf(response: Response): Promise<{ code: string; message: string }> {
  return ((await response.json()) as { error: { code: string; message: string } }).error;
}

async function withDb<T>(work: (db: ReturnType<typeof createDb>["db"]) => Promise<T>): Promise<T> {
  const { db, close } = createDb(env);
  try {
    return await work(db);
  } finally {
    await close();
  }
}

const profilesOf = (userId: string) =>
  withDb((db) => db.select().from(storageProfiles).where(eq(storageProfiles.userId, userId)));

/** Starts the flow as the signed-in browser; returns Google's URL and the cookies to send back. */
async function connect(session: string, bindings: object = env) {
  const response = await call("/api/drive/connect", { headers: { cookie: session } }, bindings);
  expect(response.status).toBe(302);
  const flow = [...cookiesFrom(response)].map(([k, v]) => `${k}=${v}`).join("; ");
  return { location: response.headers.get("location")!, cookie: `${session}; ${flow}`, response };
}

/** The consent screen (the Drive double approves at once) and its redirect back to the app. */
async function consent(location: string): Promise<URL> {
  const response = await fetch(location, { redirect: "manual" });
  expect(response.status).toBe(302);
  return new URL(response.headers.get("location")!);
}

function callback(params: URLSearchParams | Record<string, string>, cookie: string, headers = {}) {
  return call(`/api/drive/callback?${new URLSearchParams(params)}`, { headers: { cookie, ...headers } });
}

/** The whole dance for a signed-in user; returns the new profile. */
async function connectDrive(session: string, userId: string): Promise<StorageProfile> {
  const { location, cookie } = await connect(session);
  const back = await consent(location);
  const response = await callback(back.searchParams, cookie);
  expect(response.status, await response.clone().text()).toBe(302);
  const landing = new URL(response.headers.get("location")!);
  expect(`${landing.origin}${landing.pathname}`).toBe(`${env.WEB_ORIGIN}/storage`);
  expect(landing.searchParams.get("drive")).toBe("connected");
  const [profile] = (await profilesOf(userId)).filter((p) => p.id === landing.searchParams.get("profile"));
  expect(profile).toBeDefined();
  return profile!;
}

/** Whether the Drive double still honours a refresh token. */
async function refreshWorks(refreshToken: string): Promise<boolean> {
  const response = await fetch(env.GOOGLE_OAUTH_TOKEN_URL, {
    method: "POST",
    body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: refreshToken }),
  });
  await response.body?.cancel();
  return response.status === 200;
}

const secretOf = (row: StorageProfile) =>
  decryptDriveSecret(parseKeyring(env.CREDENTIALS_KEYS), sealedOf(row), row.id);

describe("GET /api/drive/connect", () => {
  it("redirects to Google's consent with only the drive.file scope, offline access, state and PKCE", async () => {
    const email = `drive-${crypto.randomUUID()}@example.com`;
    const { cookie, userId } = await signIn(email);
    // Google's own endpoints when nothing overrides them.
    const { location, response } = await connect(cookie, { ...env, GOOGLE_OAUTH_AUTH_URL: "" });
    const url = new URL(location);
    expect(`${url.origin}${url.pathname}`).toBe("https://accounts.google.com/o/oauth2/v2/auth");
    const p = url.searchParams;
    expect(p.get("scope")).toBe(driveScope);
    expect(p.get("access_type")).toBe("offline");
    expect(p.get("prompt")).toBe("consent");
    expect(p.get("response_type")).toBe("code");
    expect(p.get("client_id")).toBe(env.GOOGLE_CLIENT_ID);
    expect(p.get("redirect_uri")).toBe(env.GOOGLE_DRIVE_REDIRECT_URI);
    expect(p.get("code_challenge_method")).toBe("S256");
    expect(p.get("code_challenge")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(p.get("login_hint")).toBe(email);
    expect(p.has("include_granted_scopes")).toBe(false);

    const jar = cookiesFrom(response);
    // The state is bound to the user who started the flow, signed by the server.
    const binding = await verify(jar.get("tc_drive_flow")!, env.SESSION_SECRET, {
      alg: "HS256",
      aud: "torreclou:drive-connect",
    });
    expect(binding).toMatchObject({ sub: userId, state: p.get("state") });
    expect((binding.exp as number) - (binding.iat as number)).toBe(600);
    expect(jar.get("tc_drive_verifier")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    for (const line of response.headers.getSetCookie()) {
      expect(line).toMatch(/HttpOnly/i);
      expect(line).toMatch(/Secure/i);
      expect(line).toMatch(/SameSite=Lax/i);
      expect(line).toMatch(/Path=\/api\/drive(;|$)/);
      expect(line).toMatch(/Max-Age=600/);
    }
    expect(response.headers.get("cache-control")).toBe("no-store");
    // Nothing went to Google yet.
    expect(outbound.filter((u) => u.includes("google"))).toEqual([]);
  });

  it("needs a signed-in user", async () => {
    const response = await call("/api/drive/connect");
    expect(response.status).toBe(401);
  });

  it("answers 503 when no OAuth client is configured", async () => {
    const { cookie } = await signIn();
    const response = await call(
      "/api/drive/connect",
      { headers: { cookie } },
      { ...env, GOOGLE_CLIENT_ID: "", GOOGLE_CLIENT_SECRET: "" },
    );
    expect(response.status).toBe(503);
    expect((await errorOf(response)).code).toBe("google_drive_unavailable");
  });
});

describe("GET /api/drive/callback", () => {
  it("creates a Google Drive profile with the grant encrypted, then lands on the storage page", async () => {
    const email = `ada-${crypto.randomUUID()}@example.com`;
    const { cookie, userId } = await signIn(email);
    const profile = await connectDrive(cookie, userId);
    expect(profile).toMatchObject({
      kind: "gdrive",
      name: `Google Drive (${email})`,
      status: "active",
      isDefault: true,
      config: { accountEmail: email },
    });
    // The code exchange and the account lookup went to the (local) Google endpoints.
    expect(outbound).toContain(env.GOOGLE_OAUTH_TOKEN_URL);
    expect(outbound.some((u) => u.startsWith(`${env.DRIVE_API_BASE_URL}/drive/v3/about`))).toBe(true);

    // Encrypted, bound to the profile id; the plaintext is nowhere in the row.
    const secret = await secretOf(profile);
    expect(secret.refreshToken).toMatch(/^1\/\//);
    expect(secret.accessToken).toMatch(/^ya29\./);
    const stored = JSON.stringify(profile);
    expect(stored).not.toContain(secret.refreshToken);
    expect(stored).not.toContain(secret.accessToken);
    expect(await refreshWorks(secret.refreshToken)).toBe(true);

    // The storage API shows it without secrets.
    const listed = await call("/api/storage", { headers: { cookie } });
    const body = await listed.text();
    expect(body).toContain(profile.id);
    expect(body).not.toContain(secret.refreshToken);
  });

  it("renews the same account's profile on reconnect instead of adding another", async () => {
    const { cookie, userId } = await signIn();
    const first = await connectDrive(cookie, userId);
    const old = await secretOf(first);
    await withDb((db) =>
      db
        .update(storageProfiles)
        .set({ status: "needs_reconnect", config: { ...first.config, rootFolderId: "chosen-folder" } })
        .where(eq(storageProfiles.id, first.id)),
    );
    const again = await connectDrive(cookie, userId);
    expect(again.id).toBe(first.id);
    expect(again.status).toBe("active");
    // The folder the user chose stays.
    expect(again.config).toMatchObject({ rootFolderId: "chosen-folder" });
    expect((await secretOf(again)).refreshToken).not.toBe(old.refreshToken);
    expect(await profilesOf(userId)).toHaveLength(1);
  });

  it("refuses a state that does not match the flow's cookie (400)", async () => {
    const { cookie: session } = await signIn();
    const { location, cookie } = await connect(session);
    const back = await consent(location);
    const forged = new URLSearchParams(back.searchParams);
    forged.set("state", "forged-state-value-forged-state-value-123");
    const response = await callback(forged, cookie);
    expect(response.status).toBe(400);
    expect((await errorOf(response)).code).toBe("invalid_state");
    // No cookies (another browser): also 400, and the code is never redeemed.
    const without = await callback(back.searchParams, session);
    expect(without.status).toBe(400);
    expect((await errorOf(without)).code).toBe("invalid_state");
    expect(outbound).not.toContain(env.GOOGLE_OAUTH_TOKEN_URL);
  });

  it("refuses a flow another user started", async () => {
    const { cookie: alice } = await signIn();
    const { cookie: bob, userId: bobId } = await signIn();
    const { location, cookie } = await connect(alice);
    const back = await consent(location);
    const bobsBrowser = cookie.replace(alice, bob);
    const response = await callback(back.searchParams, bobsBrowser);
    expect(response.status).toBe(400);
    expect((await errorOf(response)).code).toBe("invalid_state");
    expect(await profilesOf(bobId)).toHaveLength(0);
  });

  describe("refuses a binding that is forged, tampered with, expired, missing or another user's", () => {
    /** Bob's session, Google's answer to a flow, and the flow's PKCE cookie: all the attacker needs but the binding. */
    async function setUp() {
      const { cookie: session, userId } = await signIn();
      const { location, cookie } = await connect(session);
      const back = await consent(location);
      const jar = new Map(cookie.split("; ").map((pair) => pair.split("=") as [string, string]));
      const state = back.searchParams.get("state")!;
      return {
        session,
        userId,
        back,
        state,
        binding: jar.get("tc_drive_flow")!,
        verifier: jar.get("tc_drive_verifier")!,
      };
    }

    const now = () => Math.floor(Date.now() / 1000);
    const aud = "torreclou:drive-connect";
    const encode = (value: unknown) =>
      btoa(JSON.stringify(value)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");

    async function expectRefused(
      flow: Awaited<ReturnType<typeof setUp>>,
      cookies: string,
      message = /stale or was opened in another browser or account/,
    ) {
      outbound = [];
      const response = await callback(flow.back.searchParams, `${flow.session}; ${cookies}`);
      expect(response.status).toBe(400);
      const error = await errorOf(response);
      expect(error.code).toBe("invalid_state");
      expect(error.message).toMatch(message);
      // The code is never redeemed and nothing is saved.
      expect(outbound).not.toContain(env.GOOGLE_OAUTH_TOKEN_URL);
      expect(await profilesOf(flow.userId)).toHaveLength(0);
    }

    it("signed with another secret", async () => {
      const flow = await setUp();
      const forged = await sign(
        { aud, sub: flow.userId, state: flow.state, iat: now(), exp: now() + 600 },
        "not-the-server-secret-0123456789abcdef",
        "HS256",
      );
      await expectRefused(flow, `tc_drive_flow=${forged}; tc_drive_verifier=${flow.verifier}`);
    });

    it("with its claims changed to another user", async () => {
      const victim = await signIn();
      const flow = await setUp();
      const [header, payload, signature] = flow.binding.split(".") as [string, string, string];
      const claims = JSON.parse(atob(payload.replaceAll("-", "+").replaceAll("_", "/"))) as Record<
        string,
        unknown
      >;
      const tampered = `${header}.${encode({ ...claims, sub: victim.userId })}.${signature}`;
      const response = await callback(
        flow.back.searchParams,
        `${victim.cookie}; tc_drive_flow=${tampered}; tc_drive_verifier=${flow.verifier}`,
      );
      expect(response.status).toBe(400);
      expect((await errorOf(response)).code).toBe("invalid_state");
      expect(await profilesOf(victim.userId)).toHaveLength(0);
      expect(outbound).not.toContain(env.GOOGLE_OAUTH_TOKEN_URL);
    });

    it("expired, though signed by the server", async () => {
      const flow = await setUp();
      const expired = await sign(
        { aud, sub: flow.userId, state: flow.state, iat: now() - 700, exp: now() - 100 },
        env.SESSION_SECRET,
        "HS256",
      );
      await expectRefused(
        flow,
        `tc_drive_flow=${expired}; tc_drive_verifier=${flow.verifier}`,
        /has expired/,
      );
    });

    it("missing, or replaced by the old unsigned cookies", async () => {
      const flow = await setUp();
      await expectRefused(flow, `tc_drive_verifier=${flow.verifier}`);
      await expectRefused(
        flow,
        `tc_drive_state=${flow.state}; tc_drive_user=${flow.userId}; tc_drive_verifier=${flow.verifier}`,
      );
    });

    it("signed by the server for another state, or for another purpose", async () => {
      const flow = await setUp();
      const otherState = await sign(
        { aud, sub: flow.userId, state: "another-flow-state", iat: now(), exp: now() + 600 },
        env.SESSION_SECRET,
        "HS256",
      );
      await expectRefused(flow, `tc_drive_flow=${otherState}; tc_drive_verifier=${flow.verifier}`);
      // The session token is signed with the same secret, but is not a binding.
      const sessionToken = flow.session.split("=")[1]!;
      await expectRefused(flow, `tc_drive_flow=${sessionToken}; tc_drive_verifier=${flow.verifier}`);
    });

    it("started by another signed-in user", async () => {
      const flow = await setUp();
      const other = await signIn();
      outbound = [];
      const response = await callback(
        flow.back.searchParams,
        `${other.cookie}; tc_drive_flow=${flow.binding}; tc_drive_verifier=${flow.verifier}`,
      );
      expect(response.status).toBe(400);
      expect((await errorOf(response)).code).toBe("invalid_state");
      expect(outbound).not.toContain(env.GOOGLE_OAUTH_TOKEN_URL);
      expect(await profilesOf(other.userId)).toHaveLength(0);
      expect(await profilesOf(flow.userId)).toHaveLength(0);
    });
  });

  it("sends a browser back to the storage page with the error code", async () => {
    const { cookie: session } = await signIn();
    const { cookie } = await connect(session);
    const response = await callback({ error: "access_denied", state: "x" }, cookie, {
      "sec-fetch-mode": "navigate",
    });
    expect(response.status).toBe(302);
    const landing = new URL(response.headers.get("location")!);
    expect(`${landing.origin}${landing.pathname}`).toBe(`${env.WEB_ORIGIN}/storage`);
    expect(landing.searchParams.get("drive_error")).toBe("google_denied");
  });

  it("requires a refresh token (offline access)", async () => {
    const { cookie: session, userId } = await signIn();
    const { location, cookie } = await connect(session);
    const online = new URL(location);
    online.searchParams.delete("access_type");
    const back = await consent(online.toString());
    const response = await callback(back.searchParams, cookie);
    expect(response.status).toBe(400);
    expect((await errorOf(response)).code).toBe("drive_no_refresh_token");
    expect(await profilesOf(userId)).toHaveLength(0);
  });
});

describe("POST /api/drive/:profileId/disconnect", () => {
  it("revokes the grant at Google and deletes the profile", async () => {
    const { cookie, userId } = await signIn();
    const profile = await connectDrive(cookie, userId);
    const { refreshToken } = await secretOf(profile);
    outbound = [];
    const response = await call(`/api/drive/${profile.id}/disconnect`, {
      method: "POST",
      headers: fromWebApp(cookie),
    });
    expect(response.status).toBe(204);
    expect(outbound).toContain(env.GOOGLE_OAUTH_REVOKE_URL);
    expect(await refreshWorks(refreshToken)).toBe(false);
    expect(await profilesOf(userId)).toHaveLength(0);
  });

  it("is owner-scoped: another user's profile is a 404 and stays", async () => {
    const { cookie: owner, userId } = await signIn();
    const { cookie: stranger } = await signIn();
    const profile = await connectDrive(owner, userId);
    const response = await call(`/api/drive/${profile.id}/disconnect`, {
      method: "POST",
      headers: fromWebApp(stranger),
    });
    expect(response.status).toBe(404);
    expect((await errorOf(response)).code).toBe("storage_profile_not_found");
    expect(outbound).not.toContain(env.GOOGLE_OAUTH_REVOKE_URL);
    expect(await profilesOf(userId)).toHaveLength(1);
    expect(await refreshWorks((await secretOf(profile)).refreshToken)).toBe(true);
  });

  it("keeps the profile when Google cannot be reached (502), so it can be retried", async () => {
    const { cookie, userId } = await signIn();
    const profile = await connectDrive(cookie, userId);
    const response = await call(
      `/api/drive/${profile.id}/disconnect`,
      { method: "POST", headers: fromWebApp(cookie) },
      { ...env, GOOGLE_OAUTH_REVOKE_URL: "http://127.0.0.1:9/revoke" },
    );
    expect(response.status).toBe(502);
    expect((await errorOf(response)).code).toBe("google_unavailable");
    expect(await profilesOf(userId)).toHaveLength(1);
  });

  it("deletes a profile whose grant Google already revoked", async () => {
    const { cookie, userId } = await signIn();
    const profile = await connectDrive(cookie, userId);
    const { refreshToken } = await secretOf(profile);
    await fetch(`${env.GOOGLE_OAUTH_REVOKE_URL}?token=${encodeURIComponent(refreshToken)}`, {
      method: "POST",
    });
    const response = await call(`/api/drive/${profile.id}/disconnect`, {
      method: "POST",
      headers: fromWebApp(cookie),
    });
    expect(response.status).toBe(204);
    expect(await profilesOf(userId)).toHaveLength(0);
  });

  it("rejects an id that is not a UUID", async () => {
    const { cookie } = await signIn();
    const response = await call("/api/drive/nope/disconnect", {
      method: "POST",
      headers: fromWebApp(cookie),
    });
    expect(response.status).toBe(400);
  });
});
