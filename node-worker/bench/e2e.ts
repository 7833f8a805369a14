// Throughput benchmark (prints numbers; not a test). Two cases, each beside
// its own baselines in one run: a 1 GiB, 3-file torrent with a scratch budget
// that holds it whole, and a 1.5 GiB single-file torrent streamed through a
// 256 MiB budget. Each torrent is seeded by aria2c on loopback into the local
// S3 server, and the benchmark measures:
//   end-to-end     a real worker process, the bundle the image runs, does the job
//   download-only  aria2c downloads the same torrent from the same seeder
//   upload-only    the worker's S3 uploader, in a process of its own (bench/upload.ts),
//                  sends the same files to the same server
// plus the worker's peak RSS, its peak scratch disk use and the CPU seconds
// each process spent (two cores: CPU, not the network, is the limit on loopback).
// Each worker runs a 16 MiB warm-up job before the measured one, as a worker of
// a fleet has run jobs before; the warm-up's CPU is printed apart. Then the
// same again with uploads over HTTPS: a TLS front (HAProxy, as a provider
// terminates TLS apart from its storage) before the same S3 server.
//
//   node node-worker/bench/e2e.ts            (ports 17500-17510; BENCH_PORT=N to move them)
//   BENCH_MIB=1024 BENCH_KEEP=1 ...           (size; keep the data folder)
//   BENCH_STREAM_MIB=1536 BENCH_STREAM_BUDGET_MIB=256 ...  (the streaming case; 0 to skip it)
//   BENCH_LOG_LEVEL=info ...                  (the worker's log, e.g. when each file was stored)
//   BENCH_NODE_OPTIONS=--cpu-prof ...         (the worker's and uploader's NODE_OPTIONS)
//   BENCH_WORKER_ARGS=--trace-gc ...          (flags NODE_OPTIONS refuses, for the worker and the uploader)
//   BENCH_QUICK=3 ...                         (end-to-end runs only, 3 over HTTP and 3 over HTTPS)
//   BENCH_QUICK_OVER=http ...                 (the quick runs over HTTP only)
//   BENCH_TLS_FRONT=node ...                  (the tests' Node TLS front, in this process, instead of HAProxy)
import { execFile, spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, statfs } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { DeleteObjectCommand } from "@aws-sdk/client-s3";
import { freePort, quietLog } from "../../local/process.ts";
import { startS3Process } from "../../local/s3.ts";
import { ARIA2_LOOPBACK_FLAGS, type MadeTorrent, readTorrent } from "../../local/seeder/index.ts";
import { localSecrets, portsFrom, startStack } from "../../local/stack.ts";
import { haproxyFront, tlsFront } from "../../local/tls-front.ts";
import { buildWorker } from "../build.ts";
import { diskUsage } from "../src/scratch.ts";
import {
  createProfile,
  type Env,
  expectStoredExactly,
  listKeys,
  MiB,
  makeFixture,
  seedFixtures,
  setupEnv,
  submitJob,
  transitionsOf,
  waitForState,
  workerEnv,
} from "../test/helpers.ts";
import type { UploadPlan } from "./upload.ts";

