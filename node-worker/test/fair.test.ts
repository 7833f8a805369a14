// Fair turns against the real queue: Postgres, Redis, the worker's own
// read/claim/lease code, a tracker and aria2c. A user's jobs enter the shared
// stream one at a time (admitNext), so a user with 200 queued jobs holds at
// most one entry ahead of another user's first job; a running limit keeps
// the rest queued until one ends; and a worker killed while holding a job
// leaves the user's turn intact: the job is reclaimed, completes, and the
// next one follows.
//
// Jobs that must hold a worker slot until the test lets go are on a torrent
// nobody seeds (the no-peers and stall limits raised out of reach): they wait
// in `downloading` until cancelled, which is the signal that frees the slot.
import { type ChildProcess, spawn } from "node:child_process";
import { resolve } from "node:path";
import { keys, queue } from "@torreclou/contracts";
import { type Job, jobs } from "@torreclou/db";
import { admitNext } from "@torreclou/db/jobs";
import { asc, eq, isNotNull, notInArray } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { MadeTorrent } from "../../local/seeder/index.ts";
import {
  cancelJob,
  type Env,
  enqueue,
  expectStoredExactly,
  jobRow,
  MiB,
  makeFixture,
  otherUser,
  seedFixtures,
  setupEnv,
  startWorker,
  submitJob,
  waitFor,
  waitForState,
  watchedSnapshot,
  workerEnv,
} from "./helpers.ts";

const root = resolve(import.meta.dirname, "../..");
let env: Env;
/** Nobody seeds it: a job on it holds its slot until cancelled. */
let held: MadeTorrent;
const stops: (() => Promise<void>)[] = [];
const children: ChildProcess[] = [];

/** Slots stay taken until the test frees them: no peer or stall limit ends a job first. */
const holdingSlots = {
  WORKER_CONCURRENCY: "2",
  WORKER_NO_PEERS_TIMEOUT_MS: String(60 * 60_000),
  WORKER_STALL_TIMEOUT_MS: String(60 * 60_000),
};

beforeAll(async () => {
  env = await setupEnv(2);
  held = await makeFixture(env, "never-seeded", [{ path: "never-seeded", size: 64 * 1024 }]);
});

afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill("SIGKILL");
  for (const stop of stops.splice(0)) await stop();
  // A clean slate for the next test: no live job, no stream (a worker's start creates it again).
  await env.db
    .update(jobs)
    .set({ state: "cancelled" })
    .where(notInArray(jobs.state, ["completed", "failed", "cancelled"]));
  await env.redis.flushdb();
});

afterAll(async () => {
  await env?.cleanup();
});

async function worker(extra: Record<string, string> = {}) {
  const { worker } = await startWorker(env, { ...holdingSlots, ...extra });
  stops.push(() => worker.shutdown(5_000));
  return worker;
}

/** As the edge creates a job: the row, then the user's next job let in if it is their turn, and its message. */
async function submitInTurn(userId: string, profileId: string, made: MadeTorrent): Promise<Job> {
  const job = await submitJob(env, { made, profileId, userId, enqueue: false });
  await letNextIn(userId);
  return job;
}

async function letNextIn(userId: string, runningLimit?: number | null): Promise<void> {
  const next = await admitNext(env.db, userId, { runningLimit });
  if (next) await enqueue(env, { id: next.id, userId });
}

/** As the edge cancels: the row, the flag, a clean-up entry; then the user's next job if it is their turn. */
async function cancel(jobId: string): Promise<void> {
  const job = await jobRow(env, jobId);
  await cancelJob(env, jobId);
  await letNextIn(job.userId);
}

/** Claimed jobs of all users, in the order workers claimed them. */
async function claimOrder(): Promise<Job[]> {
  return env.db.select().from(jobs).where(isNotNull(jobs.claimedAt)).orderBy(asc(jobs.claimedAt));
}

async function userJobs(userId: string): Promise<Job[]> {
  return env.db.select().from(jobs).where(eq(jobs.userId, userId)).orderBy(asc(jobs.createdAt), asc(jobs.id));
}

/** Run entries of a user's jobs in the stream that no worker has been handed yet. */
async function undeliveredOf(userId: string): Promise<string[]> {
  const groups = (await env.redis.xinfo("GROUPS", queue.stream)) as unknown[][];
  const group = groups.find((g) => g[g.indexOf("name") + 1] === queue.group);
  const lastDelivered = String(group?.[group.indexOf("last-delivered-id") + 1] ?? "0-0");
  const entries = await env.redis.xrange(queue.stream, `(${lastDelivered}`, "+");
  const ids: string[] = [];
  for (const [, fields] of entries) {
    const at = fields.indexOf("job");
    if (at < 0) continue;
    const message = JSON.parse(fields[at + 1] ?? "{}") as { jobId: string; cleanup?: boolean };
    if (message.cleanup) continue;
    if ((await env.redis.get(keys.owner(message.jobId))) === userId) ids.push(message.jobId);
  }
  return ids;
}

