// What the worker costs (Upstash bills per command): counted, not timed.
// - An idle worker: the commands of a fixed number of its loops, seen by the
//   Redis server itself (MONITOR, this file's database only), scaled to the
//   default loop lengths, at most two a minute, and no SQL at all.
// - A running job's progress on its own (injected) clock: at most one event
//   per 30 s while nobody watches, at most one per 2 s while someone does,
//   and the lease renewal says which, at no extra command.
import { keys, queue } from "@torreclou/contracts";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { loadConfig } from "../src/config.ts";
import { ProgressPublisher } from "../src/progress.ts";
import { JobQueue } from "../src/queue/queue.ts";
import { type Env, setupEnv, startWorker, workerEnv } from "./helpers.ts";
import { monitorRedis } from "./monitor.ts";

const DB = 20;
const silent = pino({ level: "silent" });
let env: Env;

beforeAll(async () => {
  env = await setupEnv(20);
});

afterAll(async () => {
  await env?.cleanup();
});

interface Seen {
  name: string;
  /** Run by a script (not billed by Upstash: the script is one command). */
  inScript: boolean;
}

/** Every command the Redis server runs on this file's database, as it runs them. */
async function monitor(): Promise<{
  seen: Seen[];
  next(name: string, count: number): Promise<number>;
  stop(): void;
}> {
  const seen: Seen[] = [];
  const waiters: { name: string; count: number; resolve: (at: number) => void }[] = [];
  const check = () => {
    for (const waiter of [...waiters]) {
      if (seen.filter((s) => s.name === waiter.name).length >= waiter.count) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(seen.length);
      }
    }
  };
  const mon = await monitorRedis(env.redisUrl, ({ args, source, database }) => {
    if (Number(database) !== DB) return;
    seen.push({ name: String(args[0]).toUpperCase(), inScript: source === "lua" });
    check();
  });
  return {
    seen,
    /** Resolves with the number of commands seen once `count` commands named `name` were. */
    next: (name, count) =>
      new Promise<number>((resolve) => {
        waiters.push({ name, count, resolve });
        check();
      }),
    stop: () => {
      mon.close();
    },
  };
}

describe("an idle worker", () => {
  it("makes at most two Redis commands a minute and no SQL", async () => {
    const defaults = loadConfig(workerEnv(env));
    // The same loops, shortened in the default ratio, so many of them pass quickly.
    const idleCheckMs = 200;
    const errandBlockMs = Math.round(
      (idleCheckMs * defaults.WORKER_ERRAND_BLOCK_MS) / defaults.WORKER_IDLE_CHECK_MS,
    );
    const sql = vi.spyOn(env.pool, "query");
    const watch = await monitor();
    const { worker } = await startWorker(env, {
      WORKER_IDLE_CHECK_MS: String(idleCheckMs),
      WORKER_ERRAND_BLOCK_MS: String(errandBlockMs),
    });
    try {
      // Past start-up (group creation, first looks, the consumer prune), then a fixed number of loops.
      const warm = 3;
      const loops = 40;
      const from = await watch.next("XPENDING", warm);
      const sqlBefore = sql.mock.calls.length;
      const to = await watch.next("XPENDING", warm + loops);
      const window = watch.seen.slice(from, to);
      const billed = window.filter((s) => !s.inScript);
      // One look at the group per loop; the blocking read; the errand loop's BLPOP and GET.
      const names = new Set(billed.map((s) => s.name));
      expect([...names].every((n) => ["XPENDING", "XREADGROUP", "BLPOP", "GET"].includes(n))).toBe(true);
      const perMinute = (billed.length / loops) * (60_000 / defaults.WORKER_IDLE_CHECK_MS);
      console.log(
        `idle worker: ${billed.length} commands in ${loops} loops of ${defaults.WORKER_IDLE_CHECK_MS / 1000} s = ${perMinute.toFixed(2)} a minute`,
      );
      expect(perMinute).toBeLessThanOrEqual(2);
      expect(sql.mock.calls.length - sqlBefore).toBe(0);
    } finally {
      watch.stop();
      sql.mockRestore();
      await worker.shutdown(5000);
    }
  });
});

describe("a running job's progress", () => {
  it("is published at most every 30 s unwatched and every 2 s watched, on the job's own clock", async () => {
    const jobId = crypto.randomUUID();
    let now = 1_000_000;
    const publisher = new ProgressPublisher(env.redis, jobId, 1, "downloading", silent, () => now);
    const events = async () => (await env.redis.xlen(keys.progress(jobId))) as number;
    await publisher.phase("downloading");
    const started = await events();
    let downloaded = 0;
    /** Ten minutes of transfer, bytes moving every 100 ms, the publisher ticking as its timer would. */
    const run = async (minutes: number) => {
      for (let t = 0; t < minutes * 600; t++) {
        now += 100;
        downloaded += 1000;
        publisher.setBytes({ total: 1e12, downloaded });
        publisher.tick();
      }
      await publisher.close();
    };

    await run(10);
    const unwatched = (await events()) - started;
    console.log(`unwatched: ${unwatched} events in 10 min`);
    expect(unwatched).toBeLessThanOrEqual((10 * 60_000) / queue.progressIdleMs);
    expect(unwatched).toBeGreaterThanOrEqual((10 * 60_000) / queue.progressIdleMs - 1);

    // Someone opens the page: the numbers go out at once, then at the watched pace.
    const before = await events();
    downloaded += 1000;
    publisher.setBytes({ downloaded });
    publisher.setWatched(true);
    await publisher.close();
    expect(await events()).toBe(before + 1);
    await run(10);
    const watched = (await events()) - before;
    console.log(`watched: ${watched} events in 10 min`);
    expect(watched).toBeLessThanOrEqual((10 * 60_000) / queue.progressWatchedMs + 1);
    // Fresh: one at least every 2 s (less the first's rounding).
    expect(watched).toBeGreaterThanOrEqual((10 * 60_000) / queue.progressWatchedMs - 1);

    // The page closes: back to the idle pace.
    publisher.setWatched(false);
    const after = await events();
    await run(10);
    expect((await events()) - after).toBeLessThanOrEqual((10 * 60_000) / queue.progressIdleMs);
  });

  it("learns whether someone watches from the lease renewal, in the same one command", async () => {
    const [watchedJob, unwatchedJob] = [crypto.randomUUID(), crypto.randomUUID()];
    const q = new JobQueue(env.redisUrl, `cost-${watchedJob.slice(0, 8)}`, 6000, silent);
    await q.init();
    try {
      expect(await q.acquireLease(watchedJob)).toBe(true);
      expect(await q.acquireLease(unwatchedJob)).toBe(true);
      // What the edge's poll leaves behind.
      await env.redis.set(keys.watched(watchedJob), "1", "EX", queue.watchedSeconds);
      const watch = await monitor();
      try {
        const renewed = await q.renew([
          { jobId: watchedJob, attempt: 1 },
          { jobId: unwatchedJob, attempt: 1 },
        ]);
        expect(renewed).toEqual([
          { jobId: watchedJob, owned: true, cancelled: false, watched: true },
          { jobId: unwatchedJob, owned: true, cancelled: false, watched: false },
        ]);
        await watch.next("EXISTS", 2);
        expect(watch.seen.filter((s) => !s.inScript).map((s) => s.name)).toEqual(["EVAL"]);
      } finally {
        watch.stop();
      }
    } finally {
      await q.close();
    }
  });
});