const root = resolve(import.meta.dirname, "../..");
const totalMiB = Number(process.env.BENCH_MIB ?? 1024);
const streamMiB = Number(process.env.BENCH_STREAM_MIB ?? 1536);
const streamBudgetMiB = Number(process.env.BENCH_STREAM_BUDGET_MIB ?? 256);
const basePort = Number(process.env.BENCH_PORT ?? 17500);
// The worker image's V8 flags (node-worker/Dockerfile); BENCH_NODE_OPTIONS to try others.
const workerNodeOptions = process.env.BENCH_NODE_OPTIONS ?? "--max-semi-space-size=4";
// The worker image's V8 flags that NODE_OPTIONS refuses (node-worker/Dockerfile's CMD),
// then BENCH_WORKER_ARGS (e.g. --trace-gc), for the end-to-end worker and the uploader.
const workerArgs = [
  "--initial-old-space-size=64",
  ...(process.env.BENCH_WORKER_ARGS ?? "").split(" ").filter(Boolean),
];
// End-to-end runs only (no baselines), this many over HTTP then over HTTPS.
const quickRuns = Number(process.env.BENCH_QUICK ?? 0);
const quickOver = (process.env.BENCH_QUICK_OVER ?? "http,https").split(",");
// The TLS front over HTTPS: HAProxy in a process of its own, or (BENCH_TLS_FRONT=node)
// the tests' Node front inside this process, whose CPU then counts as the benchmark's.
const tlsFrontKind = process.env.BENCH_TLS_FRONT === "node" ? "node" : "haproxy";
const frontNote =
  tlsFrontKind === "node" ? "TLS front: Node, in the benchmark's process" : "TLS front: HAProxy";
const CLOCK_TICKS = 100;

/** CPU seconds a process has used so far (user + system), from /proc. */
async function cpuOf(pid: number | undefined): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11] ?? 0) + Number(fields[12] ?? 0)) / CLOCK_TICKS;
}

/**
 * CPU seconds per group of a process's threads (user and system apart): the
 * main JavaScript thread, libuv's pool (file reads and writes, hashing off the
 * main thread), V8's helpers (garbage collection, compilation) and the rest.
 */
async function threadCpuOf(pid: number | undefined): Promise<Map<string, { user: number; system: number }>> {
  const groups = new Map<string, { user: number; system: number }>();
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  for (const tid of tasks) {
    const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, "utf8").catch(() => "");
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const group =
      tid === String(pid)
        ? "main"
        : name.startsWith("libuv-worker")
          ? "libuv pool"
          : name.startsWith("V8")
            ? "V8 helpers"
            : "other";
    const g = groups.get(group) ?? { user: 0, system: 0 };
    g.user += Number(fields[11] ?? 0) / CLOCK_TICKS;
    g.system += Number(fields[12] ?? 0) / CLOCK_TICKS;
    groups.set(group, g);
  }
  return groups;
}

/** A process's read and write system calls so far (sockets and files alike), from /proc. */
async function syscallsOf(pid: number | undefined): Promise<{ reads: number; writes: number }> {
  const io = await readFile(`/proc/${pid}/io`, "utf8").catch(() => "");
  const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, "m").exec(io)?.[1] ?? 0);
  return { reads: field("syscr"), writes: field("syscw") };
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(2);
}

/** A 16 MiB torrent each end-to-end worker runs before the measured job. */
let warmup: MadeTorrent | undefined;

interface Case {
  name: string;
  made: MadeTorrent;
  seederPid: number | undefined;
  mib: number;
  /** The worker's scratch budget (undefined: the default, which holds the torrent). */
  budgetMiB?: number;
}

