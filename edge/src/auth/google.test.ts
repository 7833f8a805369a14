// Google sign-in end to end inside workerd: the app's real outbound requests
// (arctic's token exchange, jose's JWKS fetch) are answered by the double in
// test/google.ts; Postgres and Redis are the real local services.
import { env } from "cloudflare:workers";
import { users } from "@torreclou/db";
import { eq } from "drizzle-orm";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type Approval, GoogleDouble } from "../../test/google.ts";
import { app } from "../app.ts";
import { createDb } from "../db/index.ts";

let google: GoogleDouble;
beforeEach(() => {
  google = new GoogleDouble(env.GOOGLE_CLIENT_ID, env.GOOGLE_CLIENT_SECRET);
});
afterEach(() => google.restore());

/**
 * Each test signs in from its own address, so the per-address sign-in rate
 * limit stays out of the way: as on Cloudflare, the edge trusts cf-connecting-ip.
 * A random /64 of the IPv6 documentation prefix (IPv6 callers are counted per
 * /64): one of 250 IPv4 addresses was shared by two tests of this file about
 * one run in ten, and the rate-limit test then found the limit partly used.
 */
let ip = "";
beforeEach(() => {
  const group = () => Math.floor(Math.random() * 0x10000).toString(16);
  ip = `2001:db8:${group()}:${group()}::1`;
});
const onCloudflare = { ...env, CLIENT_IP_HEADER: "cf-connecting-ip" };

function call(path: string, init: RequestInit = {}, bindings: object = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("cf-connecting-ip", ip);
  return Promise.resolve(app.request(path, { ...init, headers }, { ...onCloudflare, ...bindings }));
}

/** The `name=value` pairs a browser would send back, from a response's Set-Cookie headers. */
function cookiesFrom(response: Response): Map<string, string> {
  const jar = new Map<string, string>();
  for (const line of response.headers.getSetCookie()) {
    const [pair] = line.split(";");
    const eq = pair!.indexOf("=");
    jar.set(pair!.slice(0, eq), pair!.slice(eq + 1));
  }
  return jar;
}

const cookieHeader = (jar: Map<string, string>) =>
  [...jar]
    .filter(([, v]) => v !== "")
    .map(([k, v]) => `${k}=${v}`)
    .join("; ");

/** Starts sign-in as a browser would; returns Google's URL and the flow cookies. */
async function start(query = ""): Promise<{ location: string; cookie: string; response: Response }> {
  const response = await call(`/api/auth/google${query}`);
  expect(response.status).toBe(302);
  return {
    location: response.headers.get("location")!,
    cookie: cookieHeader(cookiesFrom(response)),
    response,
  };
}

function callback(params: Record<string, string>, cookie: string, headers: Record<string, string> = {}) {
  return call(`/api/auth/google/callback?${new URLSearchParams(params)}`, {
    headers: { cookie, ...headers },
  });
}

/** The whole dance: start, consent at Google (with the given approval), come back. */
async function signInWithGoogle(approval: Approval = {}, query = "") {
  const { location, cookie } = await start(query);
  const { code, state } = google.approve(location, approval);
  const response = await callback({ code, state }, cookie);
  return { response, code, state, cookie };
}

async function errorOf(response: Response): Promise<{ code: string; message: string }> {
  return ((await response.json()) as { error: { code: string; message: string } }).error;
}

async function userBySub(sub: string) {
  const { db, close } = createDb(env);
  try {
    const [row] = await db.select().from(users).where(eq(users.googleSub, sub));
    return row;
  } finally {
    await close();
  }
}

