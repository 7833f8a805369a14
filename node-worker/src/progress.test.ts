// Progress against a real Redis: events of an attempt older than the one the
// snapshot already shows are dropped, so the browser never sees a worker that
// lost its job write over the attempt that took it over.
import { randomUUID } from "node:crypto";
import { keys, progressField } from "@torreclou/contracts";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProgressPublisher } from "./progress.ts";

const redisUrl = (() => {
  const url = new URL(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
  url.pathname = "/8";
  return url.toString();
})();

let redis: Redis;
beforeAll(() => {
  redis = new Redis(redisUrl);
});
afterAll(async () => {
  await redis.quit();
});

const log = pino({ enabled: false });

async function attemptsInStream(jobId: string): Promise<number[]> {
  const entries = await redis.xrange(keys.progress(jobId), "-", "+");
  return entries.map(([, fields]) => JSON.parse(fields[fields.indexOf(progressField) + 1]!).attempt);
}

describe("progress fenced by attempt", () => {
  it("drops an older attempt's events once a newer attempt has published", async () => {
    const jobId = randomUUID();
    const old = new ProgressPublisher(redis, jobId, 1, "downloading", log);
    const taken = new ProgressPublisher(redis, jobId, 2, "queued", log);
    old.setBytes({ total: 100, downloaded: 40, uploaded: 20 });
    await old.phase("downloading");
    taken.setBytes({ total: 100, downloaded: 40, uploaded: 20 });
    await taken.phase("downloading");
    // The first attempt, paused past its lease, wakes up and reports.
    old.setBytes({ downloaded: 90, uploaded: 5 });
    await old.phase("uploading");
    const snapshot = JSON.parse((await redis.get(keys.snapshot(jobId)))!);
    expect(snapshot).toMatchObject({ attempt: 2, phase: "downloading", bytes: { uploaded: 20 } });
    expect(await attemptsInStream(jobId)).toEqual([1, 2]);
    // The newer attempt goes on as usual.
    await taken.phase("uploading");
    expect(await attemptsInStream(jobId)).toEqual([1, 2, 2]);
    await old.close();
    await taken.close();
  });

  it("never shows fewer bytes than the live attempt it replaced, even one that reported after it started", async () => {
    const jobId = randomUUID();
    const old = new ProgressPublisher(redis, jobId, 1, "downloading", log);
    const taken = new ProgressPublisher(redis, jobId, 2, "downloading", log);
    // The old attempt reports after the new one began from what it could see (nothing yet).
    old.setBytes({ total: 100, downloaded: 40, uploaded: 10 });
    await old.phase("downloading");
    taken.setBytes({ total: 100, downloaded: 0, uploaded: 0 });
    await taken.phase("downloading");
    const shown = () => redis.get(keys.snapshot(jobId)).then((raw) => JSON.parse(raw!));
    expect(await shown()).toMatchObject({ attempt: 2, bytes: { downloaded: 40, uploaded: 10 } });
    // Raised, not stuck: its own numbers show once they pass the old ones.
    taken.setBytes({ downloaded: 30, uploaded: 0 });
    await taken.phase("downloading");
    expect(await shown()).toMatchObject({ attempt: 2, bytes: { downloaded: 40, uploaded: 10 } });
    taken.setBytes({ downloaded: 60, uploaded: 20 });
    await taken.phase("uploading");
    expect(await shown()).toMatchObject({ attempt: 2, bytes: { downloaded: 60, uploaded: 20 } });
    await old.close();
    await taken.close();
  });

  it("starts a retry of an ended job afresh", async () => {
    const jobId = randomUUID();
    const first = new ProgressPublisher(redis, jobId, 1, "downloading", log);
    first.setBytes({ total: 100, downloaded: 40 });
    await first.phase("failed", "no peers");
    const retry = new ProgressPublisher(redis, jobId, 2, "queued", log);
    retry.setBytes({ total: 100, downloaded: 0 });
    await retry.phase("downloading");
    const snapshot = JSON.parse((await redis.get(keys.snapshot(jobId)))!);
    expect(snapshot).toMatchObject({ attempt: 2, phase: "downloading", bytes: { downloaded: 0 } });
    await first.close();
    await retry.close();
  });

  it("says what the job waits on, and stops saying it once it is over", async () => {
    const jobId = randomUUID();
    const publisher = new ProgressPublisher(redis, jobId, 1, "uploading", log);
    publisher.setWaiting({ for: "storage", reason: "connection refused", since: 1_700_000_000_000 });
    await publisher.phase("uploading");
    expect(JSON.parse((await redis.get(keys.snapshot(jobId)))!).waiting).toEqual({
      for: "storage",
      reason: "connection refused",
      since: 1_700_000_000_000,
    });
    publisher.setWaiting(undefined);
    await publisher.phase("uploading");
    expect(JSON.parse((await redis.get(keys.snapshot(jobId)))!).waiting).toBeUndefined();
    await publisher.close();
  });
});
