// Crash safety with real worker processes: `kill -9` mid-download and
// mid-upload, then a second worker reclaims the job after the lease lapses
// and finishes it without storing anything twice; SIGTERM hands a running job
// back to the queue within the shutdown bound.
import { type ChildProcess, spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { keys, type ProgressEvent, queue } from "@torreclou/contracts";
import { uploadParts } from "@torreclou/db";
import { inArray } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { seededRandom } from "../../local/random.ts";
import { unfinishedUploads } from "../../local/s3.ts";
import { buildWorker } from "../build.ts";
import {
  createProfile,
  type Env,
  expectProgressNeverBackwards,
  expectStoredExactly,
  filesOf,
  MiB,
  makeFixture,
  progressEvents,
  s3Proxy,
  seedFixtures,
  setupEnv,
  submitJob,
  transitionsOf,
  waitFor,
  waitForState,
  watchedSnapshot,
  workerEnv,
} from "./helpers.ts";

const root = resolve(import.meta.dirname, "../..");
let env: Env;
let proxy: Awaited<ReturnType<typeof s3Proxy>>;
let profileId: string;
let bundle: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  env = await setupEnv(12);
  // The workers killed here run the bundle the image ships.
  bundle = await buildWorker(join(env.dataDir, "worker.mjs"));
  // Part uploads are slowed down so a kill can land in the middle of one file's upload.
  proxy = await s3Proxy({ partDelayMs: 400 });
  profileId = await createProfile(env, { endpoint: proxy.endpoint });
});

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill("SIGKILL");
});

afterAll(async () => {
  await proxy?.close();
  await env?.cleanup();
});

interface Spawned {
  child: ChildProcess;
  output: string[];
  exited: Promise<number | null>;
}

function spawnWorker(name: string, extra: Record<string, string> = {}): Spawned {
  const child = spawn(process.execPath, [bundle], {
    cwd: root,
    env: {
      ...workerEnv(env, { WORKER_ID: name, LOG_LEVEL: "info", WORKER_UPLOAD_CONCURRENCY: "1", ...extra }),
      PATH: process.env.PATH ?? "",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  const output: string[] = [];
  child.stdout?.on("data", (d: Buffer) => output.push(d.toString()));
  child.stderr?.on("data", (d: Buffer) => output.push(d.toString()));
  const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)));
  return { child, output, exited };
}

/** The job's snapshot, read as its page would (marking it watched, so progress comes often). */
function snapshot(jobId: string): Promise<ProgressEvent | undefined> {
  return watchedSnapshot(env, jobId);
}

async function journal(jobId: string): Promise<Map<string, number[]>> {
  const files = await filesOf(env, jobId);
  const ids = files.map((f) => f.id);
  const rows = ids.length
    ? await env.db.select().from(uploadParts).where(inArray(uploadParts.jobFileId, ids))
    : [];
  const out = new Map<string, number[]>();
  for (const file of files) {
    out.set(
      `${jobId}/${file.path}`,
      rows.filter((r) => r.jobFileId === file.id).map((r) => r.partNumber),
    );
  }
  return out;
}

/** Nothing stored twice: one object write per key, and no part journaled before the kill sent again. */
function expectNoDuplicateWrites(before: Map<string, number[]>): void {
  for (const [key, parts] of before) {
    expect(proxy.count("create", key), `multipart uploads started for ${key}`).toBeLessThanOrEqual(1);
    expect(proxy.count("complete", key) + proxy.count("put", key), `object writes for ${key}`).toBe(1);
    for (const part of parts) {
      const sent = proxy.requests.filter((r) => r.kind === "part" && r.key === key && r.part === part).length;
      expect(sent, `${key} part ${part} was sent again after the kill`).toBe(1);
    }
  }
}

