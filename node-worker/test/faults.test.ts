// The fleet under faults, against the real stack: a storage outage in the
// middle of an upload, a cancel followed at once by a retry, and a cancel that
// lands while no attempt runs. Every trial ends with the stored objects
// byte-identical (or none), no unfinished multipart upload, and one terminal
// transition.

import type { ProgressEvent } from "@torreclou/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unfinishedUploads } from "../../local/s3.ts";
import type { Worker } from "../src/worker.ts";
import {
  cancelJob,
  createProfile,
  type Env,
  expectProgressNeverBackwards,
  expectStoredExactly,
  filesOf,
  jobRow,
  MiB,
  makeFixture,
  progressEvents,
  retryJob,
  s3Proxy,
  seedFixtures,
  setupEnv,
  startWorker,
  submitJob,
  transitionsOf,
  waitFor,
  waitForState,
  watchedSnapshot,
} from "./helpers.ts";

let env: Env;
let proxy: Awaited<ReturnType<typeof s3Proxy>>;
let profileId: string;
const workers: Worker[] = [];

beforeAll(async () => {
  env = await setupEnv(7);
  proxy = await s3Proxy();
  profileId = await createProfile(env, { endpoint: proxy.endpoint });
});

afterAll(async () => {
  for (const worker of workers) await worker.shutdown(5000);
  await proxy?.close();
  await env?.cleanup();
});

async function worker(): Promise<Worker> {
  const { worker: started } = await startWorker(env, { WORKER_CONCURRENCY: "2" });
  workers.push(started);
  return started;
}

/** The job's snapshot, read as its page would (marking it watched, so progress comes often). */
function snapshot(jobId: string): Promise<ProgressEvent | undefined> {
  return watchedSnapshot(env, jobId);
}

/** A job whose upload has begun: a part is stored and its session recorded. */
async function uploading(
  name: string,
): Promise<{ jobId: string; made: Awaited<ReturnType<typeof makeFixture>> }> {
  const made = await makeFixture(env, name, [{ path: name, size: 24 * MiB }]);
  await seedFixtures(env, [made], "3M");
  const job = await submitJob(env, { made, profileId });
  await waitFor("a part to be stored", async () => proxy.count("part", `${job.id}/${name}`) > 0, 60_000);
  await waitFor(
    "the upload session to be recorded",
    async () => (await filesOf(env, job.id))[0]?.uploadSession,
  );
  return { jobId: job.id, made };
}

const terminal = async (jobId: string) =>
  (await transitionsOf(env, jobId)).filter((t) => ["completed", "failed", "cancelled"].includes(t.toState));

