// The operator's view: refused (as a missing route) to everyone but the
// accounts in OPERATOR_EMAILS; shows stuck and exhausted jobs, the workers'
// heartbeat records and per-user usage; retries an exhausted job into its
// owner's turn.
import { env } from "cloudflare:workers";
import { exhaustedReason, type WorkerBeat, workersKey } from "@torreclou/contracts";
import { jobs, jobTransitions } from "@torreclou/db";
import { claimJob, transitionJob } from "@torreclou/db/jobs";
import { and, eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { redis, withDb } from "../../test/fixtures/db.ts";
import { messagesFor, submitJob, type TestUser, userWithStorage } from "../../test/fixtures/jobs.ts";
import { call, fromWebApp, signIn } from "../../test/helpers.ts";
import { app } from "../app.ts";
import { ConfigError, parseConfig } from "../config.ts";

interface Overview {
  queue: {
    queued: number;
    admitted: number;
    oldest: { id: string; ageSeconds: number } | null;
    stream: { pending: number; undelivered: number | null } | null;
  };
  stuck: { id: string; state: string; email: string; ageSeconds: number }[];
  exhausted: { id: string; email: string; reason: string; attempt: number }[];
  workers: (WorkerBeat & { seen: boolean })[];
  users: { userId: string; email: string; runningJobs: number; queuedJobs: number; monthlyBytes: number }[];
  thresholds: { stuckAfterSeconds: number; queuedTooLongSeconds: number };
}

/** A request of the web app, to an edge whose operators are `operators`. */
function sendAs(operators: string, cookie: string | undefined, method: string, path: string) {
  return app.request(
    path,
    { method, headers: cookie ? fromWebApp(cookie) : {} },
    { ...env, OPERATOR_EMAILS: operators },
  );
}

async function signedInAs(): Promise<TestUser & { email: string }> {
  const email = `operator-${crypto.randomUUID()}@example.com`;
  const { cookie, userId } = await signIn(email);
  return { cookie, userId, profileId: "", email };
}

/** Moves a job as a worker would: claimed, then into `to`. Returns its attempt. */
async function workerMoves(jobId: string, to: "downloading" | "failed", reason?: string) {
  return withDb(async (db) => {
    const job = await claimJob(db, jobId);
    await transitionJob(db, { jobId, to, cause: "worker", attempt: job!.attempt, reason });
    return job!.attempt;
  });
}

describe("OPERATOR_EMAILS", () => {
  it("is a set of lowercased addresses; anything else is named", () => {
    expect(
      parseConfig({ ...env, OPERATOR_EMAILS: " Ops@Example.com, b@example.com c@example.com" })
        .OPERATOR_EMAILS,
    ).toEqual(new Set(["ops@example.com", "b@example.com", "c@example.com"]));
    expect(parseConfig({ ...env, OPERATOR_EMAILS: "" }).OPERATOR_EMAILS.size).toBe(0);
    expect(() => parseConfig({ ...env, OPERATOR_EMAILS: "ops@example.com,nobody" })).toThrow(ConfigError);
    expect(() => parseConfig({ ...env, OPERATOR_EMAILS: "nobody" })).toThrow(
      /OPERATOR_EMAILS: not an email address: nobody/,
    );
  });
});

describe("/api/operator", () => {
  it("answers anyone but an operator like a route that does not exist", async () => {
    const operator = await signedInAs();
    const someone = await signedInAs();
    const missing = await call("/api/no-such-route");
    const missingBody = (await missing.json()) as { error: { code: string } };
    for (const [operators, cookie] of [
      [operator.email, undefined],
      [operator.email, someone.cookie],
      ["", operator.cookie],
    ] as const) {
      const response = await sendAs(operators, cookie, "GET", "/api/operator");
      expect(response.status).toBe(404);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe(
        missingBody.error.code,
      );
      const retry = await sendAs(
        operators,
        cookie,
        "POST",
        `/api/operator/jobs/${crypto.randomUUID()}/retry`,
      );
      expect(retry.status).toBe(404);
    }
    // The web app learns whether to show the page from /me.
    const me = async (cookie: string) =>
      (
        (await (await sendAs(operator.email.toUpperCase(), cookie, "GET", "/api/auth/me")).json()) as {
          operator: boolean;
        }
      ).operator;
    expect(await me(operator.cookie)).toBe(true);
    expect(await me(someone.cookie)).toBe(false);
    // Not in the public API document.
    const doc = await (await call("/api/openapi.json")).text();
    expect(doc).not.toContain("/api/operator");
  });

  it("shows stuck and exhausted jobs, workers and usage, and retries an exhausted job in its owner's turn", async () => {
    const operator = await signedInAs();
    const owner = await userWithStorage();
    const ownerEmail = (
      (await (await call("/api/auth/me", { headers: { cookie: owner.cookie } })).json()) as {
        user: { email: string };
      }
    ).user.email;
    const stuck = await submitJob(owner);
    await workerMoves(stuck.id, "downloading");
    const waiting = await submitJob(owner);
    const gaveUp = await submitJob(owner);
    const plainFailure = await submitJob(owner);
    // Stuck: no update for two hours (downloading); waiting since two hours ago (queued).
    const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000);
    await withDb(async (db) => {
      await db.update(jobs).set({ updatedAt: twoHoursAgo }).where(eq(jobs.id, stuck.id));
      await db
        .update(jobTransitions)
        .set({ at: twoHoursAgo })
        .where(and(eq(jobTransitions.jobId, waiting.id), eq(jobTransitions.toState, "queued")));
    });
    await workerMoves(gaveUp.id, "failed", exhaustedReason());
    await workerMoves(plainFailure.id, "failed", "The storage refused the upload.");
    // A worker's heartbeat record, as node-worker/src/heartbeat.ts writes it.
    const workerId = `worker-${crypto.randomUUID()}`;
    const beat: WorkerBeat = {
      id: workerId,
      host: "box-1",
      version: "1.2.3",
      pid: 4242,
      jobs: [stuck.id],
      concurrency: 2,
      startedAt: new Date(Date.now() - 60_000).toISOString(),
      seenAt: new Date().toISOString(),
    };
    const gone = `worker-${crypto.randomUUID()}`;
    await redis().hset(workersKey, {
      [workerId]: JSON.stringify(beat),
      [gone]: JSON.stringify({
        ...beat,
        id: gone,
        seenAt: new Date(Date.now() - 2 * 86_400_000).toISOString(),
      }),
    });

    const response = await sendAs(operator.email, operator.cookie, "GET", "/api/operator");
    expect(response.status).toBe(200);
    const view = (await response.json()) as Overview;
    expect(view.thresholds).toEqual({ stuckAfterSeconds: 1800, queuedTooLongSeconds: 3600 });
    const stuckIds = view.stuck.filter((j) => j.email === ownerEmail).map((j) => [j.id, j.state]);
    expect(stuckIds).toContainEqual([stuck.id, "downloading"]);
    expect(stuckIds).toContainEqual([waiting.id, "queued"]);
    expect(stuckIds.map(([id]) => id)).not.toContain(gaveUp.id);
    expect(view.stuck.find((j) => j.id === stuck.id)!.ageSeconds).toBeGreaterThan(7000);
    const exhausted = view.exhausted.filter((j) => j.email === ownerEmail);
    expect(exhausted.map((j) => j.id)).toEqual([gaveUp.id]);
    expect(exhausted[0]!.reason).toBe(exhaustedReason());
    expect(view.workers.find((w) => w.id === workerId)).toEqual({ ...beat, seen: true });
    // A record older than a day is a crashed worker's: dropped, and removed from Redis.
    expect(view.workers.map((w) => w.id)).not.toContain(gone);
    expect(await redis().hget(workersKey, gone)).toBeNull();
    expect(view.users.find((u) => u.userId === owner.userId)).toEqual({
      userId: owner.userId,
      email: ownerEmail,
      runningJobs: 1,
      queuedJobs: 1,
      monthlyBytes: 4 * 68_000,
    });
    expect(view.queue.queued).toBeGreaterThanOrEqual(1);
    expect(view.queue.oldest).not.toBeNull();
    // The stream's group as Redis counts it (a worker of another test may hold entries).
    // Redis cannot always count unread entries (after entries were deleted from the stream: null).
    expect(view.queue.stream?.pending).toEqual(expect.any(Number));
    const unread = view.queue.stream?.undelivered;
    expect(unread === null || typeof unread === "number").toBe(true);
    // The same numbers as the owner's own GET /api/usage.
    const own = (await (await call("/api/usage", { headers: { cookie: owner.cookie } })).json()) as {
      usage: Record<string, number>;
    };
    expect(own.usage).toEqual({ runningJobs: 1, queuedJobs: 1, monthlyBytes: 4 * 68_000 });

    // Only a job that used up its attempts is retried here.
    const refused = await sendAs(
      operator.email,
      operator.cookie,
      "POST",
      `/api/operator/jobs/${plainFailure.id}/retry`,
    );
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("not_exhausted");

    const retried = await sendAs(
      operator.email,
      operator.cookie,
      "POST",
      `/api/operator/jobs/${gaveUp.id}/retry`,
    );
    expect(retried.status).toBe(200);
    const { job } = (await retried.json()) as { job: { id: string; state: string; attempt: number } };
    expect(job).toMatchObject({ id: gaveUp.id, state: "queued" });
    const [row] = await withDb((db) => db.select().from(jobs).where(eq(jobs.id, gaveUp.id)));
    expect(row).toMatchObject({ state: "queued", failureReason: null });
    // Fair turns: the owner's `waiting` job is in the queue unclaimed, so this one waits its turn.
    expect(row?.admittedAt).toBeNull();
    expect(await messagesFor(gaveUp.id)).toEqual([]);
    const history = await withDb((db) =>
      db.select().from(jobTransitions).where(eq(jobTransitions.jobId, gaveUp.id)),
    );
    // A person's retry: the worker counts its attempts afresh from here.
    expect(history.at(-1)).toMatchObject({
      toState: "queued",
      cause: "user",
      reason: "retried by the operator",
    });

    // The waiting one leaves the line (its owner cancels it): the retried job's turn.
    expect(
      (await call(`/api/jobs/${waiting.id}/cancel`, { method: "POST", headers: fromWebApp(owner.cookie) }))
        .status,
    ).toBe(200);
    expect(await messagesFor(gaveUp.id)).toHaveLength(1);

    // Twice is refused: it is queued now.
    const again = await sendAs(
      operator.email,
      operator.cookie,
      "POST",
      `/api/operator/jobs/${gaveUp.id}/retry`,
    );
    expect(again.status).toBe(409);
    // Without the web app's Origin, the operator's cookie does not count (CSRF).
    const forged = await app.request(
      `/api/operator/jobs/${gaveUp.id}/retry`,
      { method: "POST", headers: { cookie: operator.cookie, origin: "https://evil.example" } },
      { ...env, OPERATOR_EMAILS: operator.email },
    );
    expect(forged.status).toBe(403);
  });
});
