// The scale simulation (test tooling): many jobs of many users through a
// fleet of real worker processes on this machine, with only the transfer
// stood in for (stand-in.ts). Everything else is real: the worker processes
// (worker-main.ts runs src/main.ts), their claims and fenced transitions in
// Postgres, the jobs stream, leases and takeovers in Redis. The edge's part —
// letting each user's first job in with the operator's running limit (fair
// turns) and the reconcile cron — runs here, with the edge's own functions
// over the Upstash REST stand-in.
//
// Once half the jobs are done, some workers that hold running attempts are
// killed with SIGKILL. At the end the run checks, from Postgres and from the
// records every attempt left (stand-in.ts), that every job completed exactly
// once, that no job ran in two attempts at once, that each user's jobs went
// in one turn at a time and never more at once than the running limit, and
// that the killed workers' jobs were taken over. It measures:
//   claim latency   admitted_at → claimed_at of each job (its first claim), from the job rows
//   throughput      jobs ÷ (last finished_at − the moment the first jobs were let in)
//   Redis commands  redis-server's MONITOR on the run's database: "billed" as clients send them
//                   (Upstash bills a script as one), "run" with the commands scripts run; the
//                   edge's share is what the Upstash REST server's connections sent
//   SQL statements  pg_stat_statements (when the server loads it; the bench's does), by role:
//                   the workers connect as one role, the edge's part as another, this harness as
//                   the admin (not counted); BEGIN and COMMIT count as statements
// Used by node-worker/bench/scale.ts (10,000 jobs, 20 workers) and, small,
// by node-worker/test/scale.test.ts.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { parseKeyring } from "@torreclou/contracts";
import { insertJob } from "@torreclou/db/jobs";
import { Redis } from "ioredis";
import type pg from "pg";
import { pino } from "pino";
import { admitAndEnqueue } from "../../../edge/src/queue/enqueue.ts";
import { reconcile } from "../../../edge/src/queue/reconcile.ts";
import { createRedis } from "../../../edge/src/redis/index.ts";
import { freePort } from "../../../local/process.ts";
import { startUpstashServer } from "../../../local/upstash/server.ts";
import { buildWorker } from "../../build.ts";
import { createPool } from "../../src/db.ts";
import { type Env, otherUser, workerEnv } from "../helpers.ts";
import { monitorRedis } from "../monitor.ts";
import { type AttemptRecord, now, readRecords } from "./stand-in.ts";

const root = resolve(import.meta.dirname, "../../..");
const workerMain = join(import.meta.dirname, "worker-main.ts");

export interface ScaleOptions {
  jobs: number;
  users: number;
  workers: number;
  /** WORKER_CONCURRENCY of each worker process. */
  concurrency: number;
  /** Workers killed with SIGKILL (each while it holds running attempts) once half the jobs are done. */
  kill: number;
  /** The operator's QUOTA_RUNNING_JOBS, recorded on each user's row as the edge does. */
  runningLimit: number;
  /** Each of a job's two transfer phases waits a random time in this range (ms). */
  transferMs: [min: number, max: number];
  /** WORKER_LEASE_MS. */
  leaseMs: number;
  /** How often the edge's reconcile cron runs here (ms), and how old a gap it mends (olderThanMs). */
  cronMs: number;
  /** Fails the run when no job completes for this long (ms). */
  stallMs: number;
  /** Progress lines (the bench prints them). */
  say?: (line: string) => void;
}

