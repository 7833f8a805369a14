// The fleet's own services failing under a running job, against a Redis and a
// Postgres of this file's own (so they can be stopped): Redis restarted,
// Postgres restarted, and the worker's Postgres sessions terminated in the
// middle of their transactions. Every trial ends with the object stored
// byte-identical, no unfinished multipart upload, one terminal transition,
// and progress that never went backwards.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ProgressEvent } from "@torreclou/contracts";
import pg from "pg";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startPostgres } from "../../local/postgres.ts";
import { freePort, quietLog, type Service } from "../../local/process.ts";
import { startRedis } from "../../local/redis.ts";
import { unfinishedUploads } from "../../local/s3.ts";
import { loadConfig } from "../src/config.ts";
import { createPool } from "../src/db.ts";
import { createMetrics } from "../src/metrics.ts";
import { Worker } from "../src/worker.ts";
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

const WORKER_APP = "torreclou-worker-under-test";

let dir: string;
let redisPort: number;
let postgresPort: number;
let redis: Service;
let postgres: Service;
let env: Env;
let proxy: Awaited<ReturnType<typeof s3Proxy>>;
let profileId: string;
const stops: (() => Promise<unknown>)[] = [];

const startOwnRedis = () => startRedis({ port: redisPort, dataDir: dir, log: quietLog });
const startOwnPostgres = () =>
  startPostgres({ port: postgresPort, dataDir: dir, database: "postgres", log: quietLog, ephemeral: true });

/**
 * Each trial waits (for events, never a guessed time) through an upload, a
 * fault and a resume: on a loaded machine that adds up past the suite's
 * default per-test bound, so the bound here is the sum of its waits.
 */
const TRIAL_MS = 240_000;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "torreclou-services-"));
  [redisPort, postgresPort] = [await freePort(), await freePort()];
  // Append-only, as Upstash is durable: a restart keeps the stream and the keys.
  redis = await startOwnRedis();
  postgres = await startOwnPostgres();
  env = await setupEnv(0, {
    redis: redis.env.REDIS_URL,
    postgres: `postgres://postgres@127.0.0.1:${postgresPort}/postgres`,
  });
  // Part uploads are slowed so each fault lands while the upload runs.
  proxy = await s3Proxy({ partDelayMs: 300 });
  profileId = await createProfile(env, { endpoint: proxy.endpoint });
});

afterAll(async () => {
  for (const stop of stops.splice(0).reverse()) await stop().catch(() => {});
  await proxy?.close();
  await env?.cleanup();
  await redis?.stop();
  await postgres?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/**
 * Ends a worker's pool. `pool.end()` waits for every checked-out client, and
 * after these trials (sessions terminated, the server restarted) a client can
 * stay checked out though every run has ended: that is reported, not waited
 * on forever (the worker's process exits at shutdown, which ends its sockets;
 * here the server's stop ends them).
 */
async function endPool(pool: pg.Pool): Promise<void> {
  const ended = pool.end().then(() => true);
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), 15_000);
  });
  if (!(await Promise.race([ended, bound])))
    console.warn(
      `a worker pool kept ${pool.totalCount - pool.idleCount} client(s) checked out after shutdown`,
    );
  clearTimeout(timer);
}

/** A worker with a pool of its own, named so a test can find its sessions in pg_stat_activity. */
async function startWorker(): Promise<Worker> {
  const config = loadConfig(workerEnv(env, { WORKER_CONCURRENCY: "2", WORKER_UPLOAD_CONCURRENCY: "1" }));
  const log = pino({ level: "silent" });
  const { pool, db } = createPool({
    connectionString: env.databaseUrl,
    max: 4,
    log,
    applicationName: WORKER_APP,
  });
  const worker = new Worker({ config, db, log, metrics: createMetrics() });
  await worker.start();
  // Stops run in reverse: the worker, then (once its runs have ended) its pool.
  stops.push(
    () => endPool(pool),
    async () => {
      await worker.shutdown(5000);
      await worker.stopped();
    },
  );
  return worker;
}

/** The job's snapshot, read as its page would (marking it watched, so progress comes often). */
async function snapshot(jobId: string): Promise<ProgressEvent | undefined> {
  return watchedSnapshot(env, jobId).catch(() => undefined);
}

/** A job whose download is done and whose upload has begun, with parts still to go. */
async function uploading(name: string) {
  const made = await makeFixture(env, name, [{ path: name, size: 29 * MiB + 3 }]);
  await seedFixtures(env, [made]);
  const job = await submitJob(env, { made, profileId });
  await waitFor("a part to be stored", async () => proxy.count("part", `${job.id}/${name}`) > 0, 60_000);
  await waitFor(
    "the upload session to be recorded",
    async () => (await filesOf(env, job.id))[0]?.uploadSession,
  );
  return { jobId: job.id, made, key: `${job.id}/${name}` };
}

