// Seeding back, against the real stack: a job that asks to seed keeps
// offering its torrent after it is stored; with the original aria2c seeder
// gone, a second aria2c downloads the torrent from the worker alone and gets
// byte-identical files, and the seeding ends at its ratio. A job streamed
// through a small budget (its files gone from disk) seeds by ranged GETs on
// its stored objects, counted at a proxy. The user's stop and the worker's
// shutdown end a seeding too.
import { existsSync } from "node:fs";
import { mkdtemp, readFile } from "node:fs/promises";
import { join } from "node:path";
import { keys, type ProgressEvent, parseTorrentFile } from "@torreclou/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { quietLog, spawnService } from "../../local/process.ts";
import { ARIA2_LOOPBACK_FLAGS, type MadeTorrent, readTorrent } from "../../local/seeder/index.ts";
import { scratchDirFor } from "../src/scratch.ts";
import type { Worker } from "../src/worker.ts";
import {
  createProfile,
  type Env,
  MiB,
  makeFixture,
  s3Proxy,
  seedFixtures,
  setupEnv,
  sha256File,
  startWorker,
  submitJob,
  waitFor,
  waitForState,
  watchedSnapshot,
} from "./helpers.ts";

let env: Env;
const workers: Worker[] = [];

beforeAll(async () => {
  env = await setupEnv(25);
});

afterAll(async () => {
  for (const worker of workers) await worker.shutdown(5000);
  await env?.cleanup();
});

type Seeding = NonNullable<ProgressEvent["seeding"]>;

/** The job's seeding as its page reads it, once `ok` holds. */
function seedingWhere(jobId: string, ok: (s: Seeding) => boolean, timeoutMs = 60_000): Promise<Seeding> {
  return waitFor(
    `job ${jobId}'s seeding`,
    async () => {
      const seeding = (await watchedSnapshot(env, jobId))?.seeding;
      return seeding && ok(seeding) ? seeding : undefined;
    },
    timeoutMs,
  );
}

/** A second aria2c downloads the torrent (and exits when done); resolves with its folder. */
async function leech(made: MadeTorrent, port: number): Promise<string> {
  const dir = await mkdtemp(join(env.dataDir, "leech-"));
  const leecher = await spawnService("leecher", "aria2c", {
    args: [
      ...ARIA2_LOOPBACK_FLAGS,
      `--listen-port=${port}`,
      "--seed-time=0",
      "--check-integrity=true",
      `--stop-with-process=${process.pid}`,
      `--dir=${dir}`,
      made.torrentPath,
    ],
    log: quietLog,
  });
  expect(await leecher.exited).toBe(0);
  return dir;
}

/** Every file the leecher got is the seeder's, byte for byte. */
async function expectSameFiles(made: MadeTorrent, dir: string): Promise<number> {
  const summary = readTorrent(await readFile(made.torrentPath));
  let bytes = 0;
  for (const file of summary.files) {
    const parts = file.path.split("/");
    expect(await sha256File(join(dir, ...parts))).toBe(await sha256File(join(env.dataDir, "seed", ...parts)));
    bytes += file.length;
  }
  return bytes;
}

