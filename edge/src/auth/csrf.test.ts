// Cross-site request forgery against the real app, database and Redis: a
// page on another origin makes the browser send the session cookie with a
// "simple" request (text/plain or a form post, so no preflight). Each attempt
// must be refused before it changes anything.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { keys } from "@torreclou/contracts";
import { jobs, storageProfiles, users } from "@torreclou/db";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { addStorageProfile, redis, withDb } from "../../test/fixtures/db.ts";
import { send, submitJob, userWithStorage } from "../../test/fixtures/jobs.ts";
import { fromWebApp, signIn, webOrigin } from "../../test/helpers.ts";
import { app } from "../app.ts";

/** With an execution context, as in production (token auth uses waitUntil). */
async function call(path: string, init: RequestInit = {}): Promise<Response> {
  const ctx = createExecutionContext();
  const response = await app.request(path, init, env, ctx);
  await waitOnExecutionContext(ctx);
  return response;
}

const evil = "https://evil.example";

/** A cross-origin form post or text/plain POST, as any page can make one. */
function forged(cookie: string, kind: "text" | "form", origin: string | undefined = evil): RequestInit {
  const headers: Record<string, string> = { cookie };
  if (origin !== undefined) headers.origin = origin;
  return kind === "text"
    ? { method: "POST", headers: { ...headers, "content-type": "text/plain" }, body: '{"x":1}' }
    : {
        method: "POST",
        headers: { ...headers, "content-type": "application/x-www-form-urlencoded" },
        body: "x=1",
      };
}

async function expectCsrfRefusal(response: Response): Promise<void> {
  expect(response.status).toBe(403);
  const { error } = (await response.json()) as { error: { code: string; message: string } };
  expect(error.code).toBe("csrf_refused");
  expect(error.message).toContain(`only the web app at ${webOrigin} may change anything`);
}

const stateOf = async (jobId: string) =>
  withDb(
    async (db) => (await db.select({ state: jobs.state }).from(jobs).where(eq(jobs.id, jobId)))[0]?.state,
  );

const defaultOf = async (userId: string) =>
  withDb(async (db) =>
    (await db.select().from(storageProfiles).where(eq(storageProfiles.userId, userId)))
      .filter((p) => p.isDefault)
      .map((p) => p.id),
  );

async function newToken(cookie: string): Promise<string> {
  const response = await call("/api/tokens", {
    method: "POST",
    headers: fromWebApp(cookie, { "content-type": "application/json" }),
    body: JSON.stringify({ name: "script" }),
  });
  expect(response.status).toBe(201);
  return ((await response.json()) as { token: string }).token;
}

