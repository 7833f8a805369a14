// A magnet's file list is fetched in a lane of its own (queue.metadataStream,
// WORKER_METADATA_CONCURRENCY): with every download slot taken by a job that
// cannot finish (nobody seeds it), a magnet asking its user to choose still
// gets its files listed, and only its download, after the choice, waits for
// a download slot. Real parts: aria2c over a loopback tracker, Postgres,
// Redis and the local S3.
import { keys, queue } from "@torreclou/contracts";
import { applySelection } from "@torreclou/db/jobs";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Worker } from "../src/worker.ts";
import {
  cancelJob,
  createProfile,
  type Env,
  enqueue,
  expectStoredExactly,
  jobRow,
  makeFixture,
  seedFixtures,
  setupEnv,
  startWorker,
  submitJob,
  waitFor,
  waitForState,
} from "./helpers.ts";

let env: Env;
let worker: Worker;
let profileId: string;
const lines: Record<string, unknown>[] = [];

beforeAll(async () => {
  env = await setupEnv(24);
  profileId = await createProfile(env);
  const log = pino(
    { level: "info" },
    { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  const extra = {
    WORKER_CONCURRENCY: "1",
    WORKER_METADATA_CONCURRENCY: "1",
    // The job holding the download slot waits for peers that never come, for as long as the test needs.
    WORKER_NO_PEERS_TIMEOUT_MS: "3600000",
    WORKER_STALL_TIMEOUT_MS: "3600000",
  };
  ({ worker } = await startWorker(env, extra, log));
});

afterAll(async () => {
  await worker?.shutdown(5000);
  await env?.cleanup();
});

const linesOf = (jobId: string, msg: string) => lines.filter((l) => l.jobId === jobId && l.msg === msg);
const pendingIn = async (stream: string) =>
  Number(((await env.redis.xpending(stream, queue.group)) as [number, ...unknown[]])[0]);

describe("the metadata lane", () => {
  it("lists a magnet's files while every download slot is busy; its download then waits for one", async () => {
    // Nobody seeds this one: it holds the worker's only download slot.
    const stuck = await makeFixture(env, "holds-the-slot", [{ path: "holds-the-slot", size: 300_000 }]);
    const holder = await submitJob(env, { made: stuck, profileId });
    await waitForState(env, holder.id, ["downloading"]);

    const made = await makeFixture(env, "listed-meanwhile", [
      { path: "a.bin", size: 250_000 },
      { path: "b.txt", content: "the second file\n" },
    ]);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId, magnet: true, chooseFiles: true });
    const waiting = await waitForState(env, job.id, ["awaiting_selection", "failed"]);
    expect(waiting.failureReason).toBeNull();
    expect(waiting.state).toBe("awaiting_selection");
    // Listed beside the download, which still holds its slot.
    expect((await jobRow(env, holder.id)).state).toBe("downloading");
    expect(linesOf(job.id, "job claimed")[0]?.lane).toBe("metadata");
    expect(linesOf(holder.id, "job claimed")[0]?.lane).toBe("download");
    await waitFor("the metadata entry to be settled", async () => {
      return (
        (await pendingIn(queue.metadataStream)) === 0 && (await env.redis.get(keys.lease(job.id))) === null
      );
    });
    expect(await pendingIn(queue.stream)).toBe(1);

    // The choice queues the download in the download stream: it runs once the slot is free.
    expect(await applySelection(env.db, { jobId: job.id, userId: env.userId, selected: [1] })).toBeDefined();
    await enqueue(env, job);
    await cancelJob(env, holder.id);
    const done = await waitForState(env, job.id, ["completed", "failed"]);
    expect(done.failureReason).toBeNull();
    await expectStoredExactly(env, made, "", [1]);
    expect(linesOf(job.id, "job claimed").map((l) => l.lane)).toEqual(["metadata", "download"]);
    expect(linesOf(job.id, "metadata resolved")).toHaveLength(1);
  });

  it("passes an entry in the metadata stream to the download stream when the job's files are known", async () => {
    const made = await makeFixture(env, "wrong-stream", [{ path: "wrong-stream", size: 120_000 }]);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId, enqueue: false });
    // A .torrent job's entry where a stale writer put it: the metadata lane never downloads it.
    await env.redis.xadd(queue.metadataStream, "*", "job", JSON.stringify({ jobId: job.id }));
    await env.redis.set(keys.owner(job.id), job.userId);
    const done = await waitForState(env, job.id, ["completed", "failed"]);
    expect(done.failureReason).toBeNull();
    await expectStoredExactly(env, made, job.id);
    expect(linesOf(job.id, "the job's metadata is known; passing it to the download stream")).toHaveLength(1);
    expect(linesOf(job.id, "job claimed").map((l) => l.lane)).toEqual(["download"]);
    expect(done.attempt).toBe(1);
  });
});