describe("seeding back", () => {
  it("uploads to a second downloader from the scratch files until its ratio, then stops", async () => {
    const profileId = await createProfile(env);
    const { worker } = await startWorker(env, { WORKER_SEED_MAX_TORRENTS: "2" });
    workers.push(worker);
    const made = await makeFixture(env, "seed-disk", [
      { path: "a.bin", size: 3 * MiB + 123 },
      { path: "b.bin", size: MiB + 7 },
    ]);
    const seeder = await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId, seed: { ratio: 1, minutes: 60 } });
    await waitForState(env, job.id, ["completed", "failed"]);
    const started = await seedingWhere(job.id, (s) => s.source !== null || s.ended !== undefined);
    expect(started.ended).toBeUndefined();
    expect(started.source).toBe("disk");
    // The worker is the only one left with the data.
    await seeder.stop();
    const dir = await leech(made, env.peerPorts.at(-1)!);
    const size = await expectSameFiles(made, dir);
    const ended = await seedingWhere(job.id, (s) => s.ended !== undefined);
    expect(ended.ended?.reason).toBe("ratio");
    expect(ended.ended?.message).toBe("ratio reached");
    expect(ended.uploaded).toBeGreaterThanOrEqual(size);
    expect(ended.ratio).toBeGreaterThanOrEqual(1);
    // What it kept for seeding is given back.
    await waitFor("the scratch folder to go", async () => !existsSync(scratchDirFor(env.scratchDir, job.id)));
    expect(worker.seeding.size).toBe(0);
    await worker.shutdown(5000);
  });

  it("reads pieces back from the stored objects when the files are gone from disk (streamed)", async () => {
    const proxy = await s3Proxy();
    const profileId = await createProfile(env, { endpoint: proxy.endpoint });
    const { worker } = await startWorker(env, {
      WORKER_SCRATCH_BUDGET_BYTES: String(16 * MiB),
      WORKER_PART_SIZE_BYTES: String(5 * MiB),
      WORKER_UPLOAD_CONCURRENCY: "1",
      WORKER_SEED_FROM_STORAGE: "true",
    });
    workers.push(worker);
    const made = await makeFixture(env, "seed-storage", [
      { path: "c.bin", size: 12 * MiB + 5 },
      { path: "d.bin", size: 12 * MiB + 9 },
    ]);
    const seeder = await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId, seed: { ratio: 1, minutes: 60 } });
    await waitForState(env, job.id, ["completed", "failed"], 120_000);
    const started = await seedingWhere(job.id, (s) => s.source !== null || s.ended !== undefined);
    expect(started.source).toBe("storage");
    expect(existsSync(scratchDirFor(env.scratchDir, job.id))).toBe(false);
    await seeder.stop();
    const before = proxy.count("rangedget");
    const dir = await leech(made, env.peerPorts.at(-2)!);
    const size = await expectSameFiles(made, dir);
    const ended = await seedingWhere(job.id, (s) => s.ended !== undefined);
    expect(ended.ended?.reason).toBe("ratio");
    expect(ended.uploaded).toBeGreaterThanOrEqual(size);
    // Whole pieces are read and kept a while: about one ranged GET per piece (and per file a piece spans).
    const { pieceLength } = await parseTorrentFile(new Uint8Array(await readFile(made.torrentPath)));
    const gets = proxy.count("rangedget") - before;
    expect(gets).toBeGreaterThan(0);
    expect(gets).toBeLessThanOrEqual(Math.ceil(size / pieceLength) + 2 + 4);
    expect(proxy.count("get")).toBe(0);
    await worker.shutdown(5000);
    await proxy.close();
  });

  it("stops when the user asks, and when the worker shuts down", async () => {
    const profileId = await createProfile(env);
    const { worker } = await startWorker(env, { WORKER_SEED_MAX_TORRENTS: "2" });
    workers.push(worker);
    const made = await makeFixture(env, "seed-stop", [{ path: "seed-stop", size: MiB + 3 }]);
    const other = await makeFixture(env, "seed-shutdown", [{ path: "seed-shutdown", size: MiB + 5 }]);
    await seedFixtures(env, [made, other]);
    const stopped = await submitJob(env, { made, profileId, seed: { ratio: 50, minutes: 60 } });
    const shut = await submitJob(env, { made: other, profileId, seed: { ratio: 50, minutes: 60 } });
    for (const job of [stopped, shut]) {
      await waitForState(env, job.id, ["completed", "failed"]);
      await seedingWhere(job.id, (s) => s.source === "disk" && !s.ended);
    }
    // A second worker starting on the same scratch folder clears finished jobs'
    // leftovers, but not the folders a live worker seeds from.
    const { worker: neighbour } = await startWorker(env);
    workers.push(neighbour);
    for (const job of [stopped, shut]) expect(existsSync(scratchDirFor(env.scratchDir, job.id))).toBe(true);
    await neighbour.shutdown(5000);
    // As the edge's POST /api/jobs/{id}/seeding/stop does.
    await env.redis.set(keys.seedStop(stopped.id), "1", "EX", 60);
    const byUser = await seedingWhere(stopped.id, (s) => s.ended !== undefined);
    expect(byUser.ended?.reason).toBe("user");
    await worker.shutdown(5000);
    const byShutdown = await seedingWhere(shut.id, (s) => s.ended !== undefined);
    expect(byShutdown.ended?.reason).toBe("shutdown");
    // The job stays completed: seeding is an after-life, not a state.
    expect((await waitForState(env, shut.id, ["completed"])).state).toBe("completed");
  });
});
