// Per-user quotas and fair turns at the edge: each refusal has its status,
// code, numbers and reset, and writes nothing; a running limit keeps extra
// jobs queued (never refused) until one ends; GET /api/usage shows the
// caller's own numbers.
import { env } from "cloudflare:workers";
import { queue } from "@torreclou/contracts";
import { jobs, torrents, users } from "@torreclou/db";
import { claimJob, transitionJob } from "@torreclou/db/jobs";
import { eq, inArray } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { redis, withDb } from "../../test/fixtures/db.ts";
import { type JobView, messagesFor, type TestUser, userWithStorage } from "../../test/fixtures/jobs.ts";
import { makeTorrent, randomMagnet, toBase64 } from "../../test/fixtures/torrents.ts";
import { fromWebApp } from "../../test/helpers.ts";
import { app } from "../app.ts";
import { ConfigError, parseConfig } from "../config.ts";
import { monthOf } from "./quotas.ts";

interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}

/** A request as the web app sends it, to an edge configured with these quota settings. */
async function sendWith(
  quotas: Record<string, string>,
  user: TestUser,
  method: string,
  path: string,
  body?: unknown,
): Promise<Response> {
  return app.request(
    path,
    {
      method,
      headers: fromWebApp(user.cookie, body === undefined ? {} : { "content-type": "application/json" }),
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    },
    { ...env, ...quotas },
  );
}

/** The default fixture torrent (68,000 bytes in three files: 40,000 + 25,000 + 3,000). */
async function create(quotas: Record<string, string>, user: TestUser, extra: Record<string, unknown> = {}) {
  const torrent = await makeTorrent();
  const response = await sendWith(quotas, user, "POST", "/api/jobs", {
    torrent: toBase64(torrent.bytes),
    ...extra,
  });
  return { response, torrent };
}

async function created(quotas: Record<string, string>, user: TestUser, extra: Record<string, unknown> = {}) {
  const { response } = await create(quotas, user, extra);
  expect(response.status, await response.clone().text()).toBe(201);
  return ((await response.json()) as { job: JobView }).job;
}

const jobIdsOf = (userId: string) =>
  withDb(async (db) =>
    (await db.select({ id: jobs.id }).from(jobs).where(eq(jobs.userId, userId))).map((j) => j.id).sort(),
  );

/** Nothing of a refused job was written: no new job row, no torrent row, no queue entry naming an unknown job. */
async function expectNothingWritten(userId: string, before: string[], infoHash: string, since: string) {
  expect(await jobIdsOf(userId)).toEqual(before);
  expect(await withDb((db) => db.select().from(torrents).where(eq(torrents.infoHash, infoHash)))).toEqual([]);
  const entries = await redis().xrange(queue.stream, `(${since}`, "+");
  const named = Object.values(entries).map((fields) => {
    const job = fields.job as unknown;
    return ((typeof job === "string" ? JSON.parse(job) : job) as { jobId: string }).jobId;
  });
  if (named.length > 0) {
    const known = await withDb(async (db) =>
      (await db.select({ id: jobs.id }).from(jobs).where(inArray(jobs.id, named))).map((j) => j.id),
    );
    expect(new Set(named)).toEqual(new Set(known));
  }
}

/** The id of the newest entry of the jobs stream now. */
async function streamTip(): Promise<string> {
  const last = await redis().xrevrange(queue.stream, "+", "-", 1);
  return Object.keys(last)[0] ?? "0-0";
}

/** As a worker does when it takes a job and starts downloading. */
function start(jobId: string) {
  return withDb(async (db) => {
    const job = await claimJob(db, jobId);
    await transitionJob(db, { jobId, to: "downloading", cause: "worker", attempt: job!.attempt });
  });
}

