import { env } from "cloudflare:workers";
import { keys, progressField, queue } from "@torreclou/contracts";
import { describe, expect, it } from "vitest";
import { redis } from "../../test/fixtures/db.ts";
import { failRedis } from "../../test/fixtures/faults.ts";
import { publishProgress, send, submitJob, userWithStorage } from "../../test/fixtures/jobs.ts";
import { signIn } from "../../test/helpers.ts";
import { app } from "../app.ts";

interface ProgressBody {
  events: { id: string; event: { phase: string; bytes: { downloaded: number } } }[];
  cursor: string;
  more: boolean;
  snapshot: { bytes: { downloaded: number } } | null;
}

const progressOf = async (cookie: string, jobId: string, query = "") => {
  const response = await send(cookie, "GET", `/api/jobs/${jobId}/progress${query}`);
  return { status: response.status, body: (await response.json()) as ProgressBody };
};

describe("GET /api/jobs/:id/progress", () => {
  it("returns events after a cursor and the latest snapshot", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);

    const empty = await progressOf(user.cookie, job.id);
    expect(empty).toEqual({ status: 200, body: { events: [], cursor: "0-0", more: false, snapshot: null } });

    const first = await publishProgress(job.id, { bytes: { total: 68_000, downloaded: 1000, uploaded: 0 } });
    const second = await publishProgress(job.id, { bytes: { total: 68_000, downloaded: 5000, uploaded: 0 } });
    const all = await progressOf(user.cookie, job.id);
    expect(all.status).toBe(200);
    expect(all.body.events.map((e) => e.id)).toEqual([first, second]);
    expect(all.body.events[1]!.event).toMatchObject({ phase: "downloading", bytes: { downloaded: 5000 } });
    expect(all.body.cursor).toBe(second);
    expect(all.body.snapshot).toMatchObject({ bytes: { downloaded: 5000 } });

    const third = await publishProgress(job.id, { phase: "uploading" });
    const newer = await progressOf(user.cookie, job.id, `?after=${all.body.cursor}`);
    expect(newer.body.events.map((e) => e.id)).toEqual([third]);
    const none = await progressOf(user.cookie, job.id, `?after=${third}`);
    expect(none.body).toMatchObject({ events: [], cursor: third });

    const paged = await progressOf(user.cookie, job.id, "?limit=2");
    expect(paged.body.events).toHaveLength(2);
    expect(paged.body.more).toBe(true);
  });

  it("skips a malformed event but moves the cursor past it", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    const bad = await redis().xadd(keys.progress(job.id), "*", { [progressField]: '{"not":"an event"}' });
    const good = await publishProgress(job.id);
    const result = await progressOf(user.cookie, job.id);
    expect(result.body.events.map((e) => e.id)).toEqual([good]);
    const onlyBad = await progressOf(user.cookie, job.id, `?after=0-0&limit=1`);
    expect(onlyBad.body).toMatchObject({ events: [], cursor: bad, more: true });
  });

  it("is 404 for another user's job and for unknown jobs; 400 for a bad cursor", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    await publishProgress(job.id);
    const other = await signIn();
    const stranger = await send(other.cookie, "GET", `/api/jobs/${job.id}/progress`);
    expect(stranger.status).toBe(404);
    expect(await stranger.json()).toMatchObject({ error: { code: "job_not_found" } });
    expect((await send(user.cookie, "GET", `/api/jobs/${crypto.randomUUID()}/progress`)).status).toBe(404);
    for (const after of [
      "abc",
      "1-2-3",
      "-",
      "(1-0",
      "99999999999999999999999-0",
      "99999999999999999999-0",
      "18446744073709551616-0",
      "0-18446744073709551616",
    ]) {
      const response = await send(
        user.cookie,
        "GET",
        `/api/jobs/${job.id}/progress?after=${encodeURIComponent(after)}`,
      );
      expect(response.status, after).toBe(400);
      expect((await response.json()) as unknown, after).toMatchObject({
        error: { code: "invalid_request", message: expect.stringMatching(/^after: must be a cursor/) },
      });
    }
    // Also for a stranger: the cursor is judged before anything else.
    const huge = await send(other.cookie, "GET", `/api/jobs/${job.id}/progress?after=99999999999999999999-0`);
    expect(huge.status).toBe(400);
  });

  it("takes the largest stream ids as cursors", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    const first = await publishProgress(job.id);
    const max = "18446744073709551615";
    const last = await progressOf(user.cookie, job.id, `?after=${max}-${max}`);
    expect(last).toMatchObject({ status: 200, body: { events: [], cursor: `${max}-${max}`, more: false } });
    expect(last.body.snapshot).not.toBeNull();
    const [ms] = first.split("-");
    const carried = await progressOf(user.cookie, job.id, `?after=${Number(ms) - 1}-${max}`);
    expect(carried.body.events.map((e) => e.id)).toEqual([first]);
  });

  it("reads nothing of another user's job but its owner key", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    await publishProgress(job.id);
    const other = await signIn();
    for (const lostOwnerKey of [false, true]) {
      if (lostOwnerKey) await redis().del(keys.owner(job.id));
      const fault = failRedis([]);
      let status: number;
      try {
        status = (await send(other.cookie, "GET", `/api/jobs/${job.id}/progress?after=0-0`)).status;
      } finally {
        fault.restore();
      }
      expect(status).toBe(404);
      // The poll's one script stops at the owner key: the job is not marked watched by a stranger.
      expect(await redis().exists(keys.watched(job.id))).toBe(0);
      if (lostOwnerKey) expect(await redis().get(keys.owner(job.id))).toBeNull();
    }
  });

  it("costs one Redis command and no SQL, confirms the session in it, and restores a lost owner key from Postgres", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    await publishProgress(job.id);
    const fault = failRedis([]);
    let first: Awaited<ReturnType<typeof progressOf>>;
    try {
      first = await progressOf(user.cookie, job.id);
    } finally {
      fault.restore();
    }
    // Session, owner, watched mark, snapshot and events: one script.
    expect(fault.seen).toEqual(["EVAL"]);
    expect(first.status).toBe(200);
    expect(first.body.events).toHaveLength(1);
    expect(first.body.snapshot).not.toBeNull();
    // The poll marks the job watched for a while, so its worker publishes often.
    const ttl = await redis().ttl(keys.watched(job.id));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(queue.watchedSeconds);
    // And no database: with Postgres unreachable the poll still answers.
    const noDatabase = { ...env, DATABASE_URL: "postgres://nobody:nothing@127.0.0.1:9/none" };
    const offline = await app.request(
      `/api/jobs/${job.id}/progress`,
      { headers: { cookie: user.cookie } },
      noDatabase,
    );
    expect(offline.status).toBe(200);

    await redis().del(keys.owner(job.id));
    expect((await progressOf(user.cookie, job.id)).status).toBe(200);
    expect(await redis().get(keys.owner(job.id))).toBe(user.userId);
    const other = await signIn();
    await redis().del(keys.owner(job.id));
    expect((await send(other.cookie, "GET", `/api/jobs/${job.id}/progress`)).status).toBe(404);
  });

  it("refuses a session that was logged out, though its cookie still verifies", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    expect((await progressOf(user.cookie, job.id)).status).toBe(200);
    await redis().del(`torreclou:session:${sessionOf(user.cookie)}`);
    const after = await send(user.cookie, "GET", `/api/jobs/${job.id}/progress`);
    expect(after.status).toBe(401);
    expect(await after.json()).toMatchObject({ error: { code: "unauthenticated" } });
  });
});

