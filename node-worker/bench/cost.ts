// The bill (prints numbers; not a test). Runs a scripted scenario against the
// local stack — Postgres, Redis, the Neon stand-in and the Upstash REST
// server — with the edge app in this process (the Worker's own `fetch`, so
// every edge request is counted) and the worker's queue, lease renewal and
// progress publisher, and counts per operation:
//   edge requests   calls of the edge's fetch
//   Redis commands  seen by redis-server itself (MONITOR): both the edge's (through the Upstash
//                   server) and the worker's own connection. "billed" counts what a client sends
//                   (Upstash bills a script as one command); "run" adds the commands scripts run
//   SQL statements  counted by the Neon stand-in (the edge's); the worker's pool is counted apart
// then prints a monthly bill for a stated usage profile at published prices.
// Transfers are stood in for: a running job is its lease renewal and its progress publisher
// on a simulated clock (bytes moving every 100 ms), which is what the bill sees of it.
//
//   node node-worker/bench/cost.ts                 (ports 17600-17620; BENCH_PORT=N to move them)
//   BENCH_USERS=3 BENCH_JOBS=2 BENCH_PAGES=2 ...   (the scenario's size)
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { keys, queue } from "@torreclou/contracts";
import { Redis } from "ioredis";
import pino from "pino";
import { app } from "../../edge/src/app.ts";
import { createDb } from "../../edge/src/db/index.ts";
import { reconcile } from "../../edge/src/queue/reconcile.ts";
import { createRedis } from "../../edge/src/redis/index.ts";
import { quietLog } from "../../local/process.ts";
import { localSecrets, portsFrom, startStack } from "../../local/stack.ts";
import { loadConfig } from "../src/config.ts";
import { createPool } from "../src/db.ts";
import { createMetrics } from "../src/metrics.ts";
import { ProgressPublisher } from "../src/progress.ts";
import { JobQueue } from "../src/queue/queue.ts";
import { Worker } from "../src/worker.ts";
import { monitorRedis } from "../test/monitor.ts";

const users = Number(process.env.BENCH_USERS ?? 3);
const jobsPerUser = Number(process.env.BENCH_JOBS ?? 2);
const pages = Number(process.env.BENCH_PAGES ?? 2);
const basePort = Number(process.env.BENCH_PORT ?? 17600);
/**
 * The job page's pace (web/src/pages/JobDetail.tsx): a poll every 3 s; the job row again
 * only on a phase change or after a minute without events (none while a watched job runs).
 */
const PAGE_POLLS_PER_MINUTE = 20;
const PAGE_ROW_READS_PER_MINUTE = 0;

/** Published prices (pay as you go, USD, checked 2025). */
const PRICES = {
  upstashPer100kCommands: 0.2,
  neonPerCuHour: 0.14,
  neonMinCu: 0.25,
  /** Neon suspends compute after 5 idle minutes: each wake bills at least that. */
  neonSuspendMinutes: 5,
  workersBase: 5,
  workersIncludedRequests: 10_000_000,
  workersPerMillion: 0.3,
};

/** A month of use. */
const PROFILE = {
  users: 1000,
  workers: 4,
  jobsPerUserPerMonth: 10,
  /** How long a job runs. */
  jobMinutes: 30,
  /** How long someone has its page open (visible) while it runs. */
  watchedMinutes: 10,
  /** Hours a day during which some job runs (Postgres is awake then anyway). */
  busyHoursPerDay: 10,
};

const minutesPerMonth = 30 * 24 * 60;

interface Counts {
  requests: number;
  billed: number;
  run: number;
  sql: number;
  workerSql: number;
}

