import { describe, expect, it } from "vitest";
import { call, fromWebApp, signIn } from "../../test/helpers.ts";

describe("GET /api/health", () => {
  it("reports Postgres and Redis healthy with their latency", async () => {
    const response = await call("/api/health");
    expect(response.status).toBe(200);
    const body = (await response.json()) as Record<string, { ok: boolean; latencyMs: number }>;
    expect(body.postgres).toMatchObject({ ok: true, latencyMs: expect.any(Number) });
    expect(body.redis).toMatchObject({ ok: true, latencyMs: expect.any(Number) });
  });

  it("answers an unknown route with the JSON error shape", async () => {
    const response = await call("/api/nope");
    expect(response.status).toBe(404);
    expect(await response.json()).toEqual({
      error: { code: "not_found", message: "No route for GET /api/nope" },
    });
  });
});

describe("bad request bodies", () => {
  it("answers malformed JSON with a 400 in the JSON error shape, not a 500", async () => {
    const { cookie } = await signIn();
    const response = await call("/api/tokens", {
      method: "POST",
      headers: fromWebApp(cookie, { "content-type": "application/json" }),
      body: "{not json",
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe("invalid_request");
  });
});
