import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { queue } from "@torreclou/contracts";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobQueue } from "./queue.ts";

// A database of its own on the suite's Redis.
const redisUrl = (() => {
  const url = new URL(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
  url.pathname = "/10";
  return url.toString();
})();

describe("JobQueue consumer group", () => {
  let redis: Redis;
  const opened: JobQueue[] = [];

  async function join(name: string): Promise<JobQueue> {
    const jobs = new JobQueue(redisUrl, name, 30_000, pino({ enabled: false }));
    await jobs.init();
    opened.push(jobs);
    return jobs;
  }

  async function consumers(): Promise<string[]> {
    const list = (await redis.xinfo("CONSUMERS", queue.stream, queue.group)) as unknown[][];
    return list.map((fields) => String(fields[fields.indexOf("name") + 1])).sort();
  }

  beforeAll(async () => {
    redis = new Redis(redisUrl);
    await redis.flushdb();
  });

  afterAll(async () => {
    for (const jobs of opened) await jobs.close();
    await redis.quit();
  });

  it("a worker leaves the group when it retires, unless it still holds entries", async () => {
    const a = await join("worker-a");
    const b = await join("worker-b");
    for (let i = 0; i < 2; i++)
      await redis.xadd(queue.stream, "*", "job", JSON.stringify({ jobId: randomUUID() }));
    expect(await a.read(1, 100)).toHaveLength(1);
    // worker-b took a job and finished it: it holds nothing now.
    const [taken] = await b.read(1, 100);
    await b.ack(taken?.id ?? "");
    expect(await consumers()).toEqual(["worker-a", "worker-b"]);

    expect(await b.retire()).toBe(true);
    // worker-a's entry would be lost with it, so it stays.
    expect(await a.retire()).toBe(false);
    expect(await consumers()).toEqual(["worker-a"]);
  });

  it("prunes the consumers of workers that are gone: idle, holding nothing, never itself", async () => {
    await redis.xgroup("CREATECONSUMER", queue.stream, queue.group, "worker-gone");
    await redis.xgroup("CREATECONSUMER", queue.stream, queue.group, "worker-c");
    const c = await join("worker-c");
    await sleep(100);
    expect(await c.pruneConsumers(60_000)).toEqual([]);
    expect(await consumers()).toEqual(["worker-a", "worker-c", "worker-gone"]);
    expect(await c.pruneConsumers(20)).toEqual(["worker-gone"]);
    expect(await consumers()).toEqual(["worker-a", "worker-c"]);
  });
});
