import { randomUUID } from "node:crypto";
import { keys, queue } from "@torreclou/contracts";
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
    // No grace: an entry is taken from a consumer as soon as its liveness key is gone.
    const jobs = new JobQueue(redisUrl, name, 30_000, pino({ enabled: false }), 0);
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
    // Until Redis reports the gone worker idle past the threshold used below (its clock, not a guess).
    const idleOf = async (name: string) => {
      const rows = (await redis.xinfo("CONSUMERS", queue.stream, queue.group)) as unknown[][];
      const row = rows.find((fields) => String(fields[fields.indexOf("name") + 1]) === name);
      return Number(row?.[row.indexOf("idle") + 1] ?? 0);
    };
    while ((await idleOf("worker-gone")) <= 20) await new Promise((resolve) => setImmediate(resolve));
    expect(await c.pruneConsumers(60_000)).toEqual([]);
    expect(await consumers()).toEqual(["worker-a", "worker-c", "worker-gone"]);
    expect(await c.pruneConsumers(20)).toEqual(["worker-gone"]);
    expect(await consumers()).toEqual(["worker-a", "worker-c"]);
  });

  it("takes over the entries of a worker whose liveness key is gone, never a live one's", async () => {
    await redis.flushdb();
    const a = await join("alive-a");
    const b = await join("alive-b");
    const jobId = randomUUID();
    await redis.xadd(queue.stream, "*", "job", JSON.stringify({ jobId }));
    const [entry] = await a.read(1, 1000);
    expect(entry).toMatchObject({ kind: "job", message: { jobId } });
    expect(await a.acquireLease(jobId)).toBe(true);
    // A is alive: B sees its entry pending and leaves it.
    expect(await b.check(5)).toEqual({ othersPending: 1, claimed: [] });
    // A dies: its liveness key goes (as it would lapse) and so does its lease.
    await redis.del(keys.alive("alive-a"), keys.lease(jobId));
    const taken = await b.check(5);
    expect(taken.claimed.map((e) => e.id)).toEqual([entry!.id]);
    expect(await b.acquireLease(jobId)).toBe(true);
    // A, back from the dead, may no longer settle the entry: it is B's.
    expect(await a.ack(entry!.id)).toBe(false);
    expect(await b.ack(entry!.id)).toBe(true);
    expect(await b.check(5)).toEqual({ othersPending: 0, claimed: [] });
  });

  it("hands a job back as a new entry carrying the old one's trace context, and retires the old", async () => {
    await redis.flushdb();
    const a = await join("hands-back");
    const jobId = randomUUID();
    const traceparent = `00-${"c3".repeat(16)}-${"d4".repeat(8)}-01`;
    await redis.xadd(queue.stream, "*", "job", JSON.stringify({ jobId, traceparent }));
    const [entry] = await a.read(1, 1000);
    expect(entry).toMatchObject({ kind: "job", message: { jobId, traceparent } });
    await a.requeue(jobId, entry!.id, { traceparent });
    const [again] = await a.read(1, 1000);
    expect(again).toMatchObject({ kind: "job", message: { jobId, traceparent } });
    expect(again!.id).not.toBe(entry!.id);
    expect(await redis.xrange(queue.stream, entry!.id, entry!.id)).toEqual([]);
  });

  it("renews leases it still owns and reports cancels by attempt, so a retry is never stopped by an older cancel", async () => {
    await redis.flushdb();
    const a = await join("renew-a");
    const [mine, lost] = [randomUUID(), randomUUID()];
    expect(await a.acquireLease(mine)).toBe(true);
    expect(await a.acquireLease(lost)).toBe(true);
    await redis.set(keys.lease(lost), "someone-else");
    // The user cancelled attempt 1; attempt 2 is the retry.
    await redis.set(keys.cancel(mine), "1");
    expect(
      await a.renew([
        { jobId: mine, attempt: 2 },
        { jobId: lost, attempt: 1 },
      ]),
    ).toEqual([
      { jobId: mine, owned: true, cancelled: false, watched: false },
      { jobId: lost, owned: false, cancelled: false, watched: false },
    ]);
    // Someone has the job's page open (a poll marked it): the same command says so.
    await redis.set(keys.watched(mine), "1", "EX", 10);
    expect(await a.renew([{ jobId: mine, attempt: 1 }])).toEqual([
      { jobId: mine, owned: true, cancelled: true, watched: true },
    ]);
    expect(await a.cancelRequested(mine, 1)).toBe(true);
    expect(await a.cancelRequested(mine, 2)).toBe(false);
    // Renewing keeps the worker's liveness key.
    expect(await redis.get(keys.alive("renew-a"))).toBe("renew-a");
    expect(await redis.pttl(keys.alive("renew-a"))).toBeGreaterThan(0);
  });

  it("wakes an idle reader with a watch notice", async () => {
    await redis.flushdb();
    const a = await join("watch-a");
    const b = await join("watch-b");
    const read = b.read(1, 60_000);
    await a.announce();
    const [notice] = await read;
    expect(notice).toMatchObject({ kind: "watch" });
    expect(await b.ack(notice!.id)).toBe(true);
  });
});