export interface ScaleFigures {
  options: Omit<ScaleOptions, "say">;
  killed: string[];
  /** From letting the first jobs in to the last job's completion. */
  seconds: number;
  jobsPerSecond: number;
  claimMs: { p50: number; p99: number; max: number };
  /**
   * Jobs whose queue entry the reconcile cron wrote: let in (a user's turn was free when it
   * looked), enqueued (let in, but its entry never written: a worker killed in between) or
   * requeued (a live job with neither an entry nor a lease when it looked).
   */
  reconciled: { admitted: string[]; enqueued: string[]; requeued: string[] };
  /** The longest claim latency among jobs the cron enqueued, and among the others. */
  maxClaimMs: { enqueuedByCron: number; others: number };
  /** What the workers logged at warn level or above, by message, counted. */
  warnings: [string, number][];
  /** Attempts started. */
  attempts: number;
  /** Jobs whose attempt on a killed worker was followed by another attempt. */
  takenOver: number;
  redis: { billed: number; run: number; edgeBilled: number; top: [string, number][] };
  /** Statements, whole run (undefined: the server does not load pg_stat_statements). */
  sql: { worker: number; edge: number } | undefined;
  peakWorkerConnections: number;
  peakWorkerRssMiB: number;
  /** CPU seconds redis-server spent during the run (the whole server: in the suite, other tests' too). */
  redisCpuSeconds: number;
  /** The machine's 1-minute load average when the run began and when it ended (other work included). */
  load: [number, number];
  /** What went wrong; empty when every check held. */
  problems: string[];
}

interface WorkerProcess {
  id: string;
  child: ChildProcess;
  records: string;
  exited: Promise<void>;
  /** When its exit was seen (an upper bound of its death). */
  exitedAt: number | undefined;
  killed: boolean;
  tail: string[];
  /** Its log lines (warn and above) by message. */
  logged: Map<string, number>;
}

