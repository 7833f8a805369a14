// The job row and the queue message must not part ways: fail each write in
// turn and check that nothing is lost and nothing half-written.
import { createExecutionContext, createScheduledController, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { type JobMessage, keys, queue } from "@torreclou/contracts";
import { jobs, torrents, users } from "@torreclou/db";
import { claimJob, type Db, transitionJob } from "@torreclou/db/jobs";
import { eq, inArray } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { redis, withDb } from "../../test/fixtures/db.ts";
import { failJobWrites, failRedis } from "../../test/fixtures/faults.ts";
import { type JobView, messagesFor, send, submitJob, userWithStorage } from "../../test/fixtures/jobs.ts";
import { makeTorrent, randomMagnet, toBase64 } from "../../test/fixtures/torrents.ts";
import worker from "../index.ts";
import { createRedis } from "../redis/index.ts";
import { type ReconcileResult, reconcile } from "./reconcile.ts";

const jobRow = (id: string) => withDb(async (db) => (await db.select().from(jobs).where(eq(jobs.id, id)))[0]);

/**
 * Ages the given jobs past the reconciler's threshold, then reconciles as the
 * cron does. Jobs of tests running in parallel stay younger than the
 * threshold, so a request that is between its writes is never touched.
 */
async function reconcileNow(...ids: string[]): Promise<ReconcileResult> {
  return withDb(async (db) => {
    if (ids.length > 0) {
      await db
        .update(jobs)
        .set({ updatedAt: new Date(Date.now() - 10 * 60_000) })
        .where(inArray(jobs.id, ids));
    }
    return reconcile(db, createRedis(env), { olderThanMs: 60_000 });
  });
}

describe("creating a job when a write fails", () => {
  it("answers 201 when the queue write fails; the reconciler enqueues the job exactly once", async () => {
    const user = await userWithStorage();
    const fault = failRedis(["XADD"]);
    let job: JobView;
    try {
      job = await submitJob(user);
    } finally {
      fault.restore();
    }
    expect(fault.seen).toContain("XADD");
    expect(job.state).toBe("queued");
    expect(job.enqueuedAt).toBeNull();
    expect(await messagesFor(job.id)).toEqual([]);
    // The MULTI failed as a whole: no owner key without its message.
    expect(await redis().get(keys.owner(job.id))).toBeNull();
    // The owner still sees the job's progress (the owner key is restored from Postgres).
    expect((await send(user.cookie, "GET", `/api/jobs/${job.id}/progress`)).status).toBe(200);

    // A young job is left alone (its request may still be between writes).
    const early = await reconcileNow();
    expect(early.enqueued).not.toContain(job.id);

    const first = await reconcileNow(job.id);
    expect(first.enqueued).toContain(job.id);
    expect(await messagesFor(job.id)).toHaveLength(1);
    expect((await jobRow(job.id))?.enqueuedAt).not.toBeNull();
    expect(await redis().get(keys.owner(job.id))).toBe(user.userId);

    const second = await reconcileNow(job.id);
    expect(second.enqueued).not.toContain(job.id);
    expect(await messagesFor(job.id)).toHaveLength(1);
  });

  it("survives Redis being unreachable altogether", async () => {
    const user = await userWithStorage();
    const torrent = await makeTorrent();
    const fault = failRedis(["MULTI", "XADD", "SET", "DEL"], "network");
    let response: Response;
    try {
      response = await send(user.cookie, "POST", "/api/jobs", { torrent: toBase64(torrent.bytes) });
    } finally {
      fault.restore();
    }
    expect(response.status).toBe(201);
    const job = ((await response.json()) as { job: JobView }).job;
    expect(job.enqueuedAt).toBeNull();
    await reconcileNow(job.id);
    expect(await messagesFor(job.id)).toHaveLength(1);
  });

  it("leaves a cancelled job alone even if its queue write never happened", async () => {
    const user = await userWithStorage();
    const fault = failRedis(["XADD"]);
    let job: JobView;
    try {
      job = await submitJob(user);
    } finally {
      fault.restore();
    }
    await send(user.cookie, "POST", `/api/jobs/${job.id}/cancel`);
    const result = await reconcileNow(job.id);
    expect(result.enqueued).not.toContain(job.id);
    expect(await messagesFor(job.id)).toEqual([]);
  });

  it("re-enqueues a retry whose queue write failed, as a later attempt than the one the cancel stopped", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    await send(user.cookie, "POST", `/api/jobs/${job.id}/cancel`);
    const fault = failRedis(["XADD"]);
    let retried: Response;
    try {
      retried = await send(user.cookie, "POST", `/api/jobs/${job.id}/retry`);
    } finally {
      fault.restore();
    }
    expect(retried.status).toBe(200);
    expect(((await retried.json()) as { job: JobView }).job).toMatchObject({
      state: "queued",
      enqueuedAt: null,
    });
    expect(await messagesFor(job.id)).toHaveLength(1); // the original only
    await reconcileNow(job.id);
    expect(await messagesFor(job.id)).toHaveLength(2);
    // The cancel flag names the cancelled attempt; the retry runs as a later one.
    const row = await jobRow(job.id);
    expect(Number(await redis().get(keys.cancel(job.id)))).toBeLessThan(row!.attempt);
  });

  it("writes nothing (no row, no torrent, no message) when the database insert fails", async () => {
    const user = await userWithStorage();
    const folder = `explode-${crypto.randomUUID()}`;
    const torrent = await makeTorrent();
    const restore = await failJobWrites(folder, "insert");
    const fault = failRedis([]);
    let response: Response;
    try {
      response = await send(user.cookie, "POST", "/api/jobs", {
        torrent: toBase64(torrent.bytes),
        targetFolder: folder,
      });
    } finally {
      fault.restore();
      await restore();
    }
    expect(response.status).toBe(500);
    expect(await response.json()).toMatchObject({ error: { code: "internal" } });
    expect(fault.seen).not.toContain("XADD");
    const list = (await (await send(user.cookie, "GET", "/api/jobs")).json()) as { jobs: unknown[] };
    expect(list.jobs).toEqual([]);
    const stored = await withDb((db) =>
      db.select().from(torrents).where(eq(torrents.infoHash, torrent.infoHash)),
    );
    expect(stored).toEqual([]);
  });

  it("loses nothing when recording enqueued_at fails after the message is written", async () => {
    const user = await userWithStorage();
    const folder = `no-mark-${crypto.randomUUID()}`;
    const restore = await failJobWrites(folder, "enqueued");
    let job: JobView;
    try {
      job = await submitJob(user, { targetFolder: folder });
      expect(job.enqueuedAt).toBeNull();
      expect(await messagesFor(job.id)).toHaveLength(1);
    } finally {
      await restore();
    }
    // The reconciler enqueues it again: a duplicate message, which the worker's lease makes harmless.
    await reconcileNow(job.id);
    expect(await messagesFor(job.id)).toHaveLength(2);
    expect((await jobRow(job.id))?.enqueuedAt).not.toBeNull();
    await reconcileNow(job.id);
    expect(await messagesFor(job.id)).toHaveLength(2);
  });
});

