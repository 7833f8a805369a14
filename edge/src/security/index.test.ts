import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call, signIn } from "../../test/helpers.ts";
import { app } from "../app.ts";

const webOrigin = new URL(env.WEB_ORIGIN).origin;

function expectHardened(response: Response): void {
  const h = response.headers;
  expect(h.get("x-content-type-options")).toBe("nosniff");
  expect(h.get("referrer-policy")).toBe("no-referrer");
  expect(h.get("x-frame-options")).toBe("DENY");
  expect(h.get("content-security-policy")).toMatch(/frame-ancestors 'none'/);
  expect(h.get("cross-origin-opener-policy")).toBe("same-origin");
  expect(h.get("x-powered-by")).toBeNull();
}

describe("security headers", () => {
  it("are on success, error, not-found and redirect responses alike", async () => {
    const responses = [
      await call("/api/health"),
      await call("/api/auth/me"), // 401
      await call("/api/nope"), // 404
      await call("/api/tokens", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{",
      }),
      await call("/api/auth/google"), // 302 (or 429/503: headers all the same)
    ];
    for (const response of responses) expectHardened(response);
  });

  it("give JSON a policy that loads nothing and is never cached", async () => {
    const response = await call("/api/auth/me");
    expect(response.headers.get("content-security-policy")).toBe(
      "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    );
    expect(response.headers.get("cache-control")).toBe("no-store");
  });

  it("send Strict-Transport-Security over https only", async () => {
    const plain = await app.request("http://torreclou.test/api/nope", {}, env);
    expect(plain.headers.get("strict-transport-security")).toBeNull();
    const secure = await app.request("https://torreclou.test/api/nope", {}, env);
    expect(secure.headers.get("strict-transport-security")).toBe("max-age=31536000; includeSubDomains");
    expectHardened(secure);
  });
});

describe("CORS", () => {
  it("answers the web app's preflight with credentials allowed", async () => {
    const response = await call("/api/tokens", {
      method: "OPTIONS",
      headers: {
        origin: webOrigin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
      },
    });
    expect(response.status).toBe(204);
    const h = response.headers;
    expect(h.get("access-control-allow-origin")).toBe(webOrigin);
    expect(h.get("access-control-allow-credentials")).toBe("true");
    expect(h.get("access-control-allow-methods")).toContain("POST");
    expect(h.get("access-control-allow-methods")).toContain("DELETE");
    expect(h.get("access-control-allow-headers")?.toLowerCase()).toContain("content-type");
    expect(h.get("access-control-allow-headers")?.toLowerCase()).toContain("authorization");
    expect(h.get("access-control-max-age")).toBe("600");
    expect(h.get("vary")).toMatch(/Origin/);
    expectHardened(response);
  });

  it("lets the web app read responses, with the session cookie", async () => {
    const { cookie } = await signIn();
    const response = await call("/api/auth/me", { headers: { origin: webOrigin, cookie } });
    expect(response.status).toBe(200);
    expect(response.headers.get("access-control-allow-origin")).toBe(webOrigin);
    expect(response.headers.get("access-control-allow-credentials")).toBe("true");
    expect(response.headers.get("access-control-expose-headers")).toContain("Retry-After");
    expect(response.headers.get("vary")).toMatch(/Origin/);
  });

  it("keeps CORS headers on error responses for the web app", async () => {
    const response = await call("/api/auth/me", { headers: { origin: webOrigin } });
    expect(response.status).toBe(401);
    expect(response.headers.get("access-control-allow-origin")).toBe(webOrigin);
  });

  it("grants nothing to any other origin", async () => {
    for (const origin of ["https://evil.example", "http://127.0.0.1:5174", "null"]) {
      const preflight = await call("/api/tokens", {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST" },
      });
      expect(preflight.status).toBe(403);
      expect(((await preflight.json()) as { error: { code: string } }).error.code).toBe("origin_not_allowed");
      expect(preflight.headers.get("access-control-allow-origin")).toBeNull();
      expect(preflight.headers.get("access-control-allow-credentials")).toBeNull();

      const simple = await call("/api/health", { headers: { origin } });
      expect(simple.headers.get("access-control-allow-origin")).toBeNull();
      expect(simple.headers.get("access-control-allow-credentials")).toBeNull();
      expect(simple.headers.get("vary")).toMatch(/Origin/);
    }
  });

  it("leaves requests without an Origin alone", async () => {
    const response = await call("/api/health");
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
  });
});
