// Torrents larger than the worker's disk budget, against the real stack
// (aria2c seeding, local S3): pieces are fetched in a window that moves
// through each file, a file larger than the job's share goes through a ring
// rewritten in place (stored bytes are overwritten, never punched), and the scratch
// folder — sampled from the file system, not taken from the worker's own
// counter — never holds more than the budget. Two workers sharing one
// scratch folder share one budget. A peer that connects and sends nothing
// ends in a stall failure that says what was tried.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unfinishedUploads } from "../../local/s3.ts";
import type { Worker } from "../src/worker.ts";
import {
  createProfile,
  type Env,
  expectProgressNeverBackwards,
  expectStoredExactly,
  MiB,
  makeFixture,
  progressEvents,
  sampleScratch,
  seedFixtures,
  setupEnv,
  startWorker,
  submitJob,
  waitForState,
} from "./helpers.ts";

const BUDGET = 16 * MiB;
/** Small parts and one in flight, so the window fits a small budget. */
const streaming = {
  WORKER_SCRATCH_BUDGET_BYTES: String(BUDGET),
  WORKER_PART_SIZE_BYTES: String(5 * MiB),
  WORKER_UPLOAD_CONCURRENCY: "1",
};

let env: Env;
let profileId: string;
const workers: Worker[] = [];

beforeAll(async () => {
  env = await setupEnv(3);
  profileId = await createProfile(env);
});

afterAll(async () => {
  for (const worker of workers) await worker.shutdown(5000);
  await env?.cleanup();
});

/** Seeds `made`, runs it as a job while sampling the scratch folder, and checks every stored byte. */
async function streamed(made: Awaited<ReturnType<typeof makeFixture>>) {
  await seedFixtures(env, [made], "12M");
  const sampler = sampleScratch(env.scratchDir);
  const job = await submitJob(env, { made, profileId });
  const done = await waitForState(env, job.id, ["completed", "failed"], 120_000);
  const peak = await sampler.stop();
  expect(done.failureReason).toBeNull();
  await expectStoredExactly(env, made, job.id);
  return { job, peak, sampler };
}

describe("streaming within the scratch budget", () => {
  it("stores one file four times the budget byte-identical, never holding more than the budget", async () => {
    const { worker } = await startWorker(env, streaming);
    workers.push(worker);
    const made = await makeFixture(env, "four-times", [{ path: "four-times", size: 4 * BUDGET + 12_345 }]);
    const { job, peak, sampler } = await streamed(made);
    expect(await unfinishedUploads(env.s3, env.bucket, `${job.id}/`)).toEqual([]);
    expectProgressNeverBackwards(await progressEvents(env, job.id));
    expect(peak, `peak scratch ${peak} bytes`).toBeGreaterThan(0);
    expect(peak, `peak scratch ${peak} bytes`).toBeLessThanOrEqual(BUDGET);
    // It streamed through a ring: one file, `<index>.ring`, in the job's folder.
    expect([...sampler.rings]).toEqual([`${job.id}/0.ring`]);
    await worker.shutdown(5000);
  });

  it("streams a large file between two small ones whose pieces it shares, every file byte-identical", async () => {
    const { worker } = await startWorker(env, streaming);
    workers.push(worker);
    // Odd sizes: the large file's first and last pieces hold bytes of its neighbours.
    const made = await makeFixture(
      env,
      "neighbours",
      [
        { path: "neighbours/a.bin", size: MiB + 123 },
        { path: "neighbours/big.bin", size: 4 * BUDGET + 4567 },
        { path: "neighbours/c.bin", size: 2 * MiB + 89 },
      ],
      256 * 1024,
    );
    const { job, peak, sampler } = await streamed(made);
    expect(peak, `peak scratch ${peak} bytes`).toBeLessThanOrEqual(BUDGET);
    // Only the large file went through a ring.
    expect([...sampler.rings]).toEqual([`${job.id}/1.ring`]);
    await worker.shutdown(5000);
  });

  it("two workers sharing one scratch folder share one budget", async () => {
    // One job each, so both run at once on one disk.
    const a = (await startWorker(env, { ...streaming, WORKER_CONCURRENCY: "1" })).worker;
    const b = (await startWorker(env, { ...streaming, WORKER_CONCURRENCY: "1" })).worker;
    workers.push(a, b);
    const made = [
      await makeFixture(env, "shared-a", [{ path: "shared-a", size: 3 * BUDGET + 1 }]),
      await makeFixture(env, "shared-b", [{ path: "shared-b", size: 3 * BUDGET + 2 }]),
    ];
    await seedFixtures(env, made, "12M");
    const sampler = sampleScratch(env.scratchDir);
    const jobs = [
      await submitJob(env, { made: made[0]!, profileId }),
      await submitJob(env, { made: made[1]!, profileId }),
    ];
    const done = await Promise.all(
      jobs.map((j) => waitForState(env, j.id, ["completed", "failed"], 180_000)),
    );
    const peak = await sampler.stop();
    expect(done.map((d) => d.failureReason)).toEqual([null, null]);
    for (const [i, job] of jobs.entries()) await expectStoredExactly(env, made[i]!, job.id);
    expect(peak, `peak scratch ${peak} bytes`).toBeLessThanOrEqual(BUDGET);
    await a.shutdown(5000);
    await b.shutdown(5000);
  });
});

describe("stalls", () => {
  it("fails a job whose only peer trickles data too slowly to verify a piece, saying what was tried", async () => {
    // aria2c uploading at 1 KiB/s: connected, sending bytes, never a whole 256 KiB piece in time.
    const made = await makeFixture(env, "trickle", [{ path: "trickle", size: 2 * MiB }], 256 * 1024);
    await seedFixtures(env, [made], "1K");
    // The no-peers limit is out of the way (the peer is connected); the stall limit ends the job.
    const { worker } = await startWorker(env, {
      WORKER_STALL_TIMEOUT_MS: "3000",
      WORKER_NO_PEERS_TIMEOUT_MS: "600000",
    });
    workers.push(worker);
    const job = await submitJob(env, { made, profileId });
    const done = await waitForState(env, job.id, ["completed", "failed"], 60_000);
    expect(done.failureReason).toMatch(
      /^The download stalled: no verified data arrived for 3 s \([1-9]\d* peer connections? made, 1 tracker and 0 web seeds tried\)\.$/,
    );
    await worker.shutdown(5000);
  });
});