async function main(): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), "torreclou-cost-"));
  const stack = await startStack({
    dataDir,
    ports: portsFrom(basePort),
    log: quietLog,
    ephemeral: true,
    seeder: false,
    drive: false,
    clouds: false,
  });
  const stopping: (() => Promise<void>)[] = [];
  try {
    const neonStats = `http://${stack.env.NEON_LOCAL_PROXY}/stats`;
    const edgeEnv: Record<string, string> = {
      DATABASE_URL: stack.env.DATABASE_URL!,
      NEON_LOCAL_PROXY: stack.env.NEON_LOCAL_PROXY!,
      UPSTASH_REDIS_REST_URL: stack.env.UPSTASH_REDIS_REST_URL!,
      UPSTASH_REDIS_REST_TOKEN: stack.env.UPSTASH_REDIS_REST_TOKEN!,
      WEB_ORIGIN: "http://127.0.0.1:5173",
      SESSION_SECRET: randomBytes(32).toString("hex"),
      DEV_SIGN_IN: "true",
      CREDENTIALS_KEYS: stack.env.CREDENTIALS_KEYS!,
      CLIENT_IP_HEADER: "",
      EGRESS_ALLOW: new URL(stack.env.S3_ENDPOINT!).host,
      DEV_S3_PROFILE: JSON.stringify({
        name: "bench",
        endpoint: stack.env.S3_ENDPOINT!,
        region: "us-east-1",
        bucket: localSecrets.s3Bucket,
        forcePathStyle: true,
        accessKeyId: localSecrets.s3AccessKeyId,
        secretAccessKey: localSecrets.s3SecretAccessKey,
      }),
    };
    const origin = "http://127.0.0.1:5173";
    let requests = 0;
    const waits: Promise<unknown>[] = [];
    const ctx = {
      waitUntil: (p: Promise<unknown>) => void waits.push(p),
      passThroughOnException: () => {},
      props: {},
    };
    const edge = async (path: string, init: RequestInit = {}) => {
      requests++;
      const response = await app.fetch(new Request(`http://edge${path}`, init), edgeEnv, ctx as never);
      await Promise.all(waits.splice(0));
      return response;
    };

    // Every command redis-server runs, in order, with a marker to know when it has seen all sent so far.
    let billed = 0;
    let run = 0;
    const markers = new Map<string, () => void>();
    const alsoWatching: ((args: string[]) => void)[] = [];
    const mon = await monitorRedis(stack.env.REDIS_URL!, ({ args, source }) => {
      for (const watcher of alsoWatching) watcher(args);
      const name = String(args[0]).toUpperCase();
      if (name === "ECHO" && markers.has(String(args[1]))) {
        markers.get(String(args[1]))?.();
        return;
      }
      run++;
      if (source !== "lua") billed++;
    });
    stopping.push(async () => mon.close());
    const marker = new Redis(stack.env.REDIS_URL!);
    stopping.push(async () => marker.disconnect());
    const settle = async () => {
      const id = randomBytes(8).toString("hex");
      const seen = new Promise<void>((resolve) => markers.set(id, resolve));
      await marker.echo(id);
      await seen;
      markers.delete(id);
    };
    // The worker's own pool, counted apart (it talks to Postgres directly, not through Neon's proxy).
    const config = loadConfig({
      DATABASE_URL: stack.env.DATABASE_URL!,
      REDIS_URL: stack.env.REDIS_URL!,
      CREDENTIALS_KEYS: stack.env.CREDENTIALS_KEYS!,
      WORKER_HTTP_PORT: "0",
      WORKER_SCRATCH_DIR: join(dataDir, "scratch"),
      LOG_LEVEL: "silent",
      WORKER_DHT: "false",
    });
    const { pool, db } = createPool({
      connectionString: config.DATABASE_URL,
      max: 2,
      log: pino({ level: "silent" }),
    });
    stopping.push(() => pool.end());
    let workerSql = 0;
    const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
    (pool as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      workerSql++;
      return query(...args);
    };
    const now = async (): Promise<Counts> => {
      await settle();
      const sql = ((await (await fetch(neonStats)).json()) as { statements: number }).statements;
      return { requests, billed, run, sql, workerSql };
    };
    const rows: { op: string; per: string; counts: Counts }[] = [];
    const measure = async <T>(op: string, per: string, fn: () => Promise<T>, times = 1): Promise<T> => {
      const before = await now();
      const result = await fn();
      const after = await now();
      const counts = {
        requests: (after.requests - before.requests) / times,
        billed: (after.billed - before.billed) / times,
        run: (after.run - before.run) / times,
        sql: (after.sql - before.sql) / times,
        workerSql: (after.workerSql - before.workerSql) / times,
      };
      rows.push({ op, per, counts });
      return result;
    };

    // Users sign in and submit magnet jobs (each job lets itself in and is written to the queue).
    const people: { cookie: string; jobs: string[] }[] = [];
    for (let u = 0; u < users; u++) {
      const response = await measure("sign in", "sign-in", () =>
        edge("/api/auth/dev", {
          method: "POST",
          headers: { "content-type": "application/json", origin },
          body: JSON.stringify({ email: `bench-${u}-${randomBytes(3).toString("hex")}@example.com` }),
        }),
      );
      if (response.status !== 200) throw new Error(`sign-in: ${response.status} ${await response.text()}`);
      people.push({ cookie: (response.headers.get("set-cookie") ?? "").split(";")[0]!, jobs: [] });
    }
    for (const person of people) {
      for (let j = 0; j < jobsPerUser; j++) {
        const hash = randomBytes(20).toString("hex");
        const response = await measure("create a job", "job", () =>
          edge("/api/jobs", {
            method: "POST",
            headers: { "content-type": "application/json", origin, cookie: person.cookie },
            body: JSON.stringify({ magnet: `magnet:?xt=urn:btih:${hash}&dn=bench-${j}` }),
          }),
        );
        if (response.status !== 201) throw new Error(`create: ${response.status} ${await response.text()}`);
        person.jobs.push(((await response.json()) as { job: { id: string } }).job.id);
      }
    }

    // A running job, stood in for: its worker's lease renewal (every lease/3) and its progress.
    const q = new JobQueue(
      config.REDIS_URL,
      "bench-worker",
      config.WORKER_LEASE_MS,
      pino({ level: "silent" }),
    );
    await q.init();
    stopping.push(() => q.close());
    const running = people.flatMap((p) => p.jobs.slice(0, 1));
    for (const jobId of running) await q.acquireLease(jobId);
    const runMinute = async (jobId: string) => {
      let clock = 0;
      const publisher = new ProgressPublisher(
        q.commands,
        jobId,
        1,
        "downloading",
        pino({ level: "silent" }),
        () => clock,
      );
      let bytes = 0;
      for (let t = 0; t < 600; t++) {
        clock += 100;
        bytes += 100_000;
        publisher.setBytes({ total: 1e12, downloaded: bytes });
        if (t % 20 === 0) {
          const [renewed] = await q.renew([{ jobId, attempt: 1 }]);
          publisher.setWatched(renewed?.watched ?? false);
        }
        publisher.tick();
      }
      await publisher.close();
    };
    const [unwatchedJob, watchedJob] = [running[0]!, running[1] ?? running[0]!];
    await redisDel(config.REDIS_URL, keys.watched(unwatchedJob));
    await measure("running job, nobody watching (renewal + progress)", "job-minute", () =>
      runMinute(unwatchedJob),
    );

    // Someone opens a job page: the job and the destinations once, then the page's minute.
    const viewer = people.find((p) => p.jobs.includes(watchedJob))!;
    const pageJob = watchedJob;
    const get = (path: string, cookie: string) => edge(path, { headers: { cookie } });
    let cursor: string | undefined;
    const poll = async (cookie: string, jobId: string) => {
      const response = await get(`/api/jobs/${jobId}/progress${cursor ? `?after=${cursor}` : ""}`, cookie);
      if (response.status !== 200) throw new Error(`poll: ${response.status} ${await response.text()}`);
      cursor = ((await response.json()) as { cursor: string }).cursor;
    };
    await measure("open a job page (job, destinations)", "page-open", async () => {
      await get(`/api/jobs/${pageJob}`, viewer.cookie);
      await get("/api/storage", viewer.cookie);
    });
    await measure("one progress poll", "poll", () => poll(viewer.cookie, pageJob));
    await measure("open job page", "page-minute", async () => {
      for (let i = 0; i < PAGE_POLLS_PER_MINUTE; i++) await poll(viewer.cookie, pageJob);
      for (let i = 0; i < PAGE_ROW_READS_PER_MINUTE; i++) await get(`/api/jobs/${pageJob}`, viewer.cookie);
    });
    await measure("running job, page open (renewal + progress)", "job-minute", () => runMinute(pageJob));
    for (let p = 1; p < pages; p++) {
      const other = people[p % people.length]!;
      cursor = undefined;
      await measure("open job page", "page-minute", async () => {
        for (let i = 0; i < PAGE_POLLS_PER_MINUTE; i++) await poll(other.cookie, other.jobs[0]!);
      });
    }
    await measure("jobs list poll", "poll", () =>
      get(`/api/progress?ids=${viewer.jobs.join(",")}`, viewer.cookie),
    );

    // The every-minute cron: after the changes above, full passes until one has seen them all; then idle.
    const cronDb = createDb(edgeEnv as never);
    stopping.push(() => cronDb.close());
    const cronRedis = createRedis(edgeEnv as never);
    const t0 = Date.now() + 10 * 60_000;
    const cron = (minute: number) =>
      reconcile(cronDb.db, cronRedis, { gate: true, now: new Date(t0 + minute * 60_000) });
    await measure("cron run after job changes", "run", () => cron(0));
    await cron(1);
    await cron(2);
    await measure(
      "cron run, nothing changed",
      "run",
      async () => {
        for (let m = 3; m < 13; m++) {
          const result = await cron(m);
          if (!result.skipped) throw new Error("the cron's gate did not close");
        }
      },
      10,
    );

    // An idle worker: its loops, shortened in the default ratio, counted over a fixed number.
    await q.close();
    const loops = 20;
    const idleCheckMs = 200;
    const idleConfig = loadConfig({
      DATABASE_URL: config.DATABASE_URL,
      REDIS_URL: config.REDIS_URL,
      CREDENTIALS_KEYS: config.CREDENTIALS_KEYS,
      WORKER_HTTP_PORT: "0",
      WORKER_SCRATCH_DIR: join(dataDir, "scratch-idle"),
      LOG_LEVEL: "silent",
      WORKER_IDLE_CHECK_MS: String(idleCheckMs),
      WORKER_ERRAND_BLOCK_MS: String(
        Math.round((idleCheckMs * config.WORKER_ERRAND_BLOCK_MS) / config.WORKER_IDLE_CHECK_MS),
      ),
    });
    // Nothing to do: the queue holds no runnable job (the jobs above are settled by hand).
    const flush = new Redis(config.REDIS_URL);
    await flush.del(queue.stream);
    flush.disconnect();
    const worker = new Worker({
      config: idleConfig,
      db,
      log: pino({ level: "silent" }),
      metrics: createMetrics(),
    });
    await worker.start();
    stopping.push(() => worker.shutdown(5000));
    // One look at the group (XPENDING) per loop of the read loop.
    let xpending = 0;
    let waiting: { n: number; resolve: () => void } | undefined;
    alsoWatching.push((args) => {
      if (String(args[0]).toUpperCase() !== "XPENDING") return;
      xpending++;
      if (waiting && xpending >= waiting.n) {
        waiting.resolve();
        waiting = undefined;
      }
    });
    const loopsDone = (n: number) =>
      new Promise<void>((resolve) => {
        if (xpending >= n) resolve();
        else waiting = { n, resolve };
      });
    await loopsDone(3);
    const idleBefore = await now();
    const start = xpending;
    await loopsDone(start + loops);
    const idleAfter = await now();
    const scale = config.WORKER_IDLE_CHECK_MS / 60_000;
    rows.push({
      op: "idle worker",
      per: "worker-minute",
      counts: {
        requests: 0,
        billed: (idleAfter.billed - idleBefore.billed) / loops / scale,
        run: (idleAfter.run - idleBefore.run) / loops / scale,
        sql: 0,
        workerSql: (idleAfter.workerSql - idleBefore.workerSql) / loops / scale,
      },
    });

    print(rows);
  } finally {
    for (const stop of stopping.reverse()) await stop().catch(() => {});
    await stack.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function redisDel(url: string, key: string): Promise<void> {
  const r = new Redis(url);
  await r.del(key);
  r.disconnect();
}

function print(rows: { op: string; per: string; counts: Counts }[]): void {
  const fmt = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(2));
  console.log("\nper operation (Redis billed = commands a client sends; run = with those scripts run)");
  console.log(
    [
      "operation".padEnd(52),
      "per".padEnd(14),
      "edge req",
      "Redis billed",
      "Redis run",
      "SQL edge",
      "SQL worker",
    ].join("  "),
  );
  const seen = new Map<string, Counts>();
  for (const { op, per, counts } of rows) {
    const key = `${op}|${per}`;
    if (seen.has(key)) continue;
    seen.set(key, counts);
    console.log(
      [
        op.padEnd(52),
        per.padEnd(14),
        fmt(counts.requests).padStart(8),
        fmt(counts.billed).padStart(12),
        fmt(counts.run).padStart(9),
        fmt(counts.sql).padStart(8),
        fmt(counts.workerSql).padStart(10),
      ].join("  "),
    );
  }
  const at = (op: string) => [...seen].find(([k]) => k.startsWith(op))?.[1];
  const idle = at("idle worker")!;
  const unwatched = at("running job, nobody watching")!;
  const watched = at("running job, page open")!;
  const page = at("open job page")!;
  const create = at("create a job")!;
  const cronIdle = at("cron run, nothing changed")!;
  const cronBusy = at("cron run after job changes")!;

  const p = PROFILE;
  const jobs = p.users * p.jobsPerUserPerMonth;
  const jobMinutes = jobs * p.jobMinutes;
  const watchedMinutes = jobs * p.watchedMinutes;
  const busyMinutes = p.busyHoursPerDay * 60 * 30;
  // While a job runs anywhere, every worker looks at the group every lease/3 (to take over a
  // crashed worker's jobs within seconds): modelled from the default lease, not measured here.
  const watchingPerMinute = 60_000 / Math.floor(queue.leaseMs / 3);
  const redis =
    p.workers * (minutesPerMonth - busyMinutes) * idle.billed +
    p.workers * busyMinutes * watchingPerMinute +
    jobs * create.billed +
    (jobMinutes - watchedMinutes) * unwatched.billed +
    watchedMinutes * (watched.billed + page.billed) +
    busyMinutes * cronBusy.billed +
    (minutesPerMonth - busyMinutes) * cronIdle.billed;
  const requests = jobs * create.requests + watchedMinutes * page.requests + minutesPerMonth;
  // Postgres is awake while jobs run (workers write their rows), and only then: the cron and
  // an idle fleet do not wake it. Each busy stretch adds Neon's suspend delay.
  const computeHours = (busyMinutes + 30 * PRICES.neonSuspendMinutes) / 60;
  const upstash = (redis / 100_000) * PRICES.upstashPer100kCommands;
  const neon = computeHours * PRICES.neonMinCu * PRICES.neonPerCuHour;
  const workers =
    PRICES.workersBase +
    (Math.max(0, requests - PRICES.workersIncludedRequests) / 1_000_000) * PRICES.workersPerMillion;
  console.log(
    `\nwhile a job runs anywhere, each worker also looks at the group ${watchingPerMinute} times a minute (modelled from the lease, ${queue.leaseMs / 1000} s)`,
  );
  console.log(
    `profile: ${p.users} users, ${p.jobsPerUserPerMonth} jobs each a month (${jobs} jobs), ${p.jobMinutes} min each, a page watched ${p.watchedMinutes} min of each, ${p.workers} workers, jobs running ${p.busyHoursPerDay} h a day`,
  );
  console.log(
    `prices: Upstash $${PRICES.upstashPer100kCommands} per 100k commands; Neon $${PRICES.neonPerCuHour} per CU-hour at ${PRICES.neonMinCu} CU (suspends after ${PRICES.neonSuspendMinutes} min idle); Workers $${PRICES.workersBase}/month with ${PRICES.workersIncludedRequests / 1e6}M requests, then $${PRICES.workersPerMillion} per million`,
  );
  console.log(
    `a month: ${(redis / 1e6).toFixed(2)}M Redis commands = $${upstash.toFixed(2)}; ${computeHours.toFixed(0)} Neon compute-hours = $${neon.toFixed(2)}; ${(requests / 1e6).toFixed(2)}M edge requests = $${workers.toFixed(2)}; total $${(upstash + neon + workers).toFixed(2)}`,
  );
}

await main();
process.exit(0);