export async function simulate(env: Env, options: ScaleOptions): Promise<ScaleFigures> {
  const say = options.say ?? (() => {});
  const tag = randomBytes(4).toString("hex");
  const roles = { worker: `sim_worker_${tag}`, edge: `sim_edge_${tag}` };
  const cleanups: (() => Promise<void>)[] = [];
  const workers: WorkerProcess[] = [];
  try {
    // Roles, so pg_stat_statements tells the workers' statements from the edge's and from ours.
    for (const role of Object.values(roles)) {
      await env.pool.query(`create role ${role} login`);
      await env.pool.query(`grant usage on schema public to ${role}`);
      await env.pool.query(`grant all on all tables in schema public to ${role}`);
      await env.pool.query(`grant all on all sequences in schema public to ${role}`);
    }
    cleanups.push(async () => {
      for (const role of Object.values(roles)) {
        await env.pool.query(`drop owned by ${role}`).catch(() => {});
        await env.pool.query(`drop role if exists ${role}`).catch(() => {});
      }
    });
    const asRole = (role: string) => {
      const url = new URL(env.databaseUrl);
      url.username = role;
      url.password = "";
      return url.toString();
    };

    // The edge's side: its Redis through the Upstash REST stand-in (on this run's database), its SQL as its role.
    const token = `sim-${tag}`;
    const upstashPort = await freePort();
    const upstash = await startUpstashServer({ port: upstashPort, redisUrl: env.redisUrl, token });
    cleanups.push(() => upstash.stop());
    const edgeRedis = createRedis({
      UPSTASH_REDIS_REST_URL: `http://127.0.0.1:${upstashPort}`,
      UPSTASH_REDIS_REST_TOKEN: token,
    });
    const edge = createPool({ connectionString: asRole(roles.edge), max: 4, log: pino({ level: "silent" }) });
    cleanups.push(() => edge.pool.end());

    say(`creating ${options.users} users and ${options.jobs} jobs`);
    const owners: { userId: string; profileId: string }[] = [];
    for (let u = 0; u < options.users; u++) owners.push(await otherUser(env));
    const keyring = parseKeyring(env.credentialsKeys);
    let made = 0;
    await inParallel(4, options.jobs, async (i) => {
      const owner = owners[i % owners.length]!;
      const hash = randomBytes(20).toString("hex");
      await insertJob(env.db, keyring, {
        userId: owner.userId,
        storageProfileId: owner.profileId,
        name: `sim-${i}`,
        source: { kind: "magnet", magnet: `magnet:?xt=urn:btih:${hash}&dn=sim-${i}` },
        torrent: { infoHash: hash, files: null },
      });
      if (++made % 2000 === 0) say(`  ${made} jobs created`);
    });

    say(`starting ${options.workers} worker processes (concurrency ${options.concurrency} each)`);
    // Bundled, as the image runs the worker: a process then holds less than half the memory.
    const bundle = await buildWorker(join(env.dataDir, "scale-worker.mjs"), workerMain);
    for (let w = 0; w < options.workers; w++) {
      workers.push(spawnWorker(env, options, bundle, `sim-${tag}-${w}`, asRole(roles.worker)));
    }
    cleanups.push(async () => {
      for (const w of workers) if (w.exitedAt === undefined) w.child.kill("SIGKILL");
      await Promise.all(workers.map((w) => w.exited));
    });
    await waitUntil("every worker to wait on the jobs stream", 120_000, async () => {
      failIfDied(workers);
      return (await blockedReaders(env.redis)) >= workers.length;
    });

    // Counting starts: every command on this run's database, and the statements by role.
    const counter = await countRedis(env.redisUrl);
    const loadBefore = loadavg()[0] ?? 0;
    const cpuBefore = await redisCpu(env.redis);
    cleanups.push(() => counter.close());
    const sqlBefore = await statementsByRole(env.pool);

    say("letting each user's first job in (the edge's admitAndEnqueue), workers take over from there");
    const t0 = Date.now();
    await inParallel(4, owners.length, async (u) => {
      await admitAndEnqueue(edge.db, edgeRedis, owners[u]!.userId, options.runningLimit);
    });
    const reconciled: ScaleFigures["reconciled"] = { admitted: [], enqueued: [], requeued: [] };
    const cron = startCron(options.cronMs, async () => {
      const result = await reconcile(edge.db, edgeRedis, { gate: true, olderThanMs: options.cronMs });
      reconciled.admitted.push(...result.admitted);
      reconciled.enqueued.push(...result.enqueued);
      reconciled.requeued.push(...result.requeued);
    });
    cleanups.push(() => cron.stop());

    // Until every job completed; halfway, the kills.
    let peakConnections = 0;
    let peakRssKiB = 0;
    let lastSample = 0;
    let done = 0;
    let lastProgress = Date.now();
    let reported = 0;
    for (;;) {
      failIfDied(workers);
      const { rows } = await env.pool.query<{ done: number; ended: number }>(
        "select count(*) filter (where state = 'completed')::int as done, count(*) filter (where state in ('failed', 'cancelled'))::int as ended from jobs",
      );
      const row = rows[0]!;
      if (row.ended > 0) throw new Error(`${row.ended} jobs failed or were cancelled`);
      if (row.done !== done) {
        done = row.done;
        lastProgress = Date.now();
      }
      if (done >= options.jobs) break;
      if (Date.now() - lastProgress > options.stallMs) {
        throw new Error(`no job completed for ${options.stallMs} ms (${done} of ${options.jobs} done)`);
      }
      if (done - reported >= options.jobs / 10) {
        reported = done;
        say(`  ${done} of ${options.jobs} completed after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      }
      if (done >= options.jobs / 2 && !workers.some((w) => w.killed))
        await killSome(workers, options.kill, say);
      if (Date.now() - lastSample >= 1000) {
        lastSample = Date.now();
        const { rows: conns } = await env.pool.query<{ n: number }>(
          "select count(*)::int as n from pg_stat_activity where usename = $1",
          [roles.worker],
        );
        peakConnections = Math.max(peakConnections, conns[0]?.n ?? 0);
        for (const w of workers)
          if (w.exitedAt === undefined) peakRssKiB = Math.max(peakRssKiB, await rssKiB(w));
      }
      await sleep(250);
    }
    await cron.stop();
    say("all completed; stopping the workers (SIGTERM)");
    for (const w of workers) if (w.exitedAt === undefined) w.child.kill("SIGTERM");
    await Promise.all(workers.map((w) => w.exited));
    const redis = await counter.finish(upstashPort);
    const redisCpuSeconds = (await redisCpu(env.redis)) - cpuBefore;
    const load: [number, number] = [loadBefore, loadavg()[0] ?? 0];
    const sqlAfter = await statementsByRole(env.pool);

    // What happened, from the job rows, their transitions and the attempts' own records.
    const { rows: jobRows } = await env.pool.query<JobRow>(
      `select id, user_id as "userId", state, attempt,
              extract(epoch from admitted_at) * 1000 as "admittedAt",
              extract(epoch from claimed_at) * 1000 as "claimedAt",
              extract(epoch from finished_at) * 1000 as "finishedAt"
         from jobs order by user_id, created_at, id`,
    );
    const { rows: completions } = await env.pool.query<{ jobId: string; n: number; attempt: number }>(
      `select job_id as "jobId", count(*)::int as n, max(attempt) as attempt
         from job_transitions where to_state = 'completed' group by job_id`,
    );
    const records = workers.flatMap((w) => readRecords(w.records));
    const deaths = new Map(workers.filter((w) => w.killed).map((w) => [w.id, w.exitedAt ?? now()]));
    const { problems, takenOver } = check(jobRows, completions, records, deaths, options);
    const finished = Math.max(...jobRows.map((j) => Number(j.finishedAt)));
    const seconds = (finished - t0) / 1000;
    const latency = (j: JobRow) => Number(j.claimedAt) - Number(j.admittedAt);
    const cronEnqueued = new Set(reconciled.enqueued);
    const latencies = jobRows
      .map(latency)
      .filter((ms) => Number.isFinite(ms))
      .sort((a, b) => a - b);
    const perJob = (n: number) => n / options.jobs;
    const { say: _, ...shown } = options;
    return {
      options: shown,
      killed: workers.filter((w) => w.killed).map((w) => w.id),
      seconds,
      jobsPerSecond: options.jobs / seconds,
      claimMs: {
        p50: percentile(latencies, 0.5),
        p99: percentile(latencies, 0.99),
        max: latencies.at(-1) ?? 0,
      },
      reconciled,
      maxClaimMs: {
        enqueuedByCron: Math.max(0, ...jobRows.filter((j) => cronEnqueued.has(j.id)).map(latency)),
        others: Math.max(0, ...jobRows.filter((j) => !cronEnqueued.has(j.id)).map(latency)),
      },
      warnings: [...warnings(workers)].sort((a, b) => b[1] - a[1]),
      attempts: records.filter((r) => r.event === "start").length,
      takenOver,
      redis: {
        billed: perJob(redis.billed),
        run: perJob(redis.run),
        edgeBilled: perJob(redis.edgeBilled),
        top: [...redis.byCommand].sort((a, b) => b[1] - a[1]).map(([c, n]) => [c, perJob(n)]),
      },
      sql:
        sqlBefore && sqlAfter
          ? {
              worker: perJob((sqlAfter.get(roles.worker) ?? 0) - (sqlBefore.get(roles.worker) ?? 0)),
              edge: perJob((sqlAfter.get(roles.edge) ?? 0) - (sqlBefore.get(roles.edge) ?? 0)),
            }
          : undefined,
      peakWorkerConnections: peakConnections,
      peakWorkerRssMiB: peakRssKiB / 1024,
      redisCpuSeconds,
      load,
      problems,
    };
  } catch (error) {
    const tails = workers
      .filter((w) => w.tail.length > 0)
      .map((w) => `--- ${w.id}${w.killed ? " (killed)" : ""}\n${w.tail.join("\n")}`);
    if (tails.length > 0 && error instanceof Error) error.message += `\nworker output:\n${tails.join("\n")}`;
    throw error;
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
  }
}

export interface JobRow {
  id: string;
  userId: string;
  state: string;
  attempt: number;
  /** Epoch ms as Postgres numerics (strings), or null. */
  admittedAt: string | null;
  claimedAt: string | null;
  finishedAt: string | null;
}

/**
 * Every check of a run, from the job rows (ordered by user, then creation),
 * the completed transitions, the attempts' records and when each killed
 * worker was seen dead. Returns what does not hold, and how many jobs a
 * killed worker was running that another attempt then ran.
 */
export function check(
  jobs: JobRow[],
  completions: { jobId: string; n: number; attempt: number }[],
  records: AttemptRecord[],
  deaths: Map<string, number>,
  options: Pick<ScaleOptions, "jobs" | "runningLimit" | "kill">,
): { problems: string[]; takenOver: number } {
  const problems: string[] = [];
  const some = (ids: string[]) => ids.slice(0, 5).join(", ") + (ids.length > 5 ? ", …" : "");
  if (jobs.length !== options.jobs) problems.push(`${jobs.length} job rows, expected ${options.jobs}`);
  const notDone = jobs.filter((j) => j.state !== "completed").map((j) => j.id);
  if (notDone.length > 0) problems.push(`${notDone.length} jobs not completed: ${some(notDone)}`);

  // Exactly once: one transition to completed per job, made by an attempt that ran.
  const completed = new Map(completions.map((c) => [c.jobId, c]));
  const twice = completions.filter((c) => c.n !== 1).map((c) => `${c.jobId} (${c.n} times)`);
  if (twice.length > 0) problems.push(`jobs completed more than once: ${some(twice)}`);
  const never = jobs.filter((j) => !completed.has(j.id)).map((j) => j.id);
  if (never.length > 0) problems.push(`jobs with no transition to completed: ${some(never)}`);

  // Attempts: each started once, and one job's attempts one after another (a killed worker's
  // attempt that left no end record lasted until its worker was seen dead).
  const byJob = new Map<
    string,
    { attempt: number; worker: string; start: number; end: number; outcome?: string }[]
  >();
  const ends = new Map<string, AttemptRecord>(
    records.filter((r) => r.event === "end").map((r) => [`${r.jobId}/${r.attempt}`, r]),
  );
  const seen = new Set<string>();
  for (const r of records.filter((rec) => rec.event === "start")) {
    const key = `${r.jobId}/${r.attempt}`;
    if (seen.has(key)) problems.push(`attempt ${r.attempt} of job ${r.jobId} started twice`);
    seen.add(key);
    const end = ends.get(key);
    const died = deaths.get(r.worker);
    if (!end && died === undefined) {
      problems.push(
        `attempt ${r.attempt} of job ${r.jobId} on ${r.worker} never ended, and its worker lived`,
      );
    }
    const span = { attempt: r.attempt, worker: r.worker, start: r.at, end: end?.at ?? died ?? Infinity };
    byJob.set(r.jobId, [
      ...(byJob.get(r.jobId) ?? []),
      end?.outcome ? { ...span, outcome: end.outcome } : span,
    ]);
  }
  for (const [jobId, spans] of byJob) {
    spans.sort((a, b) => a.start - b.start);
    for (let i = 1; i < spans.length; i++) {
      const [a, b] = [spans[i - 1]!, spans[i]!];
      if (b.attempt <= a.attempt)
        problems.push(`job ${jobId}: attempt ${b.attempt} started after attempt ${a.attempt}`);
      if (b.start < a.end) {
        problems.push(
          `job ${jobId} ran in two attempts at once: ${a.attempt} on ${a.worker} until ${a.end.toFixed(1)}, ${b.attempt} on ${b.worker} from ${b.start.toFixed(1)}`,
        );
      }
    }
    const by = completed.get(jobId);
    if (by && !spans.some((s) => s.attempt === by.attempt)) {
      problems.push(`job ${jobId} was completed by attempt ${by.attempt}, which never started`);
    }
    const claimedDone = spans.filter((s) => s.outcome === "completed").map((s) => s.attempt);
    if (claimedDone.length > 1 || (claimedDone.length === 1 && claimedDone[0] !== by?.attempt)) {
      problems.push(
        `job ${jobId}: attempts ${claimedDone.join(", ")} reported completing it, Postgres says ${by ? `attempt ${by.attempt}` : "none"} did`,
      );
    }
  }
  const unstarted = jobs.filter((j) => !byJob.has(j.id)).map((j) => j.id);
  if (unstarted.length > 0) problems.push(`jobs no attempt ran: ${some(unstarted)}`);

  // The kills landed on running attempts, and those jobs were run again by others.
  const takenOver = [...byJob.values()].filter((spans) =>
    spans.some((s, i) => deaths.has(s.worker) && s.outcome === undefined && i < spans.length - 1),
  ).length;
  if (options.kill > 0 && takenOver === 0)
    problems.push("no attempt of a killed worker was taken over by another");

  // Fair turns: a user's jobs are let in oldest first, the next only once the one before is
  // claimed; and never more of them live at once (let in and not ended: what admitNext counts)
  // than the running limit. Told from the job rows: an attempt's own records come a little
  // after the moves they follow (a completed job frees its turn before its attempt says so).
  const byUser = new Map<string, JobRow[]>();
  for (const j of jobs) byUser.set(j.userId, [...(byUser.get(j.userId) ?? []), j]);
  for (const [userId, own] of byUser) {
    for (let i = 1; i < own.length; i++) {
      const [a, b] = [own[i - 1]!, own[i]!];
      // admitted_at comes from the admitting process's clock in ms, claimed_at from Postgres in µs.
      if (Number(b.admittedAt) + 1 < Number(a.claimedAt)) {
        problems.push(
          `user ${userId}: job ${b.id} was let in before the job before it (${a.id}) was claimed`,
        );
        break;
      }
    }
    // Both from the clock of the process making the move, in ms; at a tie the end comes first.
    const events = own.flatMap((j) => [
      { at: Number(j.admittedAt ?? Number.POSITIVE_INFINITY), d: 1 },
      { at: Number(j.finishedAt ?? Number.POSITIVE_INFINITY), d: -1 },
    ]);
    events.sort((x, y) => x.at - y.at || x.d - y.d);
    let live = 0;
    let most = 0;
    for (const e of events) {
      live += e.d;
      most = Math.max(most, live);
    }
    if (most > options.runningLimit) {
      problems.push(`user ${userId} had ${most} jobs let in at once (running limit ${options.runningLimit})`);
    }
  }
  return { problems, takenOver };
}

function spawnWorker(
  env: Env,
  options: ScaleOptions,
  bundle: string,
  id: string,
  databaseUrl: string,
): WorkerProcess {
  const records = join(env.dataDir, `${id}.jsonl`);
  const child = spawn(
    process.execPath,
    [bundle, records, String(options.transferMs[0]), String(options.transferMs[1])],
    {
      cwd: root,
      env: {
        ...workerEnv(env, {
          WORKER_ID: id,
          DATABASE_URL: databaseUrl,
          WORKER_CONCURRENCY: String(options.concurrency),
          WORKER_LEASE_MS: String(options.leaseMs),
          LOG_LEVEL: process.env.WORKER_TEST_LOG_LEVEL ?? "warn",
        }),
        PATH: process.env.PATH ?? "",
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const w: WorkerProcess = {
    id,
    child,
    records,
    exitedAt: undefined,
    killed: false,
    tail: [],
    logged: new Map(),
    exited: new Promise((done) =>
      child.on("exit", () => {
        w.exitedAt = now();
        done();
      }),
    ),
  };
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on("line", (line) => {
      w.tail.push(line);
      w.tail.splice(0, Math.max(0, w.tail.length - 20));
      let msg = line.slice(0, 80);
      try {
        msg = String((JSON.parse(line) as { msg?: unknown }).msg ?? msg);
      } catch {
        // not a log line (a crash's stack trace): counted as it is
      }
      w.logged.set(msg, (w.logged.get(msg) ?? 0) + 1);
    });
  }
  return w;
}

function warnings(workers: WorkerProcess[]): Map<string, number> {
  const all = new Map<string, number>();
  for (const w of workers) for (const [msg, n] of w.logged) all.set(msg, (all.get(msg) ?? 0) + n);
  return all;
}

function failIfDied(workers: WorkerProcess[]): void {
  const died = workers.find((w) => w.exitedAt !== undefined && !w.killed);
  if (died) throw new Error(`worker ${died.id} exited on its own (code ${died.child.exitCode})`);
}

/** Attempts a worker has started and not ended, from its records. */
function running(w: WorkerProcess): number {
  const open = new Set<string>();
  for (const r of readRecords(w.records)) {
    const key = `${r.jobId}/${r.attempt}`;
    if (r.event === "start") open.add(key);
    else open.delete(key);
  }
  return open.size;
}

/** Kills `count` workers that hold running attempts right now (none if too few do; tried again next time). */
async function killSome(workers: WorkerProcess[], count: number, say: (line: string) => void): Promise<void> {
  const busy = workers.filter((w) => w.exitedAt === undefined && running(w) > 0).slice(0, count);
  if (busy.length < count) return;
  for (const w of busy) {
    w.killed = true;
    w.child.kill("SIGKILL");
  }
  await Promise.all(busy.map((w) => w.exited));
  say(`  killed ${busy.map((w) => w.id).join(", ")} with SIGKILL`);
}

async function rssKiB(w: WorkerProcess): Promise<number> {
  try {
    const status = await readFile(`/proc/${w.child.pid}/status`, "utf8");
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/**
 * Connections blocked reading the jobs stream on this database: one per worker once it
 * waits for jobs (Redis 7.0 adds a blocked reader to the group only when it is served).
 */
async function blockedReaders(redis: Redis): Promise<number> {
  const db = redis.options.db ?? 0;
  const clients = String(await redis.client("LIST")).split("\n");
  return clients.filter((line) => line.includes(` db=${db} `) && line.includes(" cmd=xreadgroup ")).length;
}

async function waitUntil(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Runs `task(0..count-1)` with at most `width` at once. */
async function inParallel(width: number, count: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      for (let i = next++; i < count; i = next++) await task(i);
    }),
  );
}

/** The edge's every-minute cron, at the simulation's pace. */
function startCron(everyMs: number, run: () => Promise<unknown>): { stop(): Promise<void> } {
  const stopped = new AbortController();
  const loop = (async () => {
    while (!stopped.signal.aborted) {
      await sleep(everyMs, undefined, { signal: stopped.signal }).catch(() => {});
      if (stopped.signal.aborted) break;
      await run().catch((error: unknown) => console.warn(`reconcile failed: ${String(error)}`));
    }
  })();
  return {
    async stop() {
      stopped.abort();
      await loop;
    },
  };
}

/** Statements per role on this database so far (pg_stat_statements); undefined when the server lacks it. */
async function statementsByRole(pool: pg.Pool): Promise<Map<string, number> | undefined> {
  try {
    await pool.query("create extension if not exists pg_stat_statements");
    const { rows } = await pool.query<{ role: string; calls: string }>(
      `select r.rolname as role, sum(s.calls) as calls
         from pg_stat_statements s join pg_roles r on r.oid = s.userid
        where s.dbid = (select oid from pg_database where datname = current_database())
        group by r.rolname`,
    );
    return new Map(rows.map((r) => [r.role, Number(r.calls)]));
  } catch {
    return undefined;
  }
}

/** Counts every command redis-server runs on the database of `redisUrl` (MONITOR), until `finish`. */
async function countRedis(redisUrl: string) {
  const database = new URL(redisUrl).pathname.slice(1) || "0";
  // The marker's own commands (ECHO, CLIENT) are not counted.
  const marker = new Redis(redisUrl);
  const self = /addr=(\S+)/.exec(String(await marker.client("INFO")))?.[1];
  const markers = new Map<string, () => void>();
  const bySource = new Map<string, number>();
  const byCommand = new Map<string, number>();
  let run = 0;
  const monitor = await monitorRedis(redisUrl, ({ args, source, database: db }) => {
    const name = String(args[0]).toUpperCase();
    if (name === "ECHO" && markers.has(String(args[1]))) return markers.get(String(args[1]))?.();
    if (db !== database || source === self) return;
    run++;
    if (source === "lua") return;
    bySource.set(source, (bySource.get(source) ?? 0) + 1);
    byCommand.set(name, (byCommand.get(name) ?? 0) + 1);
  });
  const close = async () => {
    monitor.close();
    marker.disconnect();
  };
  return {
    close,
    /** Totals once MONITOR has shown every command sent so far; the edge's share by its connections' names. */
    async finish(upstashPort: number) {
      const id = randomBytes(8).toString("hex");
      const seen = new Promise<void>((done) => markers.set(id, done));
      await marker.echo(id);
      await seen;
      const clients = String(await marker.client("LIST"));
      const edgeAddrs = new Set(
        clients
          .split("\n")
          .filter((line) => line.includes(`name=upstash-rest-${upstashPort}`))
          .map((line) => /addr=(\S+)/.exec(line)?.[1]),
      );
      await close();
      let billed = 0;
      let edgeBilled = 0;
      for (const [source, n] of bySource) {
        billed += n;
        if (edgeAddrs.has(source)) edgeBilled += n;
      }
      return { billed, run, edgeBilled, byCommand };
    },
  };
}

/** CPU seconds redis-server has used since it started (INFO CPU). */
async function redisCpu(redis: Redis): Promise<number> {
  const info = await redis.info("cpu");
  const field = (name: string) => Number(new RegExp(`${name}:([0-9.]+)`).exec(info)?.[1] ?? 0);
  return field("used_cpu_user") + field("used_cpu_sys");
}

function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

/** The figures as the bench and the test print them. */
export function summary(f: ScaleFigures): string[] {
  const o = f.options;
  const n = (x: number, digits = 1) => x.toFixed(digits);
  const top = f.redis.top
    .slice(0, 8)
    .map(([c, x]) => `${c} ${n(x, 2)}`)
    .join(", ");
  return [
    `${o.jobs} jobs of ${o.users} users (running limit ${o.runningLimit} each), ${o.workers} worker processes × concurrency ${o.concurrency}, transfer stand-in ${o.transferMs[0]}–${o.transferMs[1]} ms per phase, lease ${o.leaseMs} ms`,
    `killed with SIGKILL halfway: ${f.killed.join(", ") || "none"}; ${f.takenOver} of their running jobs taken over by other workers; ${f.attempts} attempts in all`,
    `run time ${n(f.seconds)} s, ${n(f.jobsPerSecond)} jobs/s`,
    `claim latency (admitted → claimed): p50 ${n(f.claimMs.p50, 0)} ms, p99 ${n(f.claimMs.p99, 0)} ms, max ${n(f.claimMs.max, 0)} ms`,
    `  the reconcile cron let ${f.reconciled.admitted.length} jobs in, enqueued ${f.reconciled.enqueued.length} let in but never written to the stream (longest claim among them ${n(f.maxClaimMs.enqueuedByCron, 0)} ms, among the rest ${n(f.maxClaimMs.others, 0)} ms), requeued ${f.reconciled.requeued.length}`,
    `Redis commands per job: ${n(f.redis.billed, 2)} billed (${n(f.redis.edgeBilled, 2)} of them the edge's), ${n(f.redis.run, 2)} with those scripts run`,
    `  billed per job by command: ${top}`,
    f.sql
      ? `SQL statements per job (pg_stat_statements, BEGIN/COMMIT included): ${n(f.sql.worker, 2)} by the workers, ${n(f.sql.edge, 2)} by the edge (admissions, reconcile)`
      : "SQL statements per job: not counted (this Postgres does not load pg_stat_statements; the bench's does)",
    `peak: ${f.peakWorkerConnections} worker connections to Postgres, ${n(f.peakWorkerRssMiB, 0)} MiB RSS of one worker process; redis-server used ${n(f.redisCpuSeconds)} CPU s`,
    `machine: ${cpus().length} cores, load average ${n(f.load[0])} when the jobs were let in, ${n(f.load[1])} at the end`,
    `worker warnings: ${f.warnings.map(([msg, count]) => `${msg} ×${count}`).join("; ") || "none"}`,
    f.problems.length === 0 ? "checks: all held" : `checks FAILED:\n  ${f.problems.join("\n  ")}`,
  ];
}
