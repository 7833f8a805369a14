// Connecting OneDrive and Dropbox end to end inside workerd: the one connect
// flow (destinations/connect.ts) against each provider's double in the test
// stack (local/onedrive, local/dropbox), which checks the code exchange as the
// provider does (PKCE, single-use codes, redirect URI, client credentials).
// Postgres and Redis are the real local services.
import { env } from "cloudflare:workers";
import { decryptOAuthSecret, parseKeyring, sealedOf } from "@torreclou/contracts";
import { type StorageProfile, storageProfiles } from "@torreclou/db";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { fromWebApp, signIn } from "../../test/helpers.ts";
import { app } from "../app.ts";
import { createDb } from "../db/index.ts";

interface Case {
  kind: "onedrive" | "dropbox";
  label: string;
  base: string;
  tokenUrl: () => string;
  /** Scopes the consent URL must ask for. */
  scopes: string[];
  /** The provider's own consent parameters. */
  params: Record<string, string>;
  unconfigured: Record<string, string>;
  unavailable: string;
  /** The account the double's consent screen approves for a user signed in as `email`. */
  account(email: string): string;
}

const cases: Case[] = [
  {
    kind: "onedrive",
    label: "OneDrive",
    base: "/api/onedrive",
    tokenUrl: () => env.MICROSOFT_OAUTH_TOKEN_URL,
    scopes: ["offline_access", "Files.ReadWrite.AppFolder", "User.Read"],
    params: { response_mode: "query" },
    unconfigured: { MICROSOFT_CLIENT_ID: "", MICROSOFT_CLIENT_SECRET: "" },
    unavailable: "onedrive_unavailable",
    // Microsoft takes login_hint: the signed-in email is preselected.
    account: (email) => email,
  },
  {
    kind: "dropbox",
    label: "Dropbox",
    base: "/api/dropbox",
    tokenUrl: () => env.DROPBOX_OAUTH_TOKEN_URL,
    scopes: ["files.content.write", "files.content.read", "files.metadata.read", "account_info.read"],
    params: { token_access_type: "offline" },
    unconfigured: { DROPBOX_APP_KEY: "", DROPBOX_APP_SECRET: "" },
    unavailable: "dropbox_unavailable",
    // Dropbox takes no login hint: the double approves for its one consenting account.
    account: () => "dropbox-user@example.com",
  },
];

function call(path: string, init: RequestInit = {}, bindings: object = env): Promise<Response> {
  return Promise.resolve(app.request(path, init, bindings));
}

function cookiesFrom(response: Response): string {
  return response.headers
    .getSetCookie()
    .map((line) => line.split(";")[0]!)
    .join("; ");
}

async function errorOf(response: Response): Promise<{ code: string; message: string }> {
  return ((await response.json()) as { error: { code: string; message: string } }).error;
}

async function profilesOf(userId: string): Promise<StorageProfile[]> {
  const { db, close } = createDb(env);
  try {
    return await db.select().from(storageProfiles).where(eq(storageProfiles.userId, userId));
  } finally {
    await close();
  }
}