describe("faults", () => {
  it("waits out a storage outage mid-upload, says so, and completes once storage is back", async () => {
    const running = await worker();
    const { jobId, made } = await uploading("outage");
    await proxy.down();
    const waiting = await waitFor(
      "the job to say it waits for storage",
      async () => (await snapshot(jobId))?.waiting,
      60_000,
    );
    expect(waiting).toMatchObject({ for: "storage", reason: "connection refused" });
    expect((await filesOf(env, jobId))[0]?.state).not.toBe("failed");
    await proxy.up();
    const done = await waitForState(env, jobId, ["completed", "failed", "cancelled"], 120_000);
    expect(done.state).toBe("completed");
    await expectStoredExactly(env, made, jobId);
    expect(await unfinishedUploads(env.s3, env.bucket, `${jobId}/`)).toEqual([]);
    expect((await snapshot(jobId))?.waiting).toBeUndefined();
    await running.shutdown(5000);
  });

  it("a provider answering 503 through many rounds of retries: the job waits, then completes", async () => {
    const running = await worker();
    const { jobId, made } = await uploading("failing");
    proxy.failWith(503);
    const refusedBefore = proxy.count("refused");
    await waitFor(
      "the job to say it waits for storage (HTTP 503)",
      async () => (await snapshot(jobId))?.waiting?.reason === "HTTP 503",
      60_000,
    );
    // Well past one request's retry budget (7 tries), across the job's upload lanes.
    await waitFor("16 refused requests", async () => proxy.count("refused") - refusedBefore >= 16, 120_000);
    expect((await jobRow(env, jobId)).state).not.toBe("failed");
    proxy.failWith(undefined);
    const done = await waitForState(env, jobId, ["completed", "failed", "cancelled"], 120_000);
    expect(done.failureReason).toBeNull();
    await expectStoredExactly(env, made, jobId);
    expect(await unfinishedUploads(env.s3, env.bucket, `${jobId}/`)).toEqual([]);
    expect((await terminal(jobId)).map((t) => t.toState)).toEqual(["completed"]);
    expectProgressNeverBackwards(await progressEvents(env, jobId));
    await running.shutdown(5000);
  }, 240_000);

  it("an outage past the operator's limit fails the job saying so; its upload is aborted once storage is back", async () => {
    const { worker: running } = await startWorker(env, { WORKER_STORAGE_OUTAGE_MS: "1000" });
    workers.push(running);
    const { jobId } = await uploading("too-long");
    await proxy.down();
    const failed = await waitForState(env, jobId, ["failed", "completed"], 60_000);
    expect(failed.failureReason).toMatch(
      /^The storage provider at .+ did not answer for 1 s \(connection refused\); the job stopped waiting\. Retry it once the storage is back\.$/,
    );
    // The abort could not be sent while storage was down: the upload is still open...
    expect(await unfinishedUploads(env.s3, env.bucket, `${jobId}/`)).toHaveLength(1);
    await proxy.up();
    // ...and the queued clean-up aborts it once storage answers.
    await waitFor(
      "the failed job's upload to be aborted",
      async () => (await unfinishedUploads(env.s3, env.bucket, `${jobId}/`)).length === 0,
      90_000,
    );
    await waitFor("its session to be forgotten", async () => !(await filesOf(env, jobId))[0]?.uploadSession);
    expect((await terminal(jobId)).map((t) => t.toState)).toEqual(["failed"]);
    await running.shutdown(5000);
  }, 240_000);

  it("cancel, then retry at once: the retry runs to completion, nothing stored twice", async () => {
    const running = await worker();
    const { jobId, made } = await uploading("cancel-retry");
    await cancelJob(env, jobId);
    await retryJob(env, jobId);
    const done = await waitForState(env, jobId, ["completed", "failed"], 120_000);
    expect(done.state).toBe("completed");
    await expectStoredExactly(env, made, jobId);
    expect(await unfinishedUploads(env.s3, env.bucket, `${jobId}/`)).toEqual([]);
    // Queued, cancelled by the user, queued by the retry, and one completion: the old attempt changed nothing.
    expect((await terminal(jobId)).map((t) => [t.toState, t.cause])).toEqual([
      ["cancelled", "user"],
      ["completed", "worker"],
    ]);
    await running.shutdown(5000);
  });

  it("a cancel that lands while no attempt runs still has the job's uploads aborted", async () => {
    const first = await worker();
    const { jobId } = await uploading("cancel-idle");
    // The worker stops (the job goes back to the queue, its upload kept for a resume)...
    await first.shutdown(10_000);
    expect((await filesOf(env, jobId))[0]?.uploadSession).toBeTruthy();
    expect(await unfinishedUploads(env.s3, env.bucket, `${jobId}/`)).toHaveLength(1);
    // ...and the user cancels before any other worker takes it.
    await cancelJob(env, jobId);
    await worker();
    await waitFor(
      "the cancelled job's upload to be aborted",
      async () => (await unfinishedUploads(env.s3, env.bucket, `${jobId}/`)).length === 0,
      60_000,
    );
    await waitFor("its session to be forgotten", async () => !(await filesOf(env, jobId))[0]?.uploadSession);
    const row = await waitForState(env, jobId, ["cancelled"]);
    expect(row.state).toBe("cancelled");
    expect((await terminal(jobId)).map((t) => t.toState)).toEqual(["cancelled"]);
  });
});
