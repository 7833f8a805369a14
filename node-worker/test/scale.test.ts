// The scale simulation, small (node-worker/bench/scale.ts runs it with
// 10,000 jobs and 20 workers): jobs of many users through real worker
// processes with the transfer stood in for, one worker killed with SIGKILL
// halfway. Every job completes exactly once, no job runs in two attempts at
// once, fair turns and the running limit hold, and the killed worker's jobs
// are taken over by the others (the checks are in scale/simulate.ts).
import { queue } from "@torreclou/contracts";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Env, setupEnv } from "./helpers.ts";
import { simulate, summary } from "./scale/simulate.ts";

let env: Env;

beforeAll(async () => {
  env = await setupEnv(19);
});

afterAll(async () => {
  await env?.cleanup();
});

it("400 jobs of 20 users, 5 worker processes, one killed -9 halfway: each job completes exactly once", async () => {
  const t0 = Date.now();
  const figures = await simulate(env, {
    jobs: 400,
    users: 20,
    workers: 5,
    concurrency: 8,
    kill: 1,
    runningLimit: 2,
    transferMs: [20, 120],
    leaseMs: queue.leaseMs,
    cronMs: 5_000,
    stallMs: 90_000,
    say: (line) => console.log(`${((Date.now() - t0) / 1000).toFixed(1)} s ${line}`),
  });
  console.log(summary(figures).join("\n"));
  expect(figures.problems).toEqual([]);
  expect(figures.killed).toHaveLength(1);
  expect(figures.takenOver).toBeGreaterThan(0);
  expect(figures.attempts).toBeGreaterThan(400);
}, 240_000);
