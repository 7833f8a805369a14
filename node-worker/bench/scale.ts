// The scale simulation at size (prints numbers; not a test): 10,000 jobs of
// 100 users through 20 real worker processes on this machine, 2 of them
// killed with SIGKILL halfway, only the transfer stood in for (see
// node-worker/test/scale/simulate.ts for what runs and what is counted).
// Prints claim latency p50/p99, jobs/s, Redis commands and SQL statements per
// job, and whether every check held (exit code 1 if one did not).
//
//   node node-worker/bench/scale.ts     (ports 17700-17713; BENCH_PORT=N to move them)
//   BENCH_JOBS=10000 BENCH_USERS=100 BENCH_WORKERS=20 BENCH_CONCURRENCY=12 BENCH_KILL=2
//   BENCH_RUNNING_LIMIT=2 BENCH_TRANSFER_MS=50-250 ...   (the defaults)
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { queue } from "@torreclou/contracts";
import { quietLog } from "../../local/process.ts";
import { portsFrom, startStack } from "../../local/stack.ts";
import { setupEnv } from "../test/helpers.ts";
import { simulate, summary } from "../test/scale/simulate.ts";

const setting = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const [minMs, maxMs] = (process.env.BENCH_TRANSFER_MS ?? "50-250").split("-").map(Number);

const dataDir = await mkdtemp(join(tmpdir(), "torreclou-scale-"));
const stack = await startStack({
  dataDir,
  ports: portsFrom(setting("BENCH_PORT", 17700)),
  log: quietLog,
  ephemeral: true,
  seeder: false,
  drive: false,
  clouds: false,
  // Statements counted per role; room for every worker's pool.
  postgresSettings: {
    shared_preload_libraries: "pg_stat_statements",
    "pg_stat_statements.max": "10000",
    max_connections: "1000",
  },
});
let failed = true;
try {
  // The test suite's helpers, on this stack: a database, Redis database 22 and a bucket of the bench's own.
  Object.assign(process.env, stack.env);
  const env = await setupEnv(22);
  try {
    const started = Date.now();
    const figures = await simulate(env, {
      jobs: setting("BENCH_JOBS", 10_000),
      users: setting("BENCH_USERS", 100),
      workers: setting("BENCH_WORKERS", 20),
      concurrency: setting("BENCH_CONCURRENCY", 12),
      kill: setting("BENCH_KILL", 2),
      runningLimit: setting("BENCH_RUNNING_LIMIT", 2),
      transferMs: [minMs ?? 50, maxMs ?? 250],
      leaseMs: queue.leaseMs,
      cronMs: setting("BENCH_CRON_MS", 10_000),
      stallMs: 120_000,
      say: (line) => console.log(line),
    });
    console.log(`\n${summary(figures).join("\n")}`);
    console.log(`(whole bench, with setup: ${((Date.now() - started) / 1000).toFixed(0)} s)`);
    failed = figures.problems.length > 0;
  } finally {
    await env.cleanup();
  }
} finally {
  await stack.stop();
  await rm(dataDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
