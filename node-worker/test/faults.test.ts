// The fleet under faults, against the real stack: a storage outage in the
// middle of an upload, a cancel followed at once by a retry, and a cancel that
// lands while no attempt runs. Every trial ends with the stored objects
// byte-identical (or none), no unfinished multipart upload, and one terminal
// transition.

import type { ProgressEvent } from "@torreclou/contracts";
import { keys } from "@torreclou/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unfinishedUploads } from "../../local/s3.ts";
import type { Worker } from "../src/worker.ts";
import {
  cancelJob,
  createProfile,
  type Env,
  expectStoredExactly,
  filesOf,
  MiB,
  makeFixture,
  retryJob,
  s3Proxy,
  seedFixtures,
  setupEnv,
  startWorker,
  submitJob,
  transitionsOf,
  waitFor,
  waitForState,
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

async function snapshot(jobId: string): Promise<ProgressEvent | undefined> {
  const json = await env.redis.get(keys.snapshot(jobId));
  return json ? (JSON.parse(json) as ProgressEvent) : undefined;
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
