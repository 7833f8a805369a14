// Choosing the files of a magnet job: creation with chooseFiles (and the
// magnet forms accepted or refused), the selection route (owner scoping,
// state, indexes, destination names, CSRF), and the selection timeout the
// reconcile cron enforces, with its clock injected.
import { env } from "cloudflare:workers";
import { keys, queue } from "@torreclou/contracts";
import { jobFiles, jobs } from "@torreclou/db";
import { claimJob, transitionJob } from "@torreclou/db/jobs";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { addStorageProfile, redis, withDb } from "../../test/fixtures/db.ts";
import { type JobView, messagesFor, send, type TestUser, userWithStorage } from "../../test/fixtures/jobs.ts";
import { makeTorrent, randomMagnet, toBase64 } from "../../test/fixtures/torrents.ts";
import { call, signIn } from "../../test/helpers.ts";
import { reconcile } from "../queue/reconcile.ts";
import { createRedis } from "../redis/index.ts";

interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}
type Selectable = JobView & { selectionDeadline: string | null };

const errorOf = async (response: Response) => ((await response.json()) as ErrorBody).error;
const jobOf = async (response: Response) => ((await response.json()) as { job: Selectable }).job;

const FILES = [
  { index: 0, path: "Show/e01.mkv", size: 1000 },
  { index: 2, path: "Show/e02.mkv", size: 2000 },
  { index: 3, path: "Show/notes.txt", size: 30 },
];

/**
 * A magnet job submitted with chooseFiles, then moved as a worker moves it
 * once it has the metadata: files written (index 1 a padding file, left
 * out), resolving → awaiting_selection, noted in the awaiting set.
 */
async function awaitingJob(user: TestUser, files = FILES, preselected?: number[]): Promise<Selectable> {
  const magnet = randomMagnet("Show");
  const created = await send(user.cookie, "POST", "/api/jobs", { magnet: magnet.uri, chooseFiles: true });
  expect(created.status).toBe(201);
  const job = await jobOf(created);
  await withDb(async (db) => {
    const claimed = await claimJob(db, job.id);
    await transitionJob(db, { jobId: job.id, to: "resolving", cause: "worker", attempt: claimed!.attempt });
    await db.insert(jobFiles).values(
      files.map((f) => ({
        jobId: job.id,
        fileIndex: f.index,
        path: f.path,
        size: f.size,
        selected: !preselected || preselected.includes(f.index),
      })),
    );
    await transitionJob(db, {
      jobId: job.id,
      to: "awaiting_selection",
      cause: "worker",
      attempt: claimed!.attempt,
    });
  });
  await redis().zadd(keys.awaitingSelection, { score: Date.now(), member: job.id });
  return jobOf(await send(user.cookie, "GET", `/api/jobs/${job.id}`));
}

