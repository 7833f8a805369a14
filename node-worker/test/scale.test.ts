// The scale simulation, small (node-worker/bench/scale.ts runs it with
// 10,000 jobs and 20 workers): jobs of many users through real worker
// processes with the transfer stood in for, one worker killed with SIGKILL
// halfway. Every job completes exactly once, no job runs in two attempts at
// once, fair turns and the running limit hold, and the killed worker's jobs
// are taken over by the others (the checks are in scale/simulate.ts).
import { queue } from "@torreclou/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Env, setupEnv } from "./helpers.ts";
import { check, type JobRow, simulate, summary } from "./scale/simulate.ts";
import type { AttemptRecord } from "./scale/stand-in.ts";

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

describe("the simulation's checks", () => {
  // Two jobs of one user, each run once; the second let in once the first was claimed.
  const row = (id: string, admitted: number, claimed: number, finished: number): JobRow => ({
    id,
    userId: "u",
    state: "completed",
    attempt: 1,
    admittedAt: String(admitted),
    claimedAt: String(claimed),
    finishedAt: String(finished),
  });
  const jobs = [row("a", 0, 10, 100), row("b", 20, 30, 130)];
  const once = [
    { jobId: "a", n: 1, attempt: 1 },
    { jobId: "b", n: 1, attempt: 1 },
  ];
  const ran = (jobId: string, attempt: number, worker: string, start: number, end?: number) => [
    { event: "start", jobId, attempt, worker, at: start } satisfies AttemptRecord,
    ...(end === undefined
      ? []
      : [{ event: "end", jobId, attempt, worker, at: end, outcome: "completed" } satisfies AttemptRecord]),
  ];
  const records = [...ran("a", 1, "w1", 11, 101), ...ran("b", 1, "w2", 31, 131)];
  const options = { jobs: 2, runningLimit: 2, kill: 0 };

  it("hold for a run that went right", () => {
    expect(check(jobs, once, records, new Map(), options).problems).toEqual([]);
  });

  it("catch a job completed twice, or never", () => {
    expect(check(jobs, [{ jobId: "a", n: 2, attempt: 1 }], records, new Map(), options).problems).toEqual([
      "jobs completed more than once: a (2 times)",
      "jobs with no transition to completed: b",
      "job b: attempts 1 reported completing it, Postgres says none did",
    ]);
  });

  it("catch two attempts of a job at once, unless the first one's worker was dead by then", () => {
    const taken = [...ran("a", 1, "w1", 11), ...ran("a", 2, "w2", 50, 101), ...ran("b", 1, "w2", 31, 131)];
    const doneBy2 = [{ jobId: "a", n: 1, attempt: 2 }, once[1]!];
    expect(check(jobs, doneBy2, taken, new Map([["w1", 40]]), { ...options, kill: 1 })).toEqual({
      problems: [],
      takenOver: 1,
    });
    expect(check(jobs, doneBy2, taken, new Map([["w1", 60]]), { ...options, kill: 1 }).problems).toEqual([
      "job a ran in two attempts at once: 1 on w1 until 60.0, 2 on w2 from 50.0",
    ]);
  });

  it("catch a user's job let in out of turn, or beyond the running limit", () => {
    expect(
      check([row("a", 0, 10, 100), row("b", 5, 30, 130)], once, records, new Map(), options).problems,
    ).toEqual(["user u: job b was let in before the job before it (a) was claimed"]);
    expect(check(jobs, once, records, new Map(), { ...options, runningLimit: 1 }).problems).toEqual([
      "user u had 2 jobs let in at once (running limit 1)",
    ]);
  });
});