describe("GET /api/auth/google", () => {
  it("redirects to Google with state, PKCE and the sign-in scopes", async () => {
    const { location, response } = await start();
    const url = new URL(location);
    expect(`${url.origin}${url.pathname}`).toBe("https://accounts.google.com/o/oauth2/v2/auth");
    expect(url.searchParams.get("client_id")).toBe(env.GOOGLE_CLIENT_ID);
    expect(url.searchParams.get("redirect_uri")).toBe(env.GOOGLE_REDIRECT_URI);
    expect(url.searchParams.get("scope")).toBe("openid email profile");
    expect(url.searchParams.get("code_challenge_method")).toBe("S256");
    expect(url.searchParams.get("code_challenge")).toMatch(/^[A-Za-z0-9_-]{43}$/);

    const jar = cookiesFrom(response);
    expect(jar.get("tc_google_state")).toBe(url.searchParams.get("state"));
    expect(jar.get("tc_google_verifier")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    for (const line of response.headers.getSetCookie()) {
      expect(line).toMatch(/HttpOnly/i);
      expect(line).toMatch(/Secure/i);
      expect(line).toMatch(/SameSite=Lax/i);
      expect(line).toMatch(/Path=\/api\/auth\/google(;|$)/);
      expect(line).toMatch(/Max-Age=600/);
    }
    expect(response.headers.get("cache-control")).toBe("no-store");
  });

  it("derives the callback URL from the request when GOOGLE_REDIRECT_URI is unset", async () => {
    const response = await call("/api/auth/google", {}, { GOOGLE_REDIRECT_URI: "" });
    const url = new URL(response.headers.get("location")!);
    expect(url.searchParams.get("redirect_uri")).toBe("http://localhost/api/auth/google/callback");
  });

  it("refuses a returnTo outside the web app", async () => {
    for (const returnTo of ["//evil.example", "https://evil.example/", "/\\evil.example"]) {
      const response = await call(`/api/auth/google?returnTo=${encodeURIComponent(returnTo)}`);
      expect(response.status).toBe(400);
      expect((await errorOf(response)).code).toBe("invalid_request");
    }
  });

  it("answers 503 when Google sign-in is not configured", async () => {
    const bindings = { GOOGLE_CLIENT_ID: "", GOOGLE_CLIENT_SECRET: "" };
    for (const path of ["/api/auth/google", "/api/auth/google/callback?code=x&state=y"]) {
      const response = await call(path, {}, bindings);
      expect(response.status).toBe(503);
      const error = await errorOf(response);
      expect(error.code).toBe("google_sign_in_unavailable");
      expect(error.message).toMatch(/Google sign-in is not configured/);
    }
  });
});

describe("GET /api/auth/google/callback", () => {
  it("signs a new user in: verified ID token, user row, working session, back to the web app", async () => {
    const sub = "109876543210987654321";
    const { response } = await signInWithGoogle(
      { claims: { sub, email: "Ada.Lovelace@gmail.com", name: "Ada Lovelace" } },
      "?returnTo=%2Fjobs%3Fview%3Dall",
    );
    expect(response.status).toBe(302);
    expect(response.headers.get("location")).toBe(`${env.WEB_ORIGIN}/jobs?view=all`);
    expect(google.calls.token).toBe(1);

    const jar = cookiesFrom(response);
    const session = jar.get("tc_session");
    expect(session).toBeTruthy();
    // The flow's cookies are cleared: the attempt cannot be replayed from this browser.
    expect(jar.get("tc_google_state")).toBe("");
    expect(jar.get("tc_google_verifier")).toBe("");

    const me = await call("/api/auth/me", { headers: { cookie: `tc_session=${session}` } });
    expect(me.status).toBe(200);
    expect(await me.json()).toMatchObject({
      user: {
        email: "Ada.Lovelace@gmail.com",
        name: "Ada Lovelace",
        pictureUrl: "https://lh3.googleusercontent.com/a/test-picture",
      },
      via: "session",
    });
    const row = await userBySub(sub);
    expect(row).toMatchObject({ email: "Ada.Lovelace@gmail.com", name: "Ada Lovelace" });
    expect(row!.lastLoginAt).toBeInstanceOf(Date);
  });

  it("updates a returning user's email, name and picture, keeping the same account", async () => {
    const sub = String(Date.now()) + String(Math.floor(Math.random() * 1e6));
    await signInWithGoogle({ claims: { sub, email: "old@gmail.com", name: "Old Name" } });
    const before = await userBySub(sub);
    await signInWithGoogle({
      claims: {
        sub,
        email: "new@gmail.com",
        name: "New Name",
        picture: "https://lh3.googleusercontent.com/a/new",
      },
    });
    const after = await userBySub(sub);
    expect(after).toMatchObject({
      id: before!.id,
      email: "new@gmail.com",
      name: "New Name",
      pictureUrl: "https://lh3.googleusercontent.com/a/new",
    });
    expect(after!.lastLoginAt!.getTime()).toBeGreaterThanOrEqual(before!.lastLoginAt!.getTime());
  });

  it("rejects a state that does not match the browser's cookie, before talking to Google", async () => {
    const { location, cookie } = await start();
    const { code } = google.approve(location);
    const response = await callback({ code, state: "forged-state" }, cookie);
    expect(response.status).toBe(400);
    expect((await errorOf(response)).code).toBe("invalid_state");
    expect(google.calls.token).toBe(0);
  });

  it("rejects a callback opened in another browser (no flow cookies)", async () => {
    const { location } = await start();
    const { code, state } = google.approve(location);
    const response = await callback({ code, state }, "");
    expect(response.status).toBe(400);
    expect((await errorOf(response)).code).toBe("invalid_state");
  });

  it("rejects a reused code: Google answers invalid_grant the second time", async () => {
    const first = await signInWithGoogle();
    expect(first.response.status).toBe(302);
    // Replaying the same callback, even with the original cookies.
    const replay = await callback({ code: first.code, state: first.state }, first.cookie);
    expect(replay.status).toBe(401);
    const error = await errorOf(replay);
    expect(error.code).toBe("google_exchange_failed");
    expect(error.message).toMatch(/invalid_grant/);
    expect(replay.headers.getSetCookie().some((c) => c.startsWith("tc_session="))).toBe(false);
  });

  it("reports Google's error parameter (the user cancelled)", async () => {
    const { location, cookie } = await start();
    const state = new URL(location).searchParams.get("state")!;
    const response = await callback({ error: "access_denied", state }, cookie);
    expect(response.status).toBe(400);
    expect(await errorOf(response)).toEqual({
      code: "google_denied",
      message: "Google sign-in was cancelled.",
    });
  });

  it("sends a browser back to the web app with the error instead of JSON", async () => {
    const { location, cookie } = await start();
    const state = new URL(location).searchParams.get("state")!;
    const response = await callback({ error: "access_denied", state }, cookie, {
      accept: "text/html,application/xhtml+xml",
      "sec-fetch-mode": "navigate",
    });
    expect(response.status).toBe(302);
    expect(response.headers.get("location")).toBe(`${env.WEB_ORIGIN}/?signin_error=google_denied`);
  });

  it.each<[string, Approval, number, RegExp]>([
    [
      "another application's token (wrong audience)",
      { claims: { aud: "someone-else.apps.googleusercontent.com" } },
      401,
      /another application/,
    ],
    ["an expired ID token", { claims: { iat: 1_600_000_000, exp: 1_600_003_600 } }, 401, /expired/],
    ["a token from another issuer", { claims: { iss: "https://evil.example" } }, 401, /not issued by Google/],
    ["a token signed with a key Google does not publish", { signWith: "stranger" }, 401, /signature/],
    ["an unverified email", { claims: { email_verified: false } }, 403, /Verify .* with Google/],
    ["a token response without an ID token", { omitIdToken: true }, 401, /no ID token/],
  ])("rejects %s and creates no user", async (_, approval, status, message) => {
    const sub = `rejected-${crypto.randomUUID()}`;
    const { response } = await signInWithGoogle({ ...approval, claims: { sub, ...approval.claims } });
    expect(response.status).toBe(status);
    const error = await errorOf(response);
    expect(error.code).toBe(status === 403 ? "email_unverified" : "invalid_id_token");
    expect(error.message).toMatch(message);
    expect(response.headers.getSetCookie().some((c) => c.startsWith("tc_session="))).toBe(false);
    expect(await userBySub(sub)).toBeUndefined();
  });

  it("accepts the issuer without the scheme, as Google also sends it", async () => {
    const { response } = await signInWithGoogle({ claims: { iss: "accounts.google.com" } });
    expect(response.status).toBe(302);
  });

  it("rate limits sign-in attempts per address", async () => {
    // 30 a minute. The window slides: a run crossing a minute's boundary may get a few more in.
    let last: Response | undefined;
    const statuses: number[] = [];
    while (last?.status !== 429 && statuses.length < 60) {
      last = await call("/api/auth/google");
      statuses.push(last.status);
    }
    expect(statuses.slice(0, 30).every((s) => s === 302)).toBe(true);
    expect(last!.status).toBe(429);
    expect(last!.headers.get("retry-after")).toMatch(/^\d+$/);
    expect((await errorOf(last!)).code).toBe("rate_limited");
  });
});