/** The session id inside a session cookie (the JWT's `sid`). */
function sessionOf(cookie: string): string {
  const token = /tc_session=([^;]+)/.exec(cookie)?.[1] ?? "";
  const payload = JSON.parse(atob((token.split(".")[1] ?? "").replaceAll("-", "+").replaceAll("_", "/")));
  return String(payload.sid);
}

describe("GET /api/progress", () => {
  it("returns snapshots of the caller's jobs only", async () => {
    const user = await userWithStorage();
    const [a, b] = [await submitJob(user), await submitJob(user)];
    await publishProgress(a.id, { bytes: { total: 10, downloaded: 7, uploaded: 2 } });
    const stranger = await userWithStorage();
    const theirs = await submitJob(stranger);
    await publishProgress(theirs.id);
    const unknown = crypto.randomUUID();

    const response = await send(
      user.cookie,
      "GET",
      `/api/progress?ids=${a.id},${b.id},${theirs.id},${unknown}`,
    );
    expect(response.status).toBe(200);
    const body = (await response.json()) as { snapshots: Record<string, unknown> };
    expect(Object.keys(body.snapshots).sort()).toEqual([a.id, b.id].sort());
    expect(body.snapshots[a.id]).toMatchObject({ bytes: { downloaded: 7, uploaded: 2 } });
    expect(body.snapshots[b.id]).toBeNull();
  });

  it("reads the snapshots of the caller's jobs only", async () => {
    const user = await userWithStorage();
    const mine = await submitJob(user);
    const stranger = await userWithStorage();
    const theirs = await submitJob(stranger);
    await publishProgress(theirs.id);
    const fault = failRedis([]);
    try {
      expect((await send(user.cookie, "GET", `/api/progress?ids=${mine.id},${theirs.id}`)).status).toBe(200);
    } finally {
      fault.restore();
    }
    // One script: the session, both owner keys, and only the caller's snapshot read and marked watched.
    expect(fault.seen).toEqual(["EVAL"]);
    expect(await redis().exists(keys.watched(mine.id))).toBe(1);
    expect(await redis().exists(keys.watched(theirs.id))).toBe(0);
  });

  it("refuses missing, malformed and too many ids", async () => {
    const { cookie } = await signIn();
    const many = Array.from({ length: 51 }, () => crypto.randomUUID()).join(",");
    for (const query of ["", "?ids=", "?ids=nope", `?ids=${many}`]) {
      const response = await send(cookie, "GET", `/api/progress${query}`);
      expect(response.status, query).toBe(400);
    }
  });
});
