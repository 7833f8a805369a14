import { env } from "cloudflare:workers";
import { sign } from "hono/jwt";
import { describe, expect, it } from "vitest";
import { call, fromWebApp, signIn, webOrigin } from "../../test/helpers.ts";

const me = (cookie?: string) => call("/api/auth/me", cookie ? { headers: { cookie } } : {});

describe("sessions", () => {
  it("signs in with the dev sign-in and sets a locked-down cookie", async () => {
    const response = await call("/api/auth/dev", {
      method: "POST",
      headers: { "content-type": "application/json", origin: webOrigin },
      body: JSON.stringify({ email: "Ada@Example.com" }),
    });
    expect(response.status).toBe(200);
    const cookie = response.headers.get("set-cookie") ?? "";
    expect(cookie).toMatch(/^tc_session=/);
    expect(cookie).toMatch(/HttpOnly/i);
    expect(cookie).toMatch(/Secure/i);
    expect(cookie).toMatch(/SameSite=Lax/i);
    expect(cookie).toMatch(/Max-Age=86400/);
  });

  it("knows who is signed in", async () => {
    const { cookie, userId } = await signIn("grace@example.com");
    const response = await me(cookie);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({
      user: { id: userId, email: "grace@example.com" },
      via: "session",
    });
  });

  it("rejects a missing session with the JSON error shape", async () => {
    const response = await me();
    expect(response.status).toBe(401);
    expect(await response.json()).toEqual({
      error: { code: "unauthenticated", message: expect.any(String) },
    });
  });

  it("rejects a tampered session", async () => {
    const { cookie } = await signIn();
    const [name, token] = cookie.split("=") as [string, string];
    const [header, payload, signature] = token.split(".") as [string, string, string];
    const forged = JSON.parse(atob(payload.replaceAll("-", "+").replaceAll("_", "/"))) as Record<
      string,
      unknown
    >;
    forged.sub = crypto.randomUUID();
    const body = btoa(JSON.stringify(forged)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
    expect((await me(`${name}=${header}.${body}.${signature}`)).status).toBe(401);
    expect((await me(`${name}=${token.slice(0, -2)}xx`)).status).toBe(401);
  });

  it("rejects an expired session even though its signature is good", async () => {
    const { cookie } = await signIn();
    const token = cookie.split("=")[1]!;
    const payload = JSON.parse(atob(token.split(".")[1]!.replaceAll("-", "+").replaceAll("_", "/"))) as {
      sub: string;
      sid: string;
    };
    const past = Math.floor(Date.now() / 1000) - 3600;
    const expired = await sign({ ...payload, iat: past - 60, exp: past }, env.SESSION_SECRET, "HS256");
    expect((await me(`tc_session=${expired}`)).status).toBe(401);
  });

  it("rejects a token signed with another secret", async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await sign(
      { sub: crypto.randomUUID(), sid: "x", iat: now, exp: now + 60 },
      "another-secret-of-32-characters!!",
      "HS256",
    );
    expect((await me(`tc_session=${token}`)).status).toBe(401);
  });

  it("ends the session on logout: the same cookie no longer works", async () => {
    const { cookie } = await signIn();
    expect((await me(cookie)).status).toBe(200);
    const out = await call("/api/auth/logout", { method: "POST", headers: fromWebApp(cookie) });
    expect(out.status).toBe(204);
    expect(out.headers.get("set-cookie")).toMatch(/tc_session=;/);
    expect((await me(cookie)).status).toBe(401);
  });

  it("refuses a malformed Authorization header", async () => {
    const response = await call("/api/auth/me", { headers: { authorization: "Basic abc" } });
    expect(response.status).toBe(401);
  });

  it("validates the dev sign-in body", async () => {
    const response = await call("/api/auth/dev", {
      method: "POST",
      headers: { "content-type": "application/json", origin: webOrigin },
      body: JSON.stringify({ email: "not an email" }),
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe("invalid_request");
  });
});