/** After a job ends: one terminal transition, nothing left unfinished in the bucket, progress never backwards. */
async function expectCleanEnd(jobId: string): Promise<void> {
  const ends = (await transitionsOf(env, jobId)).filter((t) =>
    ["completed", "failed", "cancelled"].includes(t.toState),
  );
  expect(ends.map((t) => t.toState)).toEqual(["completed"]);
  expect(await unfinishedUploads(env.s3, env.bucket, `${jobId}/`)).toEqual([]);
  expectProgressNeverBackwards(await progressEvents(env, jobId));
}

describe("worker crashes", () => {
  it("kill -9 mid-download: another worker reclaims and completes", async () => {
    const made = await makeFixture(env, "crash-download", [
      { path: "first.bin", size: 11 * MiB + 3 },
      { path: "second.bin", size: 9 * MiB + 1 },
    ]);
    await seedFixtures(env, [made], "3M");
    const job = await submitJob(env, { made, profileId });
    const a = spawnWorker("worker-a");
    await waitFor(
      "a third of the download",
      async () => {
        const s = await snapshot(job.id);
        return s && s.phase === "downloading" && s.bytes.downloaded > s.bytes.total / 3;
      },
      60_000,
    );
    const row = await waitForState(env, job.id, ["downloading"]);
    expect(row.attempt).toBe(1);
    a.child.kill("SIGKILL");
    await a.exited;
    const journaled = await journal(job.id);

    const b = spawnWorker("worker-b");
    const done = await waitForState(env, job.id, ["completed", "failed"], 90_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${b.output.join("").slice(-3000)}`);
    });
    expect(done.failureReason).toBeNull();
    expect(done.attempt).toBe(2);
    await expectStoredExactly(env, made, job.id);
    expectNoDuplicateWrites(journaled);
    const reasons = (await transitionsOf(env, job.id)).map((t) => `${t.toState}:${t.attempt}`);
    expect(reasons).toContain("queued:2");
    b.child.kill("SIGTERM");
    await b.exited;
  });

  it("a worker frozen past its lease: another takes over, and the frozen one changes nothing when it wakes", async () => {
    const made = await makeFixture(env, "frozen", [{ path: "frozen", size: 21 * MiB + 5 }]);
    await seedFixtures(env, [made], "3M");
    const job = await submitJob(env, { made, profileId });
    const a = spawnWorker("worker-frozen");
    await waitFor("a part to be stored", async () => proxy.count("part", `${job.id}/frozen`) > 0, 60_000);
    // SIGSTOP: a long GC, a VM pause. Its liveness key lapses; the other worker takes over.
    a.child.kill("SIGSTOP");
    const b = spawnWorker("worker-awake");
    const done = await waitForState(env, job.id, ["completed", "failed"], 90_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${b.output.join("").slice(-3000)}`);
    });
    expect(done.failureReason).toBeNull();
    expect(done.attempt).toBe(2);
    const before = await transitionsOf(env, job.id);
    // The frozen worker wakes: it learns it lost the job, and writes nothing.
    a.child.kill("SIGCONT");
    await waitFor("the woken worker to stop its stale attempt", async () =>
      a.output.join("").includes("a newer attempt owns this job"),
    );
    a.child.kill("SIGTERM");
    await a.exited;
    expect(await transitionsOf(env, job.id)).toEqual(before);
    expect((await snapshot(job.id))?.attempt).toBe(2);
    expect((await snapshot(job.id))?.phase).toBe("completed");
    await expectStoredExactly(env, made, job.id);
    b.child.kill("SIGTERM");
    await b.exited;
  });

  it("kill -9 mid-upload: the multipart upload is resumed, not restarted", async () => {
    const made = await makeFixture(env, "crash-upload", [{ path: "crash-upload", size: 31 * MiB + 77 }]);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId });
    const key = `${job.id}/crash-upload`;
    const a = spawnWorker("worker-c");
    await waitFor(
      "two parts journaled",
      async () => ((await journal(job.id)).get(key)?.length ?? 0) >= 2,
      60_000,
    );
    a.child.kill("SIGKILL");
    await a.exited;
    const journaled = await journal(job.id);
    expect(journaled.get(key)!.length).toBeLessThan(7);

    const b = spawnWorker("worker-d");
    const done = await waitForState(env, job.id, ["completed", "failed"], 90_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${b.output.join("").slice(-3000)}`);
    });
    expect(done.failureReason).toBeNull();
    await expectStoredExactly(env, made, job.id);
    expectNoDuplicateWrites(journaled);
    expect(proxy.count("create", key)).toBe(1);
    b.child.kill("SIGTERM");
    await b.exited;
  });

  // The seed is printed; TORRECLOU_CRASH_SEED=<seed> replays the same kill points.
  const seed = Number(process.env.TORRECLOU_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
  it(`kill -9 at random points in download and upload, six trials (seed ${seed})`, async () => {
    const next = seededRandom(seed);
    for (let trial = 0; trial < 6; trial++) {
      // Alternate the phase; the point within it is random.
      const phase = trial % 2 === 0 ? "downloaded" : "uploaded";
      // Uploads lag the download, so their points end earlier: the kill must land before the job ends.
      const fraction = 0.05 + next() * (phase === "downloaded" ? 0.85 : 0.55);
      const label = `trial ${trial} (seed ${seed}): kill at ${(fraction * 100).toFixed(0)} % ${phase}`;
      const name = `random-${trial}`;
      const made = await makeFixture(env, name, [
        { path: `${name}/a.bin`, size: 13 * MiB + trial },
        { path: `${name}/b.bin`, size: 7 * MiB + 11 },
      ]);
      await seedFixtures(env, [made], "4M");
      const job = await submitJob(env, { made, profileId });
      const a = spawnWorker(`random-a-${trial}`);
      await waitFor(
        label,
        async () => {
          const s = await snapshot(job.id);
          if (s?.phase === "completed" || s?.phase === "failed") throw new Error(`${label}: ended first`);
          return s && s.attempt === 1 && s.bytes[phase] >= s.bytes.total * fraction;
        },
        90_000,
      );
      a.child.kill("SIGKILL");
      await a.exited;
      const journaled = await journal(job.id);
      const b = spawnWorker(`random-b-${trial}`);
      const done = await waitForState(env, job.id, ["completed", "failed"], 90_000).catch(
        (error: unknown) => {
          throw new Error(`${label}: ${String(error)}\n${b.output.join("").slice(-3000)}`);
        },
      );
      expect(done.failureReason, label).toBeNull();
      expect(done.attempt, label).toBe(2);
      await expectStoredExactly(env, made, job.id);
      expectNoDuplicateWrites(journaled);
      await expectCleanEnd(job.id);
      b.child.kill("SIGTERM");
      await b.exited;
    }
  }, 900_000);

  it("killed after S3 completed a file but before the worker heard: the next attempt keeps that object", async () => {
    const made = await makeFixture(env, "after-complete", [{ path: "after-complete", size: 17 * MiB + 9 }]);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId });
    const key = `${job.id}/after-complete`;
    const a = spawnWorker("worker-complete");
    let killed = false;
    proxy.onAnswered = async (entry, status) => {
      if (killed || entry.kind !== "complete" || entry.key !== key || status !== 200) return;
      killed = true;
      // The object exists now; the worker dies before the answer reaches it.
      a.child.kill("SIGKILL");
      await a.exited;
    };
    try {
      await a.exited;
    } finally {
      proxy.onAnswered = undefined;
    }
    expect(killed).toBe(true);
    const partsBefore = proxy.count("part", key);

    const b = spawnWorker("worker-after-complete");
    const done = await waitForState(env, job.id, ["completed", "failed"], 90_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${b.output.join("").slice(-3000)}`);
    });
    expect(done.failureReason).toBeNull();
    await expectStoredExactly(env, made, job.id);
    // Recognised as stored: no part sent again, no second upload, no second Complete.
    expect(proxy.count("part", key)).toBe(partsBefore);
    expect(proxy.count("create", key)).toBe(1);
    expect(proxy.count("complete", key)).toBe(1);
    await expectCleanEnd(job.id);
    b.child.kill("SIGTERM");
    await b.exited;
  });

  it("kill -9 mid-file while streaming through a small budget: stored parts are neither sent nor fetched again", async () => {
    const pieceLength = 256 * 1024;
    const size = 48 * MiB + 4321;
    const small = {
      WORKER_SCRATCH_BUDGET_BYTES: String(16 * MiB),
      WORKER_PART_SIZE_BYTES: String(5 * MiB),
    };
    const made = await makeFixture(env, "stream-crash", [{ path: "stream-crash", size }], pieceLength);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId });
    const key = `${job.id}/stream-crash`;
    const a = spawnWorker("worker-stream-a", small);
    await waitFor(
      "three parts journaled",
      async () => ((await journal(job.id)).get(key)?.length ?? 0) >= 3,
      90_000,
    );
    a.child.kill("SIGKILL");
    await a.exited;
    const journaled = await journal(job.id);
    const stored = journaled.get(key)!.length;
    expect(stored).toBeLessThan(9);

    const b = spawnWorker("worker-stream-b", small);
    const done = await waitForState(env, job.id, ["completed", "failed"], 120_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${b.output.join("").slice(-3000)}`);
    });
    expect(done.failureReason).toBeNull();
    await expectStoredExactly(env, made, job.id);
    expectNoDuplicateWrites(journaled);
    await expectCleanEnd(job.id);
    // What the second attempt fetched from peers: the file less the stored parts, give or
    // take the pieces that straddle a stored part's edges (a piece is verified whole).
    const line = b.output
      .join("")
      .split("\n")
      .find((l) => l.includes('"msg":"job completed"'));
    const received = Number((JSON.parse(line ?? "{}") as { received?: number }).received);
    expect(received).toBeLessThanOrEqual(size - stored * 5 * MiB + 2 * stored * pieceLength);
    b.child.kill("SIGTERM");
    await b.exited;
  }, 240_000);

  it("SIGTERM hands the running job back to the queue within the bound", async () => {
    const made = await makeFixture(env, "handback", [{ path: "handback", size: 12 * MiB }]);
    await seedFixtures(env, [made], "2M");
    const job = await submitJob(env, { made, profileId });
    const a = spawnWorker("worker-e");
    await waitFor("download under way", async () => {
      const s = await snapshot(job.id);
      return s && s.phase === "downloading" && s.bytes.downloaded > 0;
    });
    const asked = Date.now();
    a.child.kill("SIGTERM");
    expect(await a.exited).toBe(0);
    expect(Date.now() - asked).toBeLessThan(20_000);
    // Having handed its job back, it left the consumer group on its way out.
    const group = (await env.redis.xinfo("CONSUMERS", queue.stream, queue.group)) as unknown[][];
    expect(group.map((fields) => String(fields[fields.indexOf("name") + 1]))).not.toContain("worker-e");
    const queued = await waitForState(env, job.id, ["queued"], 5000);
    const last = (await transitionsOf(env, job.id)).at(-1);
    expect(last?.reason).toBe("worker shutting down");
    expect(last?.cause).toBe("worker");
    expect(queued.attempt).toBe(1);
    // No lease left behind: the next worker takes it at once, not after a lease lapses.
    expect(await env.redis.exists(keys.lease(job.id))).toBe(0);

    const b = spawnWorker("worker-f", { WORKER_LEASE_MS: "60000" });
    const done = await waitForState(env, job.id, ["completed", "failed"], 60_000);
    expect(done.failureReason).toBeNull();
    await expectStoredExactly(env, made, job.id);
    b.child.kill("SIGTERM");
    await b.exited;
  });
});