describe("state-changing requests with the session cookie", () => {
  it("refuses a cross-origin text/plain cancel and a form retry, and the job is untouched", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    await expectCsrfRefusal(await call(`/api/jobs/${job.id}/cancel`, forged(user.cookie, "text")));
    await expectCsrfRefusal(await call(`/api/jobs/${job.id}/cancel`, forged(user.cookie, "form")));
    expect(await stateOf(job.id)).toBe("queued");
    expect(await redis().get(keys.cancel(job.id))).toBeNull();

    expect((await send(user.cookie, "POST", `/api/jobs/${job.id}/cancel`)).status).toBe(200);
    await expectCsrfRefusal(await call(`/api/jobs/${job.id}/retry`, forged(user.cookie, "form")));
    await expectCsrfRefusal(
      await call(`/api/jobs/${job.id}`, { method: "DELETE", headers: { cookie: user.cookie, origin: evil } }),
    );
    expect(await stateOf(job.id)).toBe("cancelled");
  });

  it("refuses a cross-origin change of the default profile", async () => {
    const { cookie, userId } = await signIn();
    const first = await addStorageProfile(userId);
    const second = await addStorageProfile(userId, { isDefault: false });
    for (const kind of ["text", "form"] as const) {
      await expectCsrfRefusal(await call(`/api/storage/${second.id}/default`, forged(cookie, kind)));
    }
    expect(await defaultOf(userId)).toEqual([first.id]);
  });

  it("refuses a request with the cookie but no Origin at all", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    await expectCsrfRefusal(await call(`/api/jobs/${job.id}/cancel`, forged(user.cookie, "text", undefined)));
    expect(await stateOf(job.id)).toBe("queued");
  });

  it("refuses other origins of the same site and the opaque origin", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    const sameSite = new URL(webOrigin);
    sameSite.port = String(Number(sameSite.port || 80) + 1);
    for (const origin of [
      sameSite.origin,
      "null",
      webOrigin.replace("http:", "https:"),
      `${webOrigin}.evil`,
    ]) {
      await expectCsrfRefusal(await call(`/api/jobs/${job.id}/cancel`, forged(user.cookie, "text", origin)));
    }
    expect(await stateOf(job.id)).toBe("queued");
  });

  it("lets the web app's own requests through", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    const response = await call(`/api/jobs/${job.id}/cancel`, {
      method: "POST",
      headers: fromWebApp(user.cookie),
    });
    expect(response.status).toBe(200);
    expect(await stateOf(job.id)).toBe("cancelled");
  });

  it("leaves reads alone: a GET with the cookie works from anywhere (CORS keeps the answer from other pages)", async () => {
    const { cookie } = await signIn();
    const response = await call("/api/auth/me", { headers: { cookie, origin: evil } });
    expect(response.status).toBe(200);
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("refuses every state-changing route in the API document the same way, and documents it", async () => {
    const { cookie } = await signIn();
    const doc = (await (await call("/api/openapi.json")).json()) as {
      paths: Record<string, Record<string, { responses: Record<string, { description: string }> }>>;
    };
    const checked: string[] = [];
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const method of Object.keys(item)) {
        if (["get", "head", "options"].includes(method)) continue;
        expect(item[method]!.responses["403"]?.description, `${method} ${path}`).toContain("`csrf_refused`");
        const url = path.replace(/\{[^}]+\}/g, crypto.randomUUID());
        const response = await call(url, {
          method: method.toUpperCase(),
          headers: { cookie, origin: evil, "content-type": "text/plain" },
          body: "{}",
        });
        expect(response.status, `${method} ${path}`).toBe(403);
        expect(((await response.json()) as { error: { code: string } }).error.code).toBe("csrf_refused");
        checked.push(`${method} ${path}`);
      }
    }
    expect(checked).toEqual(
      expect.arrayContaining([
        "post /api/jobs/{id}/cancel",
        "post /api/storage/{id}/default",
        "delete /api/tokens/{id}",
      ]),
    );
  });
});

describe("API tokens", () => {
  it("need no Origin: scripts are not browsers", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    const token = await newToken(user.cookie);
    const response = await call(`/api/jobs/${job.id}/cancel`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
    });
    expect(response.status).toBe(200);
    expect(await stateOf(job.id)).toBe("cancelled");
  });
});

describe("signing in and out", () => {
  it("refuses a cross-origin logout, and the session goes on", async () => {
    const { cookie } = await signIn();
    for (const kind of ["text", "form"] as const) {
      const response = await call("/api/auth/logout", forged(cookie, kind));
      await expectCsrfRefusal(response);
      expect(response.headers.get("set-cookie")).toBeNull();
    }
    await expectCsrfRefusal(await call("/api/auth/logout", forged(cookie, "text", undefined)));
    expect((await call("/api/auth/me", { headers: { cookie } })).status).toBe(200);
    expect((await call("/api/auth/logout", { method: "POST", headers: fromWebApp(cookie) })).status).toBe(
      204,
    );
    expect((await call("/api/auth/me", { headers: { cookie } })).status).toBe(401);
  });

  it("refuses a cross-origin dev sign-in (login CSRF): no session, no account", async () => {
    const email = `csrf-${crypto.randomUUID()}@example.com`;
    for (const origin of [evil, undefined]) {
      const response = await call("/api/auth/dev", {
        method: "POST",
        headers: { "content-type": "text/plain", ...(origin ? { origin } : {}) },
        body: JSON.stringify({ email }),
      });
      await expectCsrfRefusal(response);
      expect(response.headers.get("set-cookie")).toBeNull();
    }
    const found = await withDb((db) => db.select().from(users).where(eq(users.email, email)));
    expect(found).toEqual([]);
  });
});