async function expectCompletedOnce(jobId: string, made: Awaited<ReturnType<typeof makeFixture>>) {
  const done = await waitForState(env, jobId, ["completed", "failed", "cancelled"], 120_000);
  expect(done.failureReason).toBeNull();
  expect(done.state).toBe("completed");
  await expectStoredExactly(env, made, jobId);
  expect(await unfinishedUploads(env.s3, env.bucket, `${jobId}/`)).toEqual([]);
  const ends = (await transitionsOf(env, jobId)).filter((t) =>
    ["completed", "failed", "cancelled"].includes(t.toState),
  );
  expect(ends.map((t) => t.toState)).toEqual(["completed"]);
  expectProgressNeverBackwards(await progressEvents(env, jobId));
  return done;
}

describe("the fleet's own services under a running job", () => {
  it(
    "Redis restarted mid-upload: the worker reconnects and the job completes, nothing sent twice",
    async () => {
      await startWorker();
      const { jobId, made, key } = await uploading("redis-restart");
      await redis.stop();
      redis = await startOwnRedis();
      const done = await expectCompletedOnce(jobId, made);
      // The same attempt finished it: a restart that keeps the data is not a crash.
      expect(done.attempt).toBe(1);
      expect(proxy.count("create", key)).toBe(1);
      expect(proxy.count("complete", key)).toBe(1);
    },
    TRIAL_MS,
  );

  it(
    "Postgres restarted mid-upload: the worker rides it out and the job completes, nothing sent twice",
    async () => {
      await startWorker();
      const { jobId, made, key } = await uploading("postgres-restart");
      // Fast shutdown: every session is ended, transactions rolled back.
      await postgres.stop();
      postgres = await startOwnPostgres();
      // A statement that met the restart hands the job back and it is taken again at once
      // (at most one more attempt), resuming the same upload.
      const done = await expectCompletedOnce(jobId, made);
      expect(done.attempt).toBeLessThanOrEqual(2);
      expect(proxy.count("create", key)).toBe(1);
      expect(proxy.count("complete", key)).toBe(1);
    },
    TRIAL_MS,
  );

  it(
    "the worker's sessions terminated inside their transactions: the job completes",
    async () => {
      await startWorker();
      const { jobId, made, key } = await uploading("terminated");
      // The test holds the job's row, so the worker's statements on it wait: a
      // session found waiting with its transaction begun before its statement is
      // inside an explicit transaction (a part's journal entry, a transition), and
      // is ended there. Waiters outside one (progress counters) are let through.
      const locker = new pg.Client({ connectionString: env.databaseUrl });
      const admin = new pg.Client({ connectionString: env.databaseUrl });
      await locker.connect();
      await admin.connect();
      let inTransaction = 0;
      try {
        while (inTransaction < 2) {
          await locker.query("begin");
          await locker.query("select 1 from jobs where id = $1 for update", [jobId]);
          const waiting = await waitFor(
            "a worker session to wait for the job's row",
            async () => {
              const { rows } = await admin.query<{ pid: number; xact: boolean }>(
                `select pid, xact_start < query_start as xact from pg_stat_activity
                where application_name = $1 and datname = current_database() and wait_event_type = 'Lock'`,
                [WORKER_APP],
              );
              if (rows.length > 0) return rows;
              const s = await snapshot(jobId);
              if (s?.phase === "completed" || s?.phase === "failed")
                throw new Error(
                  `the job ended (${s.phase}: ${s.message ?? ""}) before a transaction was caught`,
                );
              return undefined;
            },
            60_000,
            20,
          );
          for (const row of waiting.filter((r) => r.xact)) {
            await admin.query("select pg_terminate_backend($1)", [row.pid]);
            inTransaction++;
          }
          await locker.query("rollback");
        }
      } finally {
        await locker.end();
        await admin.end();
      }
      // A statement cut off mid-transaction may end the attempt; the job is then
      // queued again at once, and the next attempt resumes the same upload.
      await expectCompletedOnce(jobId, made);
      expect(proxy.count("create", key)).toBe(1);
      expect(proxy.count("complete", key)).toBe(1);
      expect((await filesOf(env, jobId)).every((f) => f.state === "uploaded")).toBe(true);
    },
    TRIAL_MS,
  );
});