describe("the cron trigger", () => {
  it("runs the reconciler", async () => {
    const user = await userWithStorage();
    const fault = failRedis(["XADD"]);
    let job: JobView;
    try {
      job = await submitJob(user);
    } finally {
      fault.restore();
    }
    await withDb((db) =>
      db
        .update(jobs)
        .set({ updatedAt: new Date(Date.now() - 10 * 60_000) })
        .where(eq(jobs.id, job.id)),
    );
    const ctx = createExecutionContext();
    await worker.scheduled(createScheduledController({ cron: "* * * * *" }), { ...env }, ctx);
    await waitOnExecutionContext(ctx);
    expect(await messagesFor(job.id)).toHaveLength(1);
    expect((await jobRow(job.id))?.enqueuedAt).not.toBeNull();
  });
});

describe("the cron's gate", () => {
  // Postgres must not be touched at all: any use of this handle throws.
  const noDatabase = new Proxy({} as Db, {
    get(_, name) {
      throw new Error(`Postgres touched (${String(name)}) though nothing changed`);
    },
  });
  // Far in the past, so no other test's jobs are old enough to be looked at by these passes.
  const olderThanMs = 10 * 365 * 86_400_000;
  const start = Date.now() - 2 * olderThanMs;

  it("leaves Postgres alone until a job change is counted, and looks again until a pass has seen it", async () => {
    const tag = crypto.randomUUID();
    const gateKeys = { changes: `test:${tag}:changes`, state: `test:${tag}:state` };
    const pass = (at: number, db?: Db) =>
      withDb((real) =>
        reconcile(db ?? real, createRedis(env), {
          gate: true,
          gateKeys,
          olderThanMs,
          sweepMs: 100 * olderThanMs,
          now: new Date(at),
        }),
      );
    // No state yet: a full pass, which cannot have seen everything yet.
    expect((await pass(start)).skipped).toBeUndefined();
    // Nothing changed, and the first pass is now long enough ago: this one sees it all and finds nothing.
    expect((await pass(start + olderThanMs)).skipped).toBeUndefined();
    // From here on, one Redis read and no Postgres.
    for (let minute = 1; minute <= 3; minute++)
      expect((await pass(start + olderThanMs + minute * 60_000, noDatabase)).skipped).toBe(true);

    // A job changed (as edge and workers count it): passes again until one has seen the change old.
    await redis().incr(gateKeys.changes);
    const changedAt = start + olderThanMs + 5 * 60_000;
    await expect(pass(changedAt, noDatabase)).rejects.toThrow(/Postgres touched/);
    expect((await pass(changedAt)).skipped).toBeUndefined();
    expect((await pass(changedAt + 60_000)).skipped).toBeUndefined();
    expect((await pass(changedAt + olderThanMs)).skipped).toBeUndefined();
    expect((await pass(changedAt + olderThanMs + 60_000, noDatabase)).skipped).toBe(true);
    await redis().del(gateKeys.changes, gateKeys.state);
  });

  it("passes once a day anyway, and whenever its state is lost", async () => {
    const tag = crypto.randomUUID();
    const gateKeys = { changes: `test:${tag}:changes`, state: `test:${tag}:state` };
    const day = 86_400_000;
    const pass = (at: number, db?: Db) =>
      withDb((real) =>
        reconcile(db ?? real, createRedis(env), {
          gate: true,
          gateKeys,
          olderThanMs: 60_000,
          sweepMs: day,
          // Before any test's job: nothing is old enough to be acted on.
          now: new Date(start + at),
          selectionTimeoutMs: day,
        }),
      );
    expect((await pass(0)).skipped).toBeUndefined();
    expect((await pass(60_000)).skipped).toBeUndefined();
    expect((await pass(120_000, noDatabase)).skipped).toBe(true);
    expect((await pass(day - 1, noDatabase)).skipped).toBe(true);
    expect((await pass(day)).skipped).toBeUndefined();
    expect((await pass(day + 60_000, noDatabase)).skipped).toBe(true);
    await redis().del(gateKeys.state);
    await expect(pass(day + 120_000, noDatabase)).rejects.toThrow(/Postgres touched/);
    await redis().del(gateKeys.changes, gateKeys.state);
  });

  it("counts the job changes the edge makes", async () => {
    const before = Number((await redis().get(keys.reconcileChanges)) ?? 0);
    const user = await userWithStorage();
    const job = await submitJob(user);
    expect((await send(user.cookie, "POST", `/api/jobs/${job.id}/cancel`)).status).toBe(200);
    // Other tests count too: at least creation and cancel moved it.
    expect(Number(await redis().get(keys.reconcileChanges))).toBeGreaterThanOrEqual(before + 2);
  });
});