describe("quota settings", () => {
  it("are whole numbers, or empty for no limit; anything else is named", () => {
    expect(parseConfig({ ...env, QUOTA_RUNNING_JOBS: "" })).toMatchObject({
      QUOTA_RUNNING_JOBS: null,
      QUOTA_QUEUED_JOBS: null,
      QUOTA_MONTHLY_BYTES: null,
    });
    expect(parseConfig({ ...env, QUOTA_MONTHLY_BYTES: "53687091200" }).QUOTA_MONTHLY_BYTES).toBe(
      53_687_091_200,
    );
    for (const [name, value] of [
      ["QUOTA_QUEUED_JOBS", "lots"],
      ["QUOTA_RUNNING_JOBS", "0"],
      ["QUOTA_MONTHLY_BYTES", "1.5"],
    ] as const) {
      let error: unknown;
      try {
        parseConfig({ ...env, [name]: value });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).issues.join()).toMatch(new RegExp(`^${name}: must be a whole number`));
    }
  });
});

describe("fair turns at the edge", () => {
  it("lets a user's first job into the queue at once and keeps the next waiting its turn", async () => {
    const user = await userWithStorage();
    const first = await created({}, user);
    const second = await created({}, user);
    expect(first.enqueuedAt).not.toBeNull();
    expect(await messagesFor(first.id)).toHaveLength(1);
    // Queued all the same; its turn comes when a worker takes the first.
    expect(second).toMatchObject({ state: "queued", enqueuedAt: null });
    expect(await messagesFor(second.id)).toEqual([]);
  });
});

describe("quotas on job creation", () => {
  it("refuses a job beyond the queued limit with 429, saying which limit and the numbers, and writes nothing", async () => {
    const quotas = { QUOTA_QUEUED_JOBS: "2" };
    const user = await userWithStorage();
    await created(quotas, user);
    await created(quotas, user);
    const before = await jobIdsOf(user.userId);
    const since = await streamTip();
    const { response, torrent } = await create(quotas, user);
    expect(response.status).toBe(429);
    const { error } = (await response.json()) as ErrorBody;
    expect(error.code).toBe("quota_queued_jobs");
    expect(error.message).toBe(
      "You have 2 jobs waiting to start, the most allowed (2). Add this one when one of them has started or been cancelled.",
    );
    expect(error.details).toEqual({ quota: "queuedJobs", limit: 2, used: 2, resetsAt: null });
    // No time is known at which a queued job starts.
    expect(response.headers.get("retry-after")).toBeNull();
    await expectNothingWritten(user.userId, before, torrent.infoHash, since);

    // A job that starts frees a place.
    await start(before[0]!);
    expect((await create(quotas, user)).response.status).toBe(201);
    // Retrying a failed job puts it back in line: refused too while the line is full.
    const failed = await created({}, user);
    await withDb((db) => transitionJob(db, { jobId: failed.id, to: "failed", cause: "system" }));
    const retry = await sendWith(quotas, user, "POST", `/api/jobs/${failed.id}/retry`);
    expect(retry.status).toBe(429);
    expect(((await retry.json()) as ErrorBody).error.code).toBe("quota_queued_jobs");
    expect((await withDb((db) => db.select().from(jobs).where(eq(jobs.id, failed.id))))[0]?.state).toBe(
      "failed",
    );
  });

  it("refuses a job beyond the monthly bytes with 403, the numbers and when the allowance renews", async () => {
    const quotas = { QUOTA_MONTHLY_BYTES: "100000" };
    const user = await userWithStorage();
    await created(quotas, user); // 68,000 bytes
    // Only the selected files count: 25,000 more is 93,000.
    const picked = await created(quotas, user, { files: [1] });
    expect(picked.bytes.total).toBe(25_000);
    const before = await jobIdsOf(user.userId);
    const since = await streamTip();
    const { response, torrent } = await create(quotas, user, { files: [0] }); // 40,000: 133,000 > 100,000
    expect(response.status).toBe(403);
    const { error } = (await response.json()) as ErrorBody;
    const { resetsAt } = monthOf(new Date());
    const day = resetsAt.toLocaleDateString("en-GB", {
      day: "numeric",
      month: "long",
      year: "numeric",
      timeZone: "UTC",
    });
    expect(error.code).toBe("quota_monthly_bytes");
    expect(error.message).toBe(
      `This job's 39 KiB would take this month's transfers to 130 KiB, over your allowance of 98 KiB (91 KiB used). The allowance renews on ${day} (00:00 UTC).`,
    );
    expect(error.details).toEqual({
      quota: "monthlyBytes",
      limit: 100_000,
      used: 93_000,
      requested: 40_000,
      resetsAt: resetsAt.toISOString(),
    });
    const retryAfter = Number(response.headers.get("retry-after"));
    // Seconds until the first of next month, 00:00 UTC (a minute's slack for a slow machine).
    expect(Math.abs(Date.now() + retryAfter * 1000 - resetsAt.getTime())).toBeLessThan(60_000);
    await expectNothingWritten(user.userId, before, torrent.infoHash, since);

    // Used up exactly: nothing more goes, a magnet (its size unknown yet) included.
    const full = await sendWith({ QUOTA_MONTHLY_BYTES: "93000" }, user, "POST", "/api/jobs", {
      magnet: randomMagnet().uri,
    });
    expect(full.status).toBe(403);
    expect(((await full.json()) as ErrorBody).error.message).toBe(
      `You have used this month's allowance of 91 KiB (91 KiB in the jobs you created). The allowance renews on ${day} (00:00 UTC).`,
    );
    expect(await jobIdsOf(user.userId)).toEqual(before);
  });

  it("keeps jobs beyond the running limit queued, not refused, and starts the next when one ends", async () => {
    const quotas = { QUOTA_RUNNING_JOBS: "1" };
    const user = await userWithStorage();
    const first = await created(quotas, user);
    await start(first.id);
    const second = await created(quotas, user);
    expect(second).toMatchObject({ state: "queued", enqueuedAt: null });
    expect(await messagesFor(second.id)).toEqual([]);
    // The edge recorded the limit for the workers, who let the next job in when one ends.
    const [row] = await withDb((db) => db.select().from(users).where(eq(users.id, user.userId)));
    expect(row?.runningLimit).toBe(1);

    // The running job ends (here: cancelled): the second one's turn.
    expect((await sendWith(quotas, user, "POST", `/api/jobs/${first.id}/cancel`)).status).toBe(200);
    expect(await messagesFor(second.id)).toHaveLength(1);
    const [next] = await withDb((db) => db.select().from(jobs).where(eq(jobs.id, second.id)));
    expect(next?.enqueuedAt).not.toBeNull();
  });
});