describe("fair turns", () => {
  it("a user with 200 queued jobs delays another user's first job by at most one free slot", async () => {
    const a = await otherUser(env);
    const b = await otherUser(env);
    const aJobs: Job[] = [];
    for (let i = 0; i < 200; i++) aJobs.push(await submitInTurn(a.userId, a.profileId, held));
    // Before any worker runs: one of A's 200 is in the stream, the rest wait in Postgres.
    expect(await undeliveredOf(a.userId)).toEqual([aJobs[0]!.id]);

    await worker();
    // Both slots busy with A's jobs, and A's next one in line behind them.
    const [a1, a2] = await waitFor("both slots busy with A's jobs", async () => {
      const claimed = await claimOrder();
      if (claimed.length < 2) return undefined;
      for (const job of claimed) await waitForState(env, job.id, ["downloading"]);
      return (await undeliveredOf(a.userId)).length === 1 ? claimed : undefined;
    });
    expect([a1!.id, a2!.id]).toEqual([aJobs[0]!.id, aJobs[1]!.id]);
    const aRows = await userJobs(a.userId);
    expect(aRows.filter((j) => j.admittedAt === null)).toHaveLength(197);
    expect(await undeliveredOf(a.userId)).toEqual([aJobs[2]!.id]);

    // B's first job goes into the stream at once, behind at most A's one.
    const b1 = await submitInTurn(b.userId, b.profileId, held);
    expect((await jobRow(env, b1.id)).admittedAt).not.toBeNull();
    expect(await undeliveredOf(b.userId)).toEqual([b1.id]);

    // A slot frees: A's job that was already in line before B came takes it...
    await cancel(a1!.id);
    const third = await waitFor("a third job started", async () => (await claimOrder())[2]);
    expect(third.id).toBe(aJobs[2]!.id);
    await waitForState(env, third.id, ["downloading"]);
    // ...and A's next one lines up behind B's, not before it.
    expect(await undeliveredOf(a.userId)).toEqual([aJobs[3]!.id]);
    expect(await undeliveredOf(b.userId)).toEqual([b1.id]);

    // The next slot is B's.
    await cancel(a2!.id);
    const fourth = await waitFor("a fourth job started", async () => (await claimOrder())[3]);
    expect(fourth.id).toBe(b1.id);
    await waitForState(env, b1.id, ["downloading"]);
    // A's 200 jobs never had more than one entry in line at a time: 196 still wait in Postgres.
    expect((await userJobs(a.userId)).filter((j) => j.admittedAt === null)).toHaveLength(196);
  });

  it("a running limit keeps a user's extra jobs queued, then starts them as others end", async () => {
    const c = await otherUser(env);
    // The edge records the operator's limit (1) as it lets the user's first job in.
    const first = await submitJob(env, {
      made: held,
      profileId: c.profileId,
      userId: c.userId,
      enqueue: false,
    });
    await letNextIn(c.userId, 1);
    const second = await submitInTurn(c.userId, c.profileId, held);
    const w = await worker();
    await waitForState(env, first.id, ["downloading"]);
    // The worker has a free slot, yet the second job waits its turn in Postgres, queued.
    expect(w.activeJobs).toEqual([first.id]);
    const waiting = await jobRow(env, second.id);
    expect(waiting).toMatchObject({ state: "queued", admittedAt: null, claimedAt: null });
    expect(await undeliveredOf(c.userId)).toEqual([]);

    // The first one ends: the second starts.
    await cancel(first.id);
    await waitForState(env, second.id, ["downloading"]);
    expect((await jobRow(env, second.id)).claimedAt!.getTime()).toBeGreaterThanOrEqual(
      (await jobRow(env, first.id)).finishedAt!.getTime(),
    );
  });

  it("a worker killed while holding a user's job: the job is reclaimed and completes, and the user's next follows", async () => {
    const d = await otherUser(env);
    // Seeded slowly, so the kill lands mid-download.
    const slow = await makeFixture(env, "slow", [{ path: "slow", size: 6 * MiB + 5 }]);
    await seedFixtures(env, [slow], "1M");
    const first = await submitJob(env, {
      made: slow,
      profileId: d.profileId,
      userId: d.userId,
      enqueue: false,
    });
    await letNextIn(d.userId, 1);
    const second = await submitInTurn(d.userId, d.profileId, slow);

    const child = spawn(process.execPath, [resolve(root, "node-worker/src/main.ts")], {
      cwd: root,
      env: { ...workerEnv(env, { WORKER_ID: "doomed", ...holdingSlots }), PATH: process.env.PATH ?? "" },
      stdio: "ignore",
    });
    children.push(child);
    const exited = new Promise((done) => child.on("exit", done));
    await waitFor(
      "the doomed worker to have the first job mid-download",
      async () => {
        // Read as the job page would: watched, so the worker publishes often.
        const s = await watchedSnapshot(env, first.id);
        return s?.phase === "downloading" && s.bytes.downloaded > 0;
      },
      60_000,
    );
    child.kill("SIGKILL");
    await exited;
    // Still the first job's turn: the second waits, and nobody else holds the first.
    expect(await jobRow(env, second.id)).toMatchObject({ state: "queued", admittedAt: null });

    await worker({ WORKER_ID: "survivor" });
    const done = await waitForState(env, first.id, ["completed", "failed"], 90_000);
    expect(done.state).toBe("completed");
    expect(done.attempt).toBeGreaterThanOrEqual(2);
    await expectStoredExactly(env, slow, first.id);
    const next = await waitForState(env, second.id, ["completed", "failed"], 90_000);
    expect(next.state).toBe("completed");
    expect(next.claimedAt!.getTime()).toBeGreaterThanOrEqual(done.finishedAt!.getTime());
    await expectStoredExactly(env, slow, second.id);
  }, 240_000);
});