describe("closing the gaps between rows and stream", () => {
  it("enqueues again a live job whose stream entry Redis lost", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    const [entry] = await messagesFor(job.id);
    expect(entry).toBeDefined();
    // Redis comes back from a restart without the entry.
    await redis().xdel(queue.stream, entry!);
    expect(await messagesFor(job.id)).toEqual([]);
    const result = await reconcileNow(job.id);
    expect(result.requeued).toContain(job.id);
    expect(await messagesFor(job.id)).toHaveLength(1);
    // Once there, it is left alone.
    expect((await reconcileNow(job.id)).requeued).not.toContain(job.id);
  });

  it("restores a magnet waiting for its file list in the metadata stream, and acknowledges its entry once it ended", async () => {
    const user = await userWithStorage();
    const created = await send(user.cookie, "POST", "/api/jobs", {
      magnet: randomMagnet().uri,
      chooseFiles: true,
    });
    expect(created.status).toBe(201);
    const job = ((await created.json()) as { job: JobView }).job;
    const [entry] = await messagesFor(job.id, "run", queue.metadataStream);
    expect(entry).toBeDefined();
    await redis().xdel(queue.metadataStream, entry!);
    expect((await reconcileNow(job.id)).requeued).toContain(job.id);
    // Back where its state calls for: its file list is still unknown.
    expect(await messagesFor(job.id, "run", queue.metadataStream)).toHaveLength(1);
    expect(await messagesFor(job.id)).toEqual([]);

    // A worker took it and died; the job ended meanwhile: its entry is acknowledged.
    await redis()
      .xgroup(queue.metadataStream, {
        type: "CREATE",
        group: queue.group,
        id: "0",
        options: { MKSTREAM: true },
      })
      .catch(() => {});
    await redis().xreadgroup(queue.group, "worker-gone", queue.metadataStream, ">", { count: 1000 });
    await withDb((db) =>
      db.update(jobs).set({ state: "failed", failureReason: "x" }).where(eq(jobs.id, job.id)),
    );
    expect((await reconcileNow(job.id)).acknowledged).toContain(job.id);
    expect(await messagesFor(job.id, "run", queue.metadataStream)).toEqual([]);
  });

  it("writes the entries it restores with the trace context kept on the job's row", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    // As a create request stores it while tracing is on.
    const traceparent = `00-${"a1".repeat(16)}-${"b2".repeat(8)}-01`;
    await withDb((db) => db.update(jobs).set({ traceParent: traceparent }).where(eq(jobs.id, job.id)));
    const [entry] = await messagesFor(job.id);
    await redis().xdel(queue.stream, entry!);
    expect((await reconcileNow(job.id)).requeued).toContain(job.id);
    const [restored] = await messagesFor(job.id);
    const fields = (await redis().xrange(queue.stream, restored!, restored!))[restored!]!;
    const message = (typeof fields.job === "string" ? JSON.parse(fields.job) : fields.job) as JobMessage;
    expect(message).toEqual({ jobId: job.id, traceparent });
  });

  it("leaves a live job alone while a worker holds its lease", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    for (const entry of await messagesFor(job.id)) await redis().xdel(queue.stream, entry);
    await redis().set(keys.lease(job.id), "worker-alive", { px: 60_000 });
    expect((await reconcileNow(job.id)).requeued).not.toContain(job.id);
    expect(await messagesFor(job.id)).toEqual([]);
  });

  it("acknowledges the pending entry of a job that ended while its worker died", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    const [entry] = await messagesFor(job.id);
    // A worker took the entry, the job failed, and the worker died before acknowledging.
    await redis()
      .xgroup(queue.stream, { type: "CREATE", group: queue.group, id: "0", options: { MKSTREAM: true } })
      .catch(() => {});
    await redis().xreadgroup(queue.group, "worker-gone", queue.stream, ">", { count: 1000 });
    await withDb((db) =>
      db.update(jobs).set({ state: "failed", failureReason: "x" }).where(eq(jobs.id, job.id)),
    );
    const result = await reconcileNow(job.id);
    expect(result.acknowledged).toContain(job.id);
    const pending = (await redis().xpending(queue.stream, queue.group, entry!, entry!, 1)) as unknown[];
    expect(pending).toEqual([]);
    expect(await messagesFor(job.id)).toEqual([]);
  });
});