describe("GET /api/usage", () => {
  it("shows the caller's limits and usage, and nobody else's", async () => {
    const quotas = { QUOTA_RUNNING_JOBS: "5", QUOTA_QUEUED_JOBS: "100", QUOTA_MONTHLY_BYTES: "53687091200" };
    const user = await userWithStorage();
    const other = await userWithStorage();
    const first = await created(quotas, user);
    await created(quotas, user, { files: [2] });
    await created(quotas, user, { magnet: randomMagnet().uri, torrent: undefined });
    await start(first.id);
    await created(quotas, other);

    const response = await sendWith(quotas, user, "GET", "/api/usage");
    expect(response.status).toBe(200);
    const { resetsAt, start: monthStart } = monthOf(new Date());
    expect(await response.json()).toEqual({
      limits: { runningJobs: 5, queuedJobs: 100, monthlyBytes: 53_687_091_200 },
      // The magnet counts no bytes until its files are known.
      usage: { runningJobs: 1, queuedJobs: 2, monthlyBytes: 68_000 + 3_000 },
      month: { start: monthStart.toISOString(), resetsAt: resetsAt.toISOString() },
    });

    const fresh = await userWithStorage();
    const none = await sendWith({}, fresh, "GET", "/api/usage");
    expect(await none.json()).toMatchObject({
      limits: { runningJobs: null, queuedJobs: null, monthlyBytes: null },
      usage: { runningJobs: 0, queuedJobs: 0, monthlyBytes: 0 },
    });
    expect((await app.request("/api/usage", {}, env)).status).toBe(401);
  });

  it("is in the OpenAPI document", async () => {
    const doc = (await (await app.request("/api/openapi.json", {}, env)).json()) as {
      paths: Record<string, { get?: { summary?: string } }>;
    };
    expect(doc.paths["/api/usage"]?.get?.summary).toBe("Your quotas and usage");
  });
});
