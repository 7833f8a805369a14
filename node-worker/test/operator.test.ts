// What the worker gives the operator: its heartbeat record (written at start,
// removed on a clean stop), the fleet gauges on /metrics (stuck and exhausted
// jobs, queued jobs, workers seen), a job that used up its attempts failed with
// the reason the operator's view looks for, and a Grafana dashboard that only
// asks for metrics a worker exports.
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { resolve } from "node:path";
import { exhaustedReason, MAX_ATTEMPTS, readWorkerBeat, workersKey } from "@torreclou/contracts";
import { jobs, jobTransitions } from "@torreclou/db";
import { claimJob, transitionJob } from "@torreclou/db/jobs";
import { eq } from "drizzle-orm";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.ts";
import { createMetrics, type Metrics } from "../src/metrics.ts";
import { Worker } from "../src/worker.ts";
import {
  createProfile,
  type Env,
  enqueue,
  makeFixture,
  setupEnv,
  submitJob,
  waitForState,
  workerEnv,
} from "./helpers.ts";

const root = resolve(import.meta.dirname, "../..");
let env: Env;

beforeAll(async () => {
  env = await setupEnv(18);
});

afterAll(async () => {
  await env?.cleanup();
});

/** A worker in this process with its own metrics registry. */
async function startWorker(
  extra: Record<string, string> = {},
): Promise<{ worker: Worker; metrics: Metrics }> {
  const config = loadConfig(workerEnv(env, { WORKER_FLEET_METRICS: "true", ...extra }));
  const metrics = createMetrics({ fleet: config.WORKER_FLEET_METRICS });
  const worker = new Worker({ config, db: env.db, log: pino({ level: "silent" }), metrics });
  await worker.start();
  return { worker, metrics };
}

/** The value of one series of a scrape of `metrics` (undefined: not exported). */
async function scraped(metrics: Metrics, name: string, labels: Record<string, string> = {}) {
  const all = await metrics.registry.getMetricsAsJSON();
  const metric = all.find((m) => m.name === name) as
    | { values: { value: number; labels: Record<string, string | number> }[] }
    | undefined;
  return metric?.values.find((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want))
    ?.value;
}

describe("the operator's numbers from a worker", () => {
  it("writes a heartbeat record while it runs, and shows fleet gauges when scraped", async () => {
    const { worker, metrics } = await startWorker({ WORKER_ID: "ops-worker-1", WORKER_VERSION: "9.8.7" });
    try {
      const beat = readWorkerBeat(await env.redis.hget(workersKey, "ops-worker-1"));
      expect(beat).toMatchObject({
        id: "ops-worker-1",
        host: hostname(),
        version: "9.8.7",
        jobs: [],
        pid: process.pid,
      });
      expect(await scraped(metrics, "torreclou_workers_seen")).toBe(1);

      // A job stuck in downloading (no update for two hours), and one that used up its attempts.
      const made = await makeFixture(env, "ops-stuck", [{ path: "ops-stuck", size: 16 * 1024 }]);
      const profileId = await createProfile(env);
      const stuck = await submitJob(env, { made, profileId, enqueue: false });
      const gaveUp = await submitJob(env, { made, profileId, enqueue: false });
      for (const [id, to, reason] of [
        [stuck.id, "downloading", undefined],
        [gaveUp.id, "failed", exhaustedReason()],
      ] as const) {
        const job = await claimJob(env.db, id);
        await transitionJob(env.db, { jobId: id, to, cause: "worker", attempt: job!.attempt, reason });
      }
      await env.db
        .update(jobs)
        .set({ updatedAt: new Date(Date.now() - 2 * 3_600_000) })
        .where(eq(jobs.id, stuck.id));
      expect(await scraped(metrics, "torreclou_jobs_stuck", { state: "downloading" })).toBe(1);
      expect(await scraped(metrics, "torreclou_jobs_stuck", { state: "queued" })).toBe(0);
      expect(await scraped(metrics, "torreclou_jobs_exhausted")).toBe(1);
      expect(await scraped(metrics, "torreclou_jobs_queued")).toBe(0);
    } finally {
      await worker.shutdown();
    }
    // A clean stop removes the record: the worker is gone, not missing.
    expect(await env.redis.hget(workersKey, "ops-worker-1")).toBeNull();
  });

  it("fails a job started too often with the reason the operator's view looks for, and counts it", async () => {
    const made = await makeFixture(env, "ops-exhausted", [{ path: "ops-exhausted", size: 16 * 1024 }]);
    const profileId = await createProfile(env);
    const job = await submitJob(env, { made, profileId, enqueue: false });
    // Started MAX_ATTEMPTS times since its user queued it (the user's transition says attempt 0).
    await env.db.update(jobs).set({ attempt: MAX_ATTEMPTS }).where(eq(jobs.id, job.id));
    const { worker, metrics } = await startWorker();
    try {
      await enqueue(env, job);
      const failed = await waitForState(env, job.id, ["failed"]);
      expect(failed.failureReason).toBe(exhaustedReason());
      expect(await scraped(metrics, "torreclou_worker_job_outcomes_total", { outcome: "exhausted" })).toBe(1);
      const history = await env.db.select().from(jobTransitions).where(eq(jobTransitions.jobId, job.id));
      expect(history.at(-1)).toMatchObject({ toState: "failed", cause: "system" });
    } finally {
      await worker.shutdown();
    }
  });

  it("has a Grafana dashboard and alert rules that only use metrics a worker exports", async () => {
    const metrics = createMetrics({ fleet: true });
    const exported = new Set((await metrics.registry.getMetricsAsJSON()).map((m) => m.name));
    // Histograms are exported as _bucket/_sum/_count series of their name.
    const known = (name: string) =>
      exported.has(name) || exported.has(name.replace(/_(bucket|sum|count)$/, ""));
    const dashboard = JSON.parse(readFileSync(resolve(root, "deploy/grafana/torreclou.json"), "utf8")) as {
      panels: { title: string; targets?: { expr: string }[] }[];
    };
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(5);
    const rules = readFileSync(resolve(root, "deploy/prometheus/alerts.yml"), "utf8");
    const used = new Set(
      [...exprs.join("\n").matchAll(/torreclou_[a-z_]+/g), ...rules.matchAll(/torreclou_[a-z_]+/g)].map(
        (m) => m[0],
      ),
    );
    expect([...used].filter((name) => !known(name))).toEqual([]);
    // Every gauge and counter of the operator's view is on the dashboard.
    for (const name of [
      "torreclou_workers_seen",
      "torreclou_jobs_stuck",
      "torreclou_jobs_exhausted",
      "torreclou_jobs_oldest_queued_age_seconds",
    ])
      expect(used).toContain(name);
  });
});