describe("fair turns the reconciler restores", () => {
  it("lets in a user's next job when whoever should have (a worker that died after its job ended) did not", async () => {
    const user = await userWithStorage();
    const first = await submitJob(user);
    const second = await submitJob(user);
    expect(await messagesFor(second.id)).toEqual([]);
    // A worker took the first job and finished it, then died before letting the next one in.
    await withDb(async (db) => {
      const job = await claimJob(db, first.id);
      await transitionJob(db, { jobId: first.id, to: "downloading", cause: "worker", attempt: job!.attempt });
      await transitionJob(db, { jobId: first.id, to: "uploading", cause: "worker", attempt: job!.attempt });
      await transitionJob(db, { jobId: first.id, to: "completed", cause: "worker", attempt: job!.attempt });
    });
    const result = await reconcileNow(first.id, second.id);
    expect(result.admitted).toContain(second.id);
    expect(await messagesFor(second.id)).toHaveLength(1);
    expect((await jobRow(second.id))?.enqueuedAt).not.toBeNull();
  });

  it("lets nothing in while the user's turn is still taken", async () => {
    const user = await userWithStorage();
    const first = await submitJob(user);
    const second = await submitJob(user);
    // The first waits in the queue, unclaimed: the second's turn has not come.
    const result = await reconcileNow(first.id, second.id);
    expect(result.admitted).not.toContain(second.id);
    expect(await messagesFor(second.id)).toEqual([]);
    expect(await messagesFor(first.id)).toHaveLength(1);
  });

  it("lets nothing in while the user's running limit is reached", async () => {
    const user = await userWithStorage();
    const first = await submitJob(user);
    const second = await submitJob(user);
    await withDb(async (db) => {
      await db.update(users).set({ runningLimit: 1 }).where(eq(users.id, user.userId));
      const job = await claimJob(db, first.id);
      await transitionJob(db, { jobId: first.id, to: "downloading", cause: "worker", attempt: job!.attempt });
    });
    const result = await reconcileNow(first.id, second.id);
    expect(result.admitted).not.toContain(second.id);
    expect(await messagesFor(second.id)).toEqual([]);
  });
});
