import type { ClientResponse } from "hono/client";
import { describe, expect, it } from "vitest";
import { ApiError, call, onUnauthenticated, toApiError } from "./client.ts";

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

describe("the API error shape", () => {
  it("reads code, message and details", async () => {
    const error = await toApiError(
      json(400, {
        error: {
          code: "invalid_request",
          message: "bucket: must be a bucket name",
          details: { target: "json", issues: [{ path: "bucket", message: "must be a bucket name" }] },
        },
      }),
    );
    expect(error).toBeInstanceOf(ApiError);
    expect(error.status).toBe(400);
    expect(error.code).toBe("invalid_request");
    expect(error.message).toBe("bucket: must be a bucket name");
    expect(error.fieldIssues()).toEqual({ bucket: "must be a bucket name" });
  });

  it("says something useful when the body is not the JSON shape", async () => {
    const error = await toApiError(new Response("<html>Bad gateway</html>", { status: 502 }));
    expect(error.code).toBe("http_error");
    expect(error.message).toMatch(/server had a problem/);
  });
});

describe("call", () => {
  it("returns the body of a success", async () => {
    // A plain Response stands in for what the typed client returns.
    const body = await call(
      Promise.resolve(json(200, { ok: true }) as unknown as ClientResponse<{ ok: boolean }, 200, "json">),
    );
    expect(body).toEqual({ ok: true });
  });

  it("throws ApiError and tells listeners about a 401", async () => {
    let told = 0;
    const stop = onUnauthenticated(() => told++);
    const failing = Promise.resolve(
      json(401, { error: { code: "unauthenticated", message: "Sign in to continue" } }),
    );
    const typed = failing as unknown as Promise<ClientResponse<{ ok: boolean }, 200 | 401, "json">>;
    await expect(call(typed)).rejects.toMatchObject({ status: 401, code: "unauthenticated" });
    expect(told).toBe(1);
    stop();
  });

  it("turns a network failure into a readable error", async () => {
    await expect(call(Promise.reject(new TypeError("Failed to fetch")))).rejects.toMatchObject({
      code: "network",
      status: 0,
    });
  });
});