async function main(): Promise<void> {
  const stackDir = await mkdtemp(join(tmpdir(), "torreclou-bench-stack-"));
  const stack = await startStack({
    dataDir: stackDir,
    ports: portsFrom(basePort),
    log: quietLog,
    ephemeral: true,
    seeder: false,
    s3: false,
  });
  // The S3 server's objects in memory (tmpfs) where the machine has room there: a
  // provider stores them on disks of its own, and the kernel's writeback of them on
  // this disk (a burst of ~1 GB once ~2 GB are dirty) would land inside the worker's run.
  const s3Dir = await mkdtemp(join((await inMemoryRoom()) ? "/dev/shm" : stackDir, "torreclou-bench-s3-"));
  process.stdout.write(`the S3 server's objects: ${s3Dir}\n`);
  // The S3 server in a process of its own, so its CPU and garbage collection are not this script's.
  const s3 = await startS3Process({
    port: portsFrom(basePort).s3,
    dataDir: s3Dir,
    bucket: localSecrets.s3Bucket,
    accessKeyId: localSecrets.s3AccessKeyId,
    secretAccessKey: localSecrets.s3SecretAccessKey,
    log: quietLog,
  });
  stack.add(s3);
  Object.assign(process.env, stack.env);
  const env = await setupEnv(15);
  try {
    // Three files of uneven sizes (~45/33/22 %), none aligned to a piece.
    const sizes = [0.45, 0.33].map((f) => Math.floor(totalMiB * MiB * f) + 12_345);
    sizes.push(totalMiB * MiB - sizes[0]! - sizes[1]!);
    const made = await makeFixture(env, "bench", [
      { path: "part-1.bin", size: sizes[0]! },
      { path: "part-2.bin", size: sizes[1]! },
      { path: "part-3.bin", size: sizes[2]! },
    ]);
    // Each worker runs this small job first, as a worker of the fleet has run others before.
    warmup = await makeFixture(env, "bench-warmup", [{ path: "bench-warmup", size: 16 * MiB + 99 }]);
    const seeder = await seedFixtures(env, [made, warmup]);
    const cases: Case[] = [{ name: "whole", made, seederPid: seeder.child.pid, mib: totalMiB }];
    if (streamMiB > 0) {
      const big = await makeFixture(env, "bench-stream", [
        { path: "bench-stream", size: streamMiB * MiB + 4321 },
      ]);
      const bigSeeder = await seedFixtures(env, [big]);
      cases.push({
        name: "streaming",
        made: big,
        seederPid: bigSeeder.child.pid,
        mib: streamMiB,
        budgetMiB: streamBudgetMiB,
      });
    }
    const entry = await buildWorker(join(stackDir, "worker.mjs"));
    const s3Url = new URL(process.env.S3_ENDPOINT ?? "");
    const front =
      tlsFrontKind === "node"
        ? { ...(await tlsFront(s3Url, stackDir, false)), pid: undefined }
        : await haproxyFront(s3Url, stackDir);
    const https: Target = { name: "https", endpoint: front.url, caFile: front.certPath, frontPid: front.pid };
    try {
      for (const c of cases) await runCase(env, s3.pid, entry, c, https);
    } finally {
      await front.close();
    }
  } finally {
    if (!process.env.BENCH_KEEP) await env.cleanup();
    await stack.stop();
    await rm(stackDir, { recursive: true, force: true });
    await rm(s3Dir, { recursive: true, force: true });
  }
}

/** Where the uploads go: the local S3 server as it is (HTTP), or through a TLS front (HTTPS). */
interface Target {
  name: string;
  endpoint: string;
  /** A CA file the worker must trust for this endpoint. */
  caFile?: string;
  /** The TLS front's own process (HAProxy); a Node front runs in this one. */
  frontPid?: number | undefined;
}