describe("POST /api/jobs with chooseFiles and magnet forms", () => {
  it("keeps a magnet job that asks to choose queued, in the metadata stream, until its metadata is known", async () => {
    const user = await userWithStorage();
    const response = await send(user.cookie, "POST", "/api/jobs", {
      magnet: randomMagnet().uri,
      chooseFiles: true,
    });
    expect(response.status).toBe(201);
    const job = await jobOf(response);
    expect(job).toMatchObject({ state: "queued", fileCount: null, selectionDeadline: null });
    // Fetching its file list takes no download slot: the metadata stream's entry, none in the download stream.
    expect(await messagesFor(job.id, "run", queue.metadataStream)).toHaveLength(1);
    expect(await messagesFor(job.id)).toHaveLength(0);
    const row = await withDb(async (db) => (await db.select().from(jobs).where(eq(jobs.id, job.id)))[0]);
    expect(row?.chooseFiles).toBe(true);
  });

  it("refuses chooseFiles with a .torrent: its files are picked at once", async () => {
    const user = await userWithStorage();
    const torrent = await makeTorrent();
    const response = await send(user.cookie, "POST", "/api/jobs", {
      torrent: toBase64(torrent.bytes),
      chooseFiles: true,
    });
    expect(response.status).toBe(422);
    expect(await errorOf(response)).toMatchObject({ code: "choose_needs_magnet" });
  });

  it("refuses a v2-only (btmh) magnet clearly and takes a hybrid one by its v1 hash", async () => {
    const user = await userWithStorage();
    const v2 = "b".repeat(64);
    const only = await send(user.cookie, "POST", "/api/jobs", {
      magnet: `magnet:?xt=urn:btmh:1220${v2}&dn=x`,
    });
    expect(only.status).toBe(422);
    const error = await errorOf(only);
    expect(error.message).toMatch(/only a BitTorrent v2 hash/);
    expect(error.message).toMatch(/hybrid magnet link/);

    const { infoHash } = randomMagnet();
    const hybrid = await send(user.cookie, "POST", "/api/jobs", {
      magnet: `magnet:?xt=urn:btmh:1220${v2}&xt=urn:btih:${infoHash}&dn=Hybrid`,
      chooseFiles: true,
    });
    expect(hybrid.status).toBe(201);
    expect(await jobOf(hybrid)).toMatchObject({ infoHash, name: "Hybrid", state: "queued" });
  });

  it("reads so= strictly at creation", async () => {
    const user = await userWithStorage();
    const good = await send(user.cookie, "POST", "/api/jobs", { magnet: `${randomMagnet().uri}&so=0,2,4-6` });
    expect(good.status).toBe(201);
    for (const so of ["1,,2", "3-1", "x", "01", `0-${20_000}`]) {
      const bad = await send(user.cookie, "POST", "/api/jobs", {
        magnet: `${randomMagnet().uri}&so=${encodeURIComponent(so)}`,
      });
      expect(bad.status, so).toBe(422);
      const error = await errorOf(bad);
      expect(error.code).toBe("invalid_magnet");
      expect(error.message).toMatch(/file selection \(so=/);
    }
  });
});

describe("POST /api/jobs/:id/selection", () => {
  it("queues the chosen files, skips the rest, and enqueues the job again", async () => {
    const user = await userWithStorage();
    const job = await awaitingJob(user, FILES, [0, 3]);
    expect(job.state).toBe("awaiting_selection");
    // The magnet's so= choice is the default checked set the chooser shows.
    expect(job.files.map((f) => [f.index, f.selected])).toEqual([
      [0, true],
      [2, false],
      [3, true],
    ]);
    const deadline = Date.parse(job.selectionDeadline!);
    expect(deadline - Date.now()).toBeGreaterThan(23 * 3_600_000);
    expect(deadline - Date.now()).toBeLessThanOrEqual(24 * 3_600_000);

    const response = await send(user.cookie, "POST", `/api/jobs/${job.id}/selection`, {
      files: [3, 2, 2],
      targetFolder: "TV/Show",
    });
    expect(response.status).toBe(200);
    const queued = await jobOf(response);
    expect(queued).toMatchObject({
      state: "queued",
      targetFolder: "TV/Show",
      selectionDeadline: null,
      bytes: { total: 2030, downloaded: 0, uploaded: 0 },
    });
    expect(queued.enqueuedAt).not.toBeNull();
    expect(queued.files.map((f) => [f.index, f.selected, f.state])).toEqual([
      [0, false, "skipped"],
      [2, true, "pending"],
      [3, true, "pending"],
    ]);
    expect(queued.transitions.at(-1)).toMatchObject({
      from: "awaiting_selection",
      to: "queued",
      cause: "user",
      reason: "2 files chosen by the user",
    });
    // Its download goes to the download stream; the metadata stream's entry was the first run's.
    expect(await messagesFor(job.id)).toHaveLength(1);
    expect(await messagesFor(job.id, "run", queue.metadataStream)).toHaveLength(1);
    expect(await redis().zscore(keys.awaitingSelection, job.id)).toBeNull();

    // Chosen once: again is a 409 naming why.
    const again = await send(user.cookie, "POST", `/api/jobs/${job.id}/selection`, { files: [0] });
    expect(again.status).toBe(409);
    expect(await errorOf(again)).toMatchObject({
      code: "not_awaiting_selection",
      details: { state: "queued" },
    });
  });

  it("is the owner's only: another user gets 404, and a request without the web app's Origin 403", async () => {
    const user = await userWithStorage();
    const job = await awaitingJob(user);
    const other = await userWithStorage();
    const theirs = await send(other.cookie, "POST", `/api/jobs/${job.id}/selection`, { files: [0] });
    expect(theirs.status).toBe(404);
    expect(await errorOf(theirs)).toMatchObject({ code: "job_not_found" });
    const nobody = await send(user.cookie, "POST", `/api/jobs/${crypto.randomUUID()}/selection`, {
      files: [0],
    });
    expect(nobody.status).toBe(404);
    const forged = await call(`/api/jobs/${job.id}/selection`, {
      method: "POST",
      headers: { cookie: user.cookie, "content-type": "application/json", origin: "https://evil.example" },
      body: JSON.stringify({ files: [0] }),
    });
    expect(forged.status).toBe(403);
    const signedOut = await call(`/api/jobs/${job.id}/selection`, {
      method: "POST",
      headers: { "content-type": "application/json", origin: env.WEB_ORIGIN as string },
      body: JSON.stringify({ files: [0] }),
    });
    expect(signedOut.status).toBe(401);
    // Nothing changed.
    expect((await jobOf(await send(user.cookie, "GET", `/api/jobs/${job.id}`))).state).toBe(
      "awaiting_selection",
    );
  });

  it("answers 409 for a job that does not wait for a choice", async () => {
    const user = await userWithStorage();
    const created = await send(user.cookie, "POST", "/api/jobs", {
      magnet: randomMagnet().uri,
      chooseFiles: true,
    });
    const job = await jobOf(created);
    const early = await send(user.cookie, "POST", `/api/jobs/${job.id}/selection`, { files: [0] });
    expect(early.status).toBe(409);
    expect((await errorOf(early)).message).toMatch(
      /not waiting for a choice of files: its metadata is not known yet/,
    );
    await send(user.cookie, "POST", `/api/jobs/${job.id}/cancel`);
    const cancelled = await send(user.cookie, "POST", `/api/jobs/${job.id}/selection`, { files: [0] });
    expect(cancelled.status).toBe(409);
    expect((await errorOf(cancelled)).message).toMatch(/it is cancelled/);
  });

  it("answers 400 for an empty selection, indexes the job lacks (a padding file's too) and bad bodies", async () => {
    const user = await userWithStorage();
    const job = await awaitingJob(user);
    const cases: [unknown, string, RegExp][] = [
      [{ files: [] }, "no_files_selected", /at least one file/],
      [{ files: [0, 1] }, "unknown_files", /no file with index 1; it has 3 files/],
      [{ files: [0, 7, 9] }, "unknown_files", /no file with index 7, 9/],
      [{ files: [-1] }, "invalid_request", /files/],
      [{ files: ["0"] }, "invalid_request", /files/],
      [{}, "invalid_request", /files/],
      [{ files: [0], targetFolder: "../up" }, "invalid_request", /\.\./],
    ];
    for (const [body, code, message] of cases) {
      const response = await send(user.cookie, "POST", `/api/jobs/${job.id}/selection`, body);
      expect(response.status, JSON.stringify(body)).toBe(400);
      const error = await errorOf(response);
      expect(error.code, JSON.stringify(body)).toBe(code);
      expect(error.message).toMatch(message);
    }
    const notId = await send(user.cookie, "POST", "/api/jobs/not-an-id/selection", { files: [0] });
    expect(notId.status).toBe(400);
    expect((await jobOf(await send(user.cookie, "GET", `/api/jobs/${job.id}`))).state).toBe(
      "awaiting_selection",
    );
  });

  it("refuses chosen files the destination would store under one name, as at creation", async () => {
    const { cookie, userId } = await signIn();
    const profile = await addStorageProfile(userId, { kind: "onedrive" });
    const user = { cookie, userId, profileId: profile.id };
    const job = await awaitingJob(user, [
      { index: 0, path: "Show/Notes.txt", size: 10 },
      { index: 1, path: "Show/notes.txt", size: 10 },
      { index: 2, path: "Show/e01.mkv", size: 10 },
    ]);
    const clash = await send(cookie, "POST", `/api/jobs/${job.id}/selection`, { files: [0, 1] });
    expect(clash.status).toBe(422);
    const error = await errorOf(clash);
    expect(error.message).toContain("Show/Notes.txt");
    expect(error.message).toContain("Show/notes.txt");
    // One of the two is fine.
    const fine = await send(cookie, "POST", `/api/jobs/${job.id}/selection`, { files: [1, 2] });
    expect(fine.status).toBe(200);
  });
});

describe("the selection timeout", () => {
  it("cancels a wait older than the timeout in the reconcile, with a reason a person can read", async () => {
    const user = await userWithStorage();
    const job = await awaitingJob(user);
    const fresh = await awaitingJob(user);
    const later = (ms: number) => new Date(Date.now() + ms);
    const run = (now: Date, selectionTimeoutMs?: number) =>
      withDb((db) => reconcile(db, createRedis(env), { now, selectionTimeoutMs }));

    // Within the day: nothing happens.
    expect((await run(later(23 * 3_600_000))).unchosen).not.toContain(job.id);
    // A day and a minute later (the default timeout), both waits have run out.
    const result = await run(later(24 * 3_600_000 + 60_000));
    expect(result.unchosen).toEqual(expect.arrayContaining([job.id, fresh.id]));
    const view = await jobOf(await send(user.cookie, "GET", `/api/jobs/${job.id}`));
    expect(view.state).toBe("cancelled");
    expect(view.transitions.at(-1)).toMatchObject({
      from: "awaiting_selection",
      to: "cancelled",
      cause: "system",
      reason: "No files were chosen within 24 h; the job was cancelled.",
    });
    expect(await redis().zscore(keys.awaitingSelection, job.id)).toBeNull();
    const choose = await send(user.cookie, "POST", `/api/jobs/${job.id}/selection`, { files: [0] });
    expect(choose.status).toBe(409);
  });

  it("honours a configured timeout, and asks Postgres only when Redis says a wait may have run out", async () => {
    const user = await userWithStorage();
    const job = await awaitingJob(user);
    // Not in the awaiting set (say, Redis lost it): the reconcile does not look in Postgres.
    await redis().zrem(keys.awaitingSelection, job.id);
    const now = new Date(Date.now() + 10 * 60_000);
    const gated = await withDb((db) =>
      reconcile(db, createRedis(env), { now, selectionTimeoutMs: 5 * 60_000 }),
    );
    expect(gated.unchosen).not.toContain(job.id);
    expect((await jobOf(await send(user.cookie, "GET", `/api/jobs/${job.id}`))).state).toBe(
      "awaiting_selection",
    );

    await redis().zadd(keys.awaitingSelection, { score: Date.now(), member: job.id });
    const due = await withDb((db) =>
      reconcile(db, createRedis(env), { now, selectionTimeoutMs: 5 * 60_000 }),
    );
    expect(due.unchosen).toContain(job.id);
    const view = await jobOf(await send(user.cookie, "GET", `/api/jobs/${job.id}`));
    expect(view.transitions.at(-1)?.reason).toBe("No files were chosen within 5 min; the job was cancelled.");
  });

  it("cancels on the cron's daily sweep a wait the awaiting set lost", async () => {
    const user = await userWithStorage();
    const job = await awaitingJob(user);
    await redis().zrem(keys.awaitingSelection, job.id);
    const tag = crypto.randomUUID();
    const gateKeys = { changes: `test:${tag}:changes`, state: `test:${tag}:state` };
    const now = new Date(Date.now() + 10 * 60_000);
    const pass = (sweepMs: number) =>
      withDb((db) =>
        reconcile(db, createRedis(env), {
          now,
          selectionTimeoutMs: 5 * 60_000,
          gate: true,
          gateKeys,
          sweepMs,
        }),
      );
    // A quiet minute, not the sweep: the set is trusted (a gate with no state would sweep, so give it one).
    await redis().set(
      gateKeys.state,
      JSON.stringify({ seen: 0, at: now.getTime(), quiet: true, sweptAt: now.getTime() }),
    );
    const quiet = await pass(86_400_000);
    expect(quiet.skipped).toBe(true);
    expect(quiet.unchosen).not.toContain(job.id);
    expect((await jobOf(await send(user.cookie, "GET", `/api/jobs/${job.id}`))).state).toBe(
      "awaiting_selection",
    );
    // The sweep asks Postgres itself.
    expect((await pass(0)).unchosen).toContain(job.id);
    expect((await jobOf(await send(user.cookie, "GET", `/api/jobs/${job.id}`))).state).toBe("cancelled");
    await redis().del(gateKeys.changes, gateKeys.state);
  });
});
