// Choosing files from a magnet, with real parts: aria2c seeding over a
// loopback tracker, Postgres, Redis and the local S3. A job that asks to
// choose is resolved once, then waits held by no worker; the user's choice
// (the function the edge's selection route calls) queues it again, and a
// worker continues from the saved info dictionary without asking peers for
// the metadata again.

import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { infoDictionaryOf, keys, parseTorrentFile, queue } from "@torreclou/contracts";
import { acceptMetadata, applySelection, cancelUnchosen } from "@torreclou/db/jobs";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.ts";
import { createMetrics, type Metrics } from "../src/metrics.ts";
import { Worker } from "../src/worker.ts";
import {
  createProfile,
  type Env,
  enqueue,
  expectStoredExactly,
  filesOf,
  jobRow,
  listKeys,
  makeFixture,
  progressEvents,
  retryJob,
  seedFixtures,
  setupEnv,
  submitJob,
  transitionsOf,
  waitFor,
  waitForState,
  workerEnv,
} from "./helpers.ts";

let env: Env;
let worker: Worker;
let metrics: Metrics;
let profileId: string;
/** Every line the worker logs, parsed. */
const lines: Record<string, unknown>[] = [];

beforeAll(async () => {
  env = await setupEnv(1);
  profileId = await createProfile(env);
  const config = loadConfig(workerEnv(env, { WORKER_CONCURRENCY: "2" }));
  const log = pino(
    { level: "info" },
    { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  metrics = createMetrics();
  worker = new Worker({ config, db: env.db, log, metrics });
  await worker.start();
});

afterAll(async () => {
  await worker?.shutdown(5000);
  await env?.cleanup();
});

const linesOf = (jobId: string, msg: string) => lines.filter((l) => l.jobId === jobId && l.msg === msg);
const counter = async (m: { get(): Promise<{ values: { value: number }[] }> }) =>
  (await m.get()).values.reduce((sum, v) => sum + v.value, 0);

describe("choosing files from a magnet", () => {
  it("resolves once, waits holding nothing, then stores only the chosen files from the saved metadata", async () => {
    const made = await makeFixture(env, "choose-me", [
      { path: "first.bin", size: 600_001 },
      { path: "second/second.bin", size: 1_300_000 },
      { path: "third.txt", content: "the third file\n" },
    ]);
    await seedFixtures(env, [made]);
    const fetchesBefore = await counter(metrics.metadataFetches);
    const job = await submitJob(env, { made, profileId, magnet: true, chooseFiles: true });

    const waiting = await waitForState(env, job.id, ["awaiting_selection", "failed"]);
    expect(waiting.failureReason).toBeNull();
    expect(waiting.state).toBe("awaiting_selection");
    expect(waiting.selectionSince).not.toBeNull();
    // The info dictionary is kept: its SHA-1 is the magnet's info hash.
    expect(createHash("sha1").update(waiting.infoDictionary!).digest("hex")).toBe(made.infoHash);
    const files = await filesOf(env, job.id);
    expect(files.map((f) => [f.fileIndex, f.path, f.selected, f.state])).toEqual([
      [0, "choose-me/first.bin", true, "pending"],
      [1, "choose-me/second/second.bin", true, "pending"],
      [2, "choose-me/third.txt", true, "pending"],
    ]);

    // Held by nothing: no lease, the queue entry settled, no scratch folder, no running job.
    await waitFor("the attempt to let go", async () => {
      const pending = (await env.redis.xpending(queue.metadataStream, queue.group)) as [number, ...unknown[]];
      const lease = await env.redis.get(keys.lease(job.id));
      return pending[0] === 0 && lease === null && (await counter(metrics.activeJobs)) === 0;
    });
    expect(existsSync(join(env.scratchDir, job.id))).toBe(false);
    expect(await env.redis.zscore(keys.awaitingSelection, job.id)).not.toBeNull();
    // No folder asked for: the torrent's own top folder, settled with its files.
    expect(waiting.targetFolder).toBe("");
    expect(await listKeys(env.s3, env.bucket, "choose-me/")).toEqual([]);
    const snapshot = (await progressEvents(env, job.id)).at(-1);
    expect(snapshot?.phase).toBe("awaiting_selection");

    // The user's choice, as the edge's route makes it: two of three files.
    const queued = await applySelection(env.db, { jobId: job.id, userId: env.userId, selected: [0, 2] });
    expect(queued?.state).toBe("queued");
    await enqueue(env, job);

    const done = await waitForState(env, job.id, ["completed", "failed"]);
    expect(done.failureReason).toBeNull();
    expect(done.bytesTotal).toBe(600_001 + 15);
    await expectStoredExactly(env, made, "", [0, 2]);
    expect((await filesOf(env, job.id)).map((f) => f.state)).toEqual(["uploaded", "skipped", "uploaded"]);
    expect((await transitionsOf(env, job.id)).map((t) => t.toState)).toEqual([
      "queued",
      "resolving",
      "awaiting_selection",
      "queued",
      "downloading",
      "uploading",
      "completed",
    ]);
    // The metadata was fetched from peers once, by the first attempt only.
    expect((await counter(metrics.metadataFetches)) - fetchesBefore).toBe(1);
    expect(linesOf(job.id, "metadata resolved")).toHaveLength(1);
    expect(linesOf(job.id, "metadata resolved")[0]?.attempt).toBe(1);
    expect((await jobRow(env, job.id)).attempt).toBe(2);
  });

  it("fetches only the files a magnet's so= selects when the job does not ask to choose", async () => {
    const made = await makeFixture(env, "select-only", [
      { path: "a.bin", size: 200_003 },
      { path: "b.bin", size: 400_000 },
      { path: "c.bin", size: 100_000 },
    ]);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId, magnet: true, magnetUri: `${made.magnet}&so=1-2` });
    const done = await waitForState(env, job.id, ["completed", "failed"]);
    expect(done.failureReason).toBeNull();
    await expectStoredExactly(env, made, "", [1, 2]);
    expect((await filesOf(env, job.id)).map((f) => f.selected)).toEqual([false, true, true]);
  });

  it("fails readably when so= names a file the torrent does not have", async () => {
    const made = await makeFixture(env, "too-few", [
      { path: "x.bin", size: 50_000 },
      { path: "y.bin", size: 60_000 },
    ]);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId, magnet: true, magnetUri: `${made.magnet}&so=1,4-5` });
    const done = await waitForState(env, job.id, ["completed", "failed", "awaiting_selection"]);
    expect(done.state).toBe("failed");
    expect(done.failureReason).toBe(
      "The magnet link selects files 4, 5 (so=), but the torrent has no such file: it has 2 files, indexes 0 to 1.",
    );
    expect(await listKeys(env.s3, env.bucket, "too-few/")).toEqual([]);
  });

  it("asks again, without fetching the metadata again, when a wait that ran out is retried", async () => {
    const made = await makeFixture(env, "ask-again", [
      { path: "one.bin", size: 70_000 },
      { path: "two.bin", size: 80_000 },
    ]);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId, magnet: true, chooseFiles: true });
    await waitForState(env, job.id, ["awaiting_selection", "failed"]);
    const fetches = await counter(metrics.metadataFetches);
    // The wait runs out (as the edge's reconcile cancels it), then the user retries.
    await cancelUnchosen(
      env.db,
      new Date(Date.now() + 60_000),
      "No files were chosen within 1 min; the job was cancelled.",
    );
    expect((await jobRow(env, job.id)).state).toBe("cancelled");
    await retryJob(env, job.id);
    const again = await waitForState(env, job.id, ["awaiting_selection", "failed", "completed"]);
    expect(again.state).toBe("awaiting_selection");
    expect(await counter(metrics.metadataFetches)).toBe(fetches);
    expect((await transitionsOf(env, job.id)).at(-2)).toMatchObject({
      toState: "resolving",
      reason: "the metadata is known already",
    });
    expect(await listKeys(env.s3, env.bucket, "ask-again/")).toEqual([]);
  });

  it("gives way when the submitter's browser finds the metadata first, then continues from it", async () => {
    // Nobody seeds it yet: the worker keeps looking for the metadata.
    const made = await makeFixture(env, "browser-first", [
      { path: "kept.bin", size: 400_000 },
      { path: "left.txt", content: "not chosen\n" },
    ]);
    const fetchesBefore = await counter(metrics.metadataFetches);
    const job = await submitJob(env, { made, profileId, magnet: true, chooseFiles: true });
    const resolving = await waitForState(env, job.id, ["resolving"]);

    // What POST /api/jobs/{id}/metadata does with the browser's info dictionary (the
    // edge's own tests cover its checks): a new attempt waiting for the choice, and
    // the resolving attempt flagged to stop as a cancel of it would be.
    const bytes = new Uint8Array(await readFile(made.torrentPath));
    const info = await parseTorrentFile(bytes);
    const accepted = await acceptMetadata(env.db, {
      jobId: job.id,
      userId: env.userId,
      torrentId: resolving.torrentId,
      meta: { ...info, infoDictionary: infoDictionaryOf(bytes) },
    });
    expect(accepted).toMatchObject({ wasResolving: true, stoppedAttempt: resolving.attempt });
    await env.redis.set(keys.cancel(job.id), String(resolving.attempt), "EX", 3600);

    // The worker lets go without touching the job: no "cancelled", nothing failed.
    await waitFor("the resolving attempt to let go", async () => {
      const pending = (await env.redis.xpending(queue.metadataStream, queue.group)) as [number, ...unknown[]];
      return pending[0] === 0 && (await env.redis.get(keys.lease(job.id))) === null;
    });
    const waiting = await jobRow(env, job.id);
    expect(waiting.state).toBe("awaiting_selection");
    expect(waiting.failureReason).toBeNull();
    expect((await progressEvents(env, job.id)).map((e) => e.phase)).not.toContain("cancelled");
    expect((await transitionsOf(env, job.id)).map((t) => [t.toState, t.cause])).toEqual([
      ["queued", "user"],
      ["resolving", "worker"],
      ["awaiting_selection", "user"],
    ]);

    // The choice; now seeded, the fleet downloads from the browser's metadata, never fetching its own.
    await seedFixtures(env, [made]);
    expect(await applySelection(env.db, { jobId: job.id, userId: env.userId, selected: [0] })).toBeDefined();
    await enqueue(env, job);
    const done = await waitForState(env, job.id, ["completed", "failed"]);
    expect(done.failureReason).toBeNull();
    await expectStoredExactly(env, made, "", [0]);
    expect((await counter(metrics.metadataFetches)) - fetchesBefore).toBe(0);
  });

  it("says while resolving which trackers it asks and since when", async () => {
    const made = await makeFixture(env, "resolving-note", [{ path: "resolving-note", size: 10_000 }]);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId, magnet: true, chooseFiles: true });
    await waitForState(env, job.id, ["awaiting_selection", "failed"]);
    const resolving = (await progressEvents(env, job.id)).filter((e) => e.phase === "resolving");
    expect(resolving.length).toBeGreaterThan(0);
    expect(resolving.some((e) => e.resolving?.trackers.includes("127.0.0.1"))).toBe(true);
    expect(resolving.every((e) => !e.resolving || e.resolving.since <= e.at)).toBe(true);
  });
});
