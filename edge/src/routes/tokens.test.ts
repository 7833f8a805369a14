import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { apiTokens } from "@torreclou/db";
import { describe, expect, it } from "vitest";
import { fromWebApp, signIn } from "../../test/helpers.ts";
import { app } from "../app.ts";
import { createDb } from "../db/index.ts";
import { maxActiveTokens } from "./tokens.ts";

/** A request with an execution context, as in production (token auth records "last used" in waitUntil). */
async function call(path: string, init: RequestInit = {}): Promise<Response> {
  const ctx = createExecutionContext();
  const response = await app.request(path, init, env, ctx);
  await waitOnExecutionContext(ctx);
  return response;
}

interface TokenView {
  id: string;
  name: string;
  prefix: string;
  createdAt: string;
  lastUsedAt: string | null;
}

const json = (body: unknown) => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify(body),
});

async function create(cookie: string, name = "backup script"): Promise<TokenView & { token: string }> {
  const response = await call("/api/tokens", {
    ...json({ name }),
    headers: fromWebApp(cookie, json({}).headers),
  });
  expect(response.status).toBe(201);
  return (await response.json()) as TokenView & { token: string };
}

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

describe("API tokens", () => {
  it("creates a token shown once, which then signs requests in", async () => {
    const { cookie, userId } = await signIn();
    const created = await create(cookie, "  laptop  ");
    expect(created).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      name: "laptop",
      prefix: created.token.slice(0, 11),
      createdAt: expect.any(String),
      lastUsedAt: null,
      token: expect.stringMatching(/^tc_[A-Za-z0-9_-]{43}$/),
    });
    expect(Date.parse(created.createdAt)).not.toBeNaN();

    const me = await call("/api/auth/me", bearer(created.token));
    expect(me.status).toBe(200);
    expect(await me.json()).toMatchObject({ user: { id: userId }, via: "token" });

    // Using it is recorded.
    const list = await call("/api/tokens", { headers: { cookie } });
    const [listed] = ((await list.json()) as { tokens: TokenView[] }).tokens;
    expect(listed).toMatchObject({ id: created.id, lastUsedAt: expect.any(String) });
  });

  it("lists the caller's tokens without the token or its hash", async () => {
    const { cookie } = await signIn();
    const first = await create(cookie, "first");
    const second = await create(cookie, "second");
    const response = await call("/api/tokens", { headers: { cookie } });
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text).not.toContain(first.token);
    expect(text).not.toContain(second.token);
    expect(text).not.toMatch(/hash/i);
    const { tokens } = JSON.parse(text) as { tokens: TokenView[] };
    expect(tokens.map((t) => t.name)).toEqual(["second", "first"]);
    expect(Object.keys(tokens[0]!).sort()).toEqual(["createdAt", "id", "lastUsedAt", "name", "prefix"]);

    // The same list with the token itself as the credential.
    const viaToken = await call("/api/tokens", bearer(first.token));
    expect(((await viaToken.json()) as { tokens: TokenView[] }).tokens).toHaveLength(2);
  });

  it("revokes a token: it gets 401 afterwards and leaves the list", async () => {
    const { cookie } = await signIn();
    const { id, token } = await create(cookie);
    expect((await call("/api/auth/me", bearer(token))).status).toBe(200);

    const revoked = await call(`/api/tokens/${id}`, { method: "DELETE", headers: fromWebApp(cookie) });
    expect(revoked.status).toBe(204);
    expect(await revoked.text()).toBe("");

    const me = await call("/api/auth/me", bearer(token));
    expect(me.status).toBe(401);
    expect(await me.json()).toEqual({ error: { code: "unauthenticated", message: expect.any(String) } });
    expect((await call("/api/tokens", bearer(token))).status).toBe(401);

    const list = (await (await call("/api/tokens", { headers: { cookie } })).json()) as {
      tokens: TokenView[];
    };
    expect(list.tokens.map((t) => t.id)).not.toContain(id);

    // Revoking again: nothing active by that id any more.
    const again = await call(`/api/tokens/${id}`, { method: "DELETE", headers: fromWebApp(cookie) });
    expect(again.status).toBe(404);
  });

  it("a token can revoke itself", async () => {
    const { cookie } = await signIn();
    const { id, token } = await create(cookie);
    expect((await call(`/api/tokens/${id}`, { method: "DELETE", ...bearer(token) })).status).toBe(204);
    expect((await call("/api/auth/me", bearer(token))).status).toBe(401);
  });

  it("hides one user's tokens from another (404, not 403)", async () => {
    const alice = await signIn();
    const bob = await signIn();
    const { id, token } = await create(alice.cookie);

    const response = await call(`/api/tokens/${id}`, { method: "DELETE", headers: fromWebApp(bob.cookie) });
    expect(response.status).toBe(404);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe("token_not_found");
    const bobs = (await (await call("/api/tokens", { headers: { cookie: bob.cookie } })).json()) as {
      tokens: TokenView[];
    };
    expect(bobs.tokens).toEqual([]);
    // Alice's token still works.
    expect((await call("/api/auth/me", bearer(token))).status).toBe(200);
  });

  it("needs the browser session to create a token", async () => {
    const { cookie } = await signIn();
    const { token } = await create(cookie);
    const response = await call("/api/tokens", {
      ...json({ name: "copy" }),
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    });
    expect(response.status).toBe(403);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe("session_required");
  });

  it("rate limits creation per user", async () => {
    const { cookie } = await signIn();
    for (let i = 0; i < 10; i++) await create(cookie, `t${i}`);
    const response = await call("/api/tokens", {
      ...json({ name: "one too many" }),
      headers: fromWebApp(cookie, json({}).headers),
    });
    expect(response.status).toBe(429);
    expect(response.headers.get("retry-after")).toMatch(/^\d+$/);
    // Another user is not affected.
    await create((await signIn()).cookie);
  });

  it("requires sign-in", async () => {
    expect((await call("/api/tokens")).status).toBe(401);
    expect((await call("/api/tokens", json({ name: "x" }))).status).toBe(401);
    expect((await call(`/api/tokens/${crypto.randomUUID()}`, { method: "DELETE" })).status).toBe(401);
  });

  it("validates the name and the id with the JSON error shape", async () => {
    const { cookie } = await signIn();
    const headers = fromWebApp(cookie, { "content-type": "application/json" });
    for (const body of [{}, { name: "   " }, { name: "x".repeat(101) }, { name: 7 }]) {
      const response = await call("/api/tokens", { method: "POST", headers, body: JSON.stringify(body) });
      expect(response.status).toBe(400);
      const { error } = (await response.json()) as { error: { code: string; message: string } };
      expect(error.code).toBe("invalid_request");
      expect(error.message).toMatch(/^name: /);
    }
    const bad = await call("/api/tokens/not-a-uuid", { method: "DELETE", headers: fromWebApp(cookie) });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/UUID/);
  });

  it(`caps a user at ${maxActiveTokens} active tokens`, async () => {
    const { cookie, userId } = await signIn();
    // Fill up directly (the create route's rate limit is not what is under test).
    const { db, close } = createDb(env);
    try {
      await db.insert(apiTokens).values(
        Array.from({ length: maxActiveTokens }, (_, i) => ({
          userId,
          name: `t${i}`,
          tokenHash: randomHex(32),
          prefix: "tc_xxxxxxxx",
        })),
      );
    } finally {
      await close();
    }
    const response = await call("/api/tokens", {
      ...json({ name: "one more" }),
      headers: fromWebApp(cookie, json({}).headers),
    });
    expect(response.status).toBe(409);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe("too_many_tokens");
  });
});

function randomHex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}