async function runCase(
  env: Env,
  s3Pid: number | undefined,
  entry: string,
  c: Case,
  https: Target,
): Promise<void> {
  const { made, seederPid } = c;
  const summary = readTorrent(await readFile(made.torrentPath));
  if (quickRuns > 0) {
    // End-to-end runs only, each in a fresh worker: for trying a change to the worker's CPU.
    const targets = [{ name: "http", endpoint: process.env.S3_ENDPOINT ?? "" }, https];
    for (const target of targets.filter((t) => quickOver.includes(t.name))) {
      for (let i = 0; i < quickRuns; i++) {
        const run = await endToEnd(env, s3Pid, entry, c, target);
        process.stdout.write(
          `[${c.name}] ${target.name}: ${seconds(run.ms)} s, worker ${(run.cpu.worker / (c.mib / 1024)).toFixed(2)} CPU-s per GiB (${run.byThread}), peak RSS ${(run.peakRss / MiB).toFixed(0)} MiB; CPU s: S3 server ${run.cpu.server.toFixed(1)}, TLS front ${run.cpu.front.toFixed(1)}, seeder ${run.cpu.seeder.toFixed(1)}, benchmark ${run.cpu.bench.toFixed(1)}\n`,
        );
      }
    }
    return;
  }
  process.stdout.write(
    `\n[${c.name}] torrent: ${summary.files.length} file${summary.files.length === 1 ? "" : "s"}, ${c.mib} MiB, seeded by aria2c on loopback; scratch budget ${c.budgetMiB === undefined ? "holds it whole" : `${c.budgetMiB} MiB`}\n`,
  );

  // Download only: aria2c as the downloader.
  const dlDir = join(env.dataDir, "aria2-download");
  await settle();
  const dlSeederCpu = await cpuOf(seederPid);
  const dlStart = Date.now();
  await new Promise<void>((done, fail) => {
    const child = spawn(
      "aria2c",
      [...ARIA2_LOOPBACK_FLAGS, `--dir=${dlDir}`, "--seed-time=0", "--listen-port=17590", made.torrentPath],
      { stdio: "ignore" },
    );
    child.on("exit", (code) => (code === 0 ? done() : fail(new Error(`aria2c exited with ${code}`))));
  });
  const downloadOnly = Date.now() - dlStart;
  const dlCpu = { seeder: (await cpuOf(seederPid)) - dlSeederCpu };
  await rm(dlDir, { recursive: true, force: true });

  const http: Target = { name: "http", endpoint: process.env.S3_ENDPOINT ?? "" };
  const up = await uploadOnly(env, s3Pid, c, summary.files, http);
  const run = await endToEnd(env, s3Pid, entry, c, http);
  const upTls = await uploadOnly(env, s3Pid, c, summary.files, https);
  const runTls = await endToEnd(env, s3Pid, entry, c, https);

  const slower = Math.max(downloadOnly, up.ms);
  const scratchTarget =
    c.budgetMiB === undefined ? `of ${c.mib} MiB torrent` : `target ≤ ${c.budgetMiB} MiB, the budget`;
  const perGiB = (cpu: number) => (cpu / (c.mib / 1024)).toFixed(1);
  process.stdout.write(
    [
      `end-to-end:      ${seconds(run.ms)} s  (worker: download + upload, overlapped)`,
      `download-only:   ${seconds(downloadOnly)} s  (aria2c from the same seeder)`,
      `upload-only:     ${seconds(up.ms)} s  (the worker's uploader in its own process, same files, same S3 server)`,
      `phases:          ${run.phases}`,
      `ratio:           ${(run.ms / slower).toFixed(2)} × max(download-only, upload-only)  (target ≤ 1.30)`,
      `cpu seconds:     end-to-end: worker ${run.cpu.worker.toFixed(1)}, S3 server ${run.cpu.server.toFixed(1)}, seeder ${run.cpu.seeder.toFixed(1)}; upload-only: uploader ${up.cpu.uploader.toFixed(1)}, S3 server ${up.cpu.server.toFixed(1)}; download-only: seeder ${dlCpu.seeder.toFixed(1)}`,
      `worker CPU:      ${perGiB(run.cpu.worker)} CPU-s per GiB  (target ≤ 4; its 16 MiB warm-up job before: ${run.warmupCpu.toFixed(1)} CPU-s)`,
      `worker threads:  ${run.byThread}  (CPU s, user/system)`,
      `worker syscalls: ${run.calls.reads} reads, ${run.calls.writes} writes  (sockets and files)`,
      `worker peak RSS: ${(run.peakRss / MiB).toFixed(0)} MiB  (target ≤ 300; idle ${(run.idleRss / MiB).toFixed(0)} MiB; highest sample ${(run.atPeak.rss / MiB).toFixed(0)} MiB: V8 heap ${(run.atPeak.heap / MiB).toFixed(0)} MiB, buffers outside it ${(run.atPeak.external / MiB).toFixed(0)} MiB)`,
      `peak scratch:    ${(run.peakScratch / MiB).toFixed(0)} MiB  (${scratchTarget})`,
      "objects verified byte-identical (sha256)",
      `over HTTPS (a TLS front before the same server; bodies go unhashed, TLS guards them):`,
      `  end-to-end:    ${seconds(runTls.ms)} s; ratio ${(runTls.ms / Math.max(downloadOnly, upTls.ms)).toFixed(2)} × max(download-only, upload-only over HTTPS ${seconds(upTls.ms)} s)`,
      `  worker CPU:    ${perGiB(runTls.cpu.worker)} CPU-s per GiB  (target ≤ 4); threads: ${runTls.byThread}`,
      `  cpu seconds:   end-to-end: worker ${runTls.cpu.worker.toFixed(1)}, S3 server ${runTls.cpu.server.toFixed(1)}, TLS front ${runTls.cpu.front.toFixed(1)}, seeder ${runTls.cpu.seeder.toFixed(1)}, benchmark ${runTls.cpu.bench.toFixed(1)}; upload-only: uploader ${upTls.cpu.uploader.toFixed(1)}, S3 server ${upTls.cpu.server.toFixed(1)}, TLS front ${upTls.cpu.front.toFixed(1)}, benchmark ${upTls.cpu.bench.toFixed(1)}  (${frontNote})`,
      `  uploader CPU:  ${up.cpu.uploader.toFixed(1)} s over HTTP (SHA-256 signed), ${upTls.cpu.uploader.toFixed(1)} s over HTTPS (unsigned, encrypted)`,
      `  worker peak RSS ${(runTls.peakRss / MiB).toFixed(0)} MiB, peak scratch ${(runTls.peakScratch / MiB).toFixed(0)} MiB; objects verified byte-identical`,
      "",
    ].join("\n"),
  );
}