describe.each(cases)("connecting $label", (c) => {
  /** The whole dance for a signed-in user; returns the landing URL. */
  async function connect(session: string): Promise<URL> {
    const start = await call(`${c.base}/connect`, { headers: { cookie: session } });
    expect(start.status).toBe(302);
    // The double's consent screen approves at once and sends the browser back.
    const consent = await fetch(start.headers.get("location")!, { redirect: "manual" });
    expect(consent.status).toBe(302);
    const back = new URL(consent.headers.get("location")!);
    const response = await call(`${c.base}/callback?${back.searchParams}`, {
      headers: { cookie: `${session}; ${cookiesFrom(start)}` },
    });
    expect(response.status, await response.clone().text()).toBe(302);
    return new URL(response.headers.get("location")!);
  }

  it("asks for the provider's scopes with offline access, state and PKCE", async () => {
    const { cookie } = await signIn();
    const response = await call(`${c.base}/connect`, { headers: { cookie } });
    expect(response.status).toBe(302);
    const url = new URL(response.headers.get("location")!);
    expect(url.searchParams.get("scope")!.split(" ")).toEqual(c.scopes);
    for (const [k, v] of Object.entries(c.params)) expect(url.searchParams.get(k)).toBe(v);
    expect(url.searchParams.get("code_challenge_method")).toBe("S256");
    expect(url.searchParams.get("redirect_uri")).toBe(`http://127.0.0.1:8787${c.base}/callback`);
    for (const line of response.headers.getSetCookie())
      expect(line).toMatch(new RegExp(`Path=${c.base}(;|$)`));
  });

  it("saves a profile with the grant encrypted, renews it on reconnect, and lists it without secrets", async () => {
    const email = `${c.kind}-${crypto.randomUUID()}@example.com`;
    const { cookie, userId } = await signIn(email);
    const landing = await connect(cookie);
    expect(`${landing.origin}${landing.pathname}`).toBe(`${env.WEB_ORIGIN}/storage`);
    expect(landing.searchParams.get(c.kind)).toBe("connected");
    const [profile] = await profilesOf(userId);
    expect(profile).toMatchObject({
      id: landing.searchParams.get("profile"),
      kind: c.kind,
      name: `${c.label} (${c.account(email)})`,
      status: "active",
      isDefault: true,
      config: { accountEmail: c.account(email) },
    });
    const secret = await decryptOAuthSecret(
      parseKeyring(env.CREDENTIALS_KEYS),
      sealedOf(profile!),
      profile!.id,
    );
    expect(JSON.stringify(profile)).not.toContain(secret.refreshToken);
    const listed = await (await call("/api/storage", { headers: { cookie } })).text();
    expect(listed).toContain(`"${c.kind}":{"accountEmail":"${c.account(email)}"}`);
    expect(listed).not.toContain(secret.refreshToken);

    // The same account again: the profile is renewed, not doubled.
    const { db, close } = createDb(env);
    await db
      .update(storageProfiles)
      .set({ status: "needs_reconnect" })
      .where(eq(storageProfiles.id, profile!.id));
    await close();
    await connect(cookie);
    const again = await profilesOf(userId);
    expect(again).toHaveLength(1);
    expect(again[0]!.status).toBe("active");
  });

  it("refuses a stale or forged flow without redeeming the code", async () => {
    const { cookie, userId } = await signIn();
    const start = await call(`${c.base}/connect`, { headers: { cookie } });
    const consent = await fetch(start.headers.get("location")!, { redirect: "manual" });
    const back = new URL(consent.headers.get("location")!);
    // Without the flow's cookies (another browser).
    const response = await call(`${c.base}/callback?${back.searchParams}`, { headers: { cookie } });
    expect(response.status).toBe(400);
    expect((await errorOf(response)).code).toBe("invalid_state");
    expect(await profilesOf(userId)).toHaveLength(0);
  });

  it("sends a browser back to the storage page with the provider's refusal", async () => {
    const { cookie } = await signIn();
    const response = await call(`${c.base}/callback?error=access_denied&state=x`, {
      headers: { cookie, "sec-fetch-mode": "navigate" },
    });
    expect(response.status).toBe(302);
    const landing = new URL(response.headers.get("location")!);
    expect(landing.searchParams.get(`${c.kind}_error`)).toMatch(/_denied$/);
  });

  it("answers 503 when no OAuth client is configured", async () => {
    const { cookie } = await signIn();
    const response = await call(`${c.base}/connect`, { headers: { cookie } }, { ...env, ...c.unconfigured });
    expect(response.status).toBe(503);
    expect((await errorOf(response)).code).toBe(c.unavailable);
  });

  it("is removed by its disconnect (the grant ended), not by a plain delete", async () => {
    const { cookie, userId } = await signIn();
    await connect(cookie);
    const [profile] = await profilesOf(userId);
    const refused = await call(`/api/storage/${profile!.id}`, {
      method: "DELETE",
      headers: fromWebApp(cookie),
    });
    expect(refused.status).toBe(409);
    expect((await errorOf(refused)).code).toBe(`use_${c.kind}_disconnect`);

    const { refreshToken } = await decryptOAuthSecret(
      parseKeyring(env.CREDENTIALS_KEYS),
      sealedOf(profile!),
      profile!.id,
    );
    const response = await call(`${c.base}/${profile!.id}/disconnect`, {
      method: "POST",
      headers: fromWebApp(cookie),
    });
    expect(response.status).toBe(204);
    expect(await profilesOf(userId)).toHaveLength(0);
    if (c.kind === "dropbox") {
      // Dropbox revokes the grant: its refresh token no longer works.
      const refresh = await fetch(c.tokenUrl(), {
        method: "POST",
        body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: refreshToken }),
      });
      expect(refresh.status).toBe(400);
    }
  });
});