/** The worker's S3 uploader in a process of its own, as in a job, sending the torrent's files from the seed folder. */
async function uploadOnly(
  env: Env,
  s3Pid: number | undefined,
  c: Case,
  files: { path: string; length: number }[],
  target: Target,
): Promise<{ ms: number; cpu: { uploader: number; server: number; front: number; bench: number } }> {
  const plan: UploadPlan = {
    bucket: env.bucket,
    folder: `upload-only-${c.name}-${target.name}`,
    partSize: 8 * MiB,
    concurrency: 4,
    files: files.map((f) => ({
      path: f.path,
      size: f.length,
      localPath: join(env.dataDir, "seed", f.path),
    })),
  };
  await settle();
  const serverCpu = await cpuOf(s3Pid);
  const frontCpu = await cpuOf(target.frontPid);
  const benchCpu = process.cpuUsage();
  const start = Date.now();
  const uploader = spawn(
    process.execPath,
    [...workerArgs, "node-worker/bench/upload.ts", JSON.stringify(plan)],
    {
      cwd: root,
      env: {
        ...process.env,
        S3_ENDPOINT: target.endpoint,
        ...(target.caFile ? { NODE_EXTRA_CA_CERTS: target.caFile } : {}),
        NODE_OPTIONS: workerNodeOptions,
      },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  let printed = "";
  uploader.stdout.on("data", (chunk: Buffer) => {
    printed += chunk.toString();
  });
  const code = await new Promise<number | null>((done) => uploader.on("exit", done));
  const ms = Date.now() - start;
  if (code !== 0) throw new Error(`the upload-only run (${target.name}) exited with ${code}`);
  const cpu = {
    uploader: Number(printed.trim().split("\n").pop()),
    server: (await cpuOf(s3Pid)) - serverCpu,
    front: (await cpuOf(target.frontPid)) - frontCpu,
    bench: cpuSince(benchCpu),
  };
  // Deleted, as aria2c's download is, so the end-to-end run starts with as much memory free.
  for (const key of await listKeys(env.s3, env.bucket, `${plan.folder}/`)) {
    await env.s3.send(new DeleteObjectCommand({ Bucket: env.bucket, Key: key }));
  }
  return { ms, cpu };
}

/** A worker process (the bundle the image runs, node-worker/build.ts) runs the job, sampled as it goes. */
async function endToEnd(env: Env, s3Pid: number | undefined, entry: string, c: Case, target: Target) {
  const { made, seederPid } = c;
  const profileId = await createProfile(env, target.caFile ? { endpoint: target.endpoint } : {});
  const port = await freePort();
  const worker = spawn(process.execPath, [...workerArgs, entry], {
    cwd: root,
    env: {
      ...workerEnv(env, {
        LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "warn",
        WORKER_HTTP_PORT: String(port),
        WORKER_PART_SIZE_BYTES: String(8 * MiB),
        WORKER_UPLOAD_CONCURRENCY: "4",
        ...(c.budgetMiB === undefined ? {} : { WORKER_SCRATCH_BUDGET_BYTES: String(c.budgetMiB * MiB) }),
      }),
      ...(target.caFile ? { NODE_EXTRA_CA_CERTS: target.caFile } : {}),
      PATH: process.env.PATH ?? "",
      NODE_OPTIONS: workerNodeOptions,
    },
    stdio: ["ignore", "inherit", "inherit"],
  });
  // A worker that exits early (a flag Node refuses, a crash) ends the run at once, not at a timeout.
  let exited = false;
  const died = new Promise<never>((_, reject) =>
    worker.once("exit", (code, signal) => {
      exited = true;
      reject(new Error(`the worker exited early (code ${code}, signal ${signal}); its output is above`));
    }),
  );
  died.catch(() => {});
  // Ready once its HTTP server answers.
  for (let i = 0; i < 100 && !exited; i++) {
    if (
      await fetch(`http://127.0.0.1:${port}/healthz`).then(
        (r) => r.ok,
        () => false,
      )
    )
      break;
    await sleep(100);
  }
  if (exited) await died;

  // The warm-up job: what a worker's first job costs once (compiling its code paths) is not per GiB.
  const warmCpu = await cpuOf(worker.pid);
  if (warmup) {
    const warm = await submitJob(env, { made: warmup, profileId });
    const warmDone = await Promise.race([waitForState(env, warm.id, ["completed", "failed"], 300_000), died]);
    if (warmDone.state !== "completed") throw new Error(`the warm-up job failed: ${warmDone.failureReason}`);
    for (const key of await listKeys(env.s3, env.bucket, `${warm.id}/`)) {
      await env.s3.send(new DeleteObjectCommand({ Bucket: env.bucket, Key: key }));
    }
  }
  const warmupCpu = (await cpuOf(worker.pid)) - warmCpu;
  const idleStatus = await readFile(`/proc/${worker.pid}/status`, "utf8").catch(() => "");
  const idleRss = Number(/VmRSS:\s+(\d+) kB/.exec(idleStatus)?.[1] ?? 0) * 1024;
  const idleCpu = await cpuOf(worker.pid);
  const idleThreads = await threadCpuOf(worker.pid);
  const idleCalls = await syscallsOf(worker.pid);
  let peakRss = 0;
  let peakScratch = 0;
  // What the worker's memory held when its RSS was highest, from its /metrics.
  let atPeak = { rss: 0, heap: 0, external: 0 };
  let sampling = true;
  const sampler = (async () => {
    for (let tick = 0; sampling; tick++) {
      const status = await readFile(`/proc/${worker.pid}/status`, "utf8").catch(() => "");
      const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
      if (hwm) peakRss = Math.max(peakRss, Number(hwm[1]) * 1024);
      peakScratch = Math.max(peakScratch, await diskUsage(env.scratchDir));
      if (tick % 5 === 0) {
        const metrics = await fetch(`http://127.0.0.1:${port}/metrics`).then(
          (r) => r.text(),
          () => "",
        );
        const gauge = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(metrics)?.[1] ?? 0);
        const rss = gauge("process_resident_memory_bytes");
        if (rss > atPeak.rss) {
          atPeak = {
            rss,
            heap: gauge("nodejs_heap_size_total_bytes"),
            external: gauge("nodejs_external_memory_bytes"),
          };
        }
      }
      await sleep(100);
    }
  })();
  await settle();
  const e2eSeederCpu = await cpuOf(seederPid);
  const e2eServerCpu = await cpuOf(s3Pid);
  const e2eFrontCpu = await cpuOf(target.frontPid);
  const e2eStart = Date.now();
  const benchCpu = process.cpuUsage();
  const job = await submitJob(env, { made, profileId });
  const done = await Promise.race([waitForState(env, job.id, ["completed", "failed"], 900_000), died]);
  const elapsed = Date.now() - e2eStart;
  const e2eCpu = {
    // This process: the sampling and the tracker, and a Node TLS front (BENCH_TLS_FRONT=node).
    bench: cpuSince(benchCpu),
    front: (await cpuOf(target.frontPid)) - e2eFrontCpu,
    worker: (await cpuOf(worker.pid)) - idleCpu,
    server: (await cpuOf(s3Pid)) - e2eServerCpu,
    seeder: (await cpuOf(seederPid)) - e2eSeederCpu,
  };
  const calls = await syscallsOf(worker.pid);
  const byThread = [...(await threadCpuOf(worker.pid))]
    .map(([group, t]) => {
      const idle = idleThreads.get(group) ?? { user: 0, system: 0 };
      return `${group} ${(t.user - idle.user).toFixed(1)}/${(t.system - idle.system).toFixed(1)}`;
    })
    .join(", ");
  sampling = false;
  await sampler;
  const stopped = new Promise((resolve) => worker.on("exit", resolve));
  worker.kill("SIGTERM");
  await stopped;
  if (done.state !== "completed") throw new Error(`the job failed: ${done.failureReason}`);
  await expectStoredExactly(env, made, job.id);

  const history = await transitionsOf(env, job.id);
  const at = (state: string) => history.find((t) => t.toState === state)?.at.getTime() ?? Number.NaN;
  const phases = `queued→downloading ${seconds(at("downloading") - at("queued"))} s, downloading→uploading ${seconds(at("uploading") - at("downloading"))} s, uploading→completed ${seconds(at("completed") - at("uploading"))} s`;
  // The stored objects go, so the next run starts with the server as empty.
  for (const key of await listKeys(env.s3, env.bucket, `${job.id}/`)) {
    await env.s3.send(new DeleteObjectCommand({ Bucket: env.bucket, Key: key }));
  }
  return {
    ms: elapsed,
    cpu: e2eCpu,
    byThread,
    calls: { reads: calls.reads - idleCalls.reads, writes: calls.writes - idleCalls.writes },
    warmupCpu,
    peakRss,
    idleRss,
    atPeak,
    peakScratch,
    phases,
  };
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);

/** True when /dev/shm can hold the largest case's objects twice over (unless BENCH_S3_ON_DISK). */
async function inMemoryRoom(): Promise<boolean> {
  if (process.env.BENCH_S3_ON_DISK) return false;
  const fs = await statfs("/dev/shm").catch(() => undefined);
  return fs !== undefined && fs.bavail * fs.bsize >= 2 * Math.max(totalMiB, streamMiB) * MiB;
}

/** CPU seconds this process spent since `from` (process.cpuUsage()). */
function cpuSince(from: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(from);
  return (used.user + used.system) / 1e6;
}

/**
 * Writes what earlier runs left dirty in the page cache to the disk before a
 * timed run starts. Otherwise the kernel's writeback of one run's gigabytes
 * (the S3 server's objects, aria2c's download) lands in the middle of a
 * later one: seen as seconds with one core in the kernel writing ~1 GB/s and
 * every process of the run throttled, whichever run it happened to hit.
 */
async function settle(): Promise<void> {
  await promisify(execFile)("sync");
}
