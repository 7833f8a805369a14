// The shared job writes against a real Postgres: creation (each job's own
// name and encrypted source beside a shared row of info-dictionary facts), the
// transition table, fencing by attempt, owner scoping, and the recorded history.
import { randomBytes } from "node:crypto";
import { decryptJobSource, parseKeyring, sealedSourceOf } from "@torreclou/contracts";
import { asc, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  admitNext,
  applySelection,
  cancelUnchosen,
  claimJob,
  insertJob,
  markEnqueued,
  retryTransition,
  storableText,
  transitionJob,
} from "./jobs.ts";
import { migrate } from "./migrate.ts";
import { jobFiles, jobs, jobTransitions, storageProfiles, torrents, users } from "./schema.ts";
import { dropDatabases, freshDatabase } from "./testing.ts";

let pool: pg.Pool;
let db: ReturnType<typeof drizzle>;
const keyring = parseKeyring(`k1:${randomBytes(32).toString("base64")}`);

beforeAll(async () => {
  const url = await freshDatabase();
  await migrate(url);
  pool = new pg.Pool({ connectionString: url });
  db = drizzle({ client: pool });
});

afterAll(async () => {
  await pool?.end();
  await dropDatabases();
});

async function userWithProfile(): Promise<{ userId: string; profileId: string }> {
  const [user] = await db
    .insert(users)
    .values({ googleSub: randomBytes(6).toString("hex"), email: "a@example.com" })
    .returning();
  const [profile] = await db
    .insert(storageProfiles)
    .values({
      userId: user!.id,
      kind: "s3",
      name: "bucket",
      config: { region: "us-east-1", bucket: "b" },
      secretCiphertext: "x",
      secretIv: "y",
      secretKeyId: "k1",
    })
    .returning();
  return { userId: user!.id, profileId: profile!.id };
}

const torrentBytes = new Uint8Array([100, 101]);

async function newJob(selected?: number[]) {
  const { userId, profileId } = await userWithProfile();
  const { job, files } = await insertJob(db, keyring, {
    userId,
    storageProfileId: profileId,
    selected,
    name: "demo",
    source: { kind: "torrent", torrent: torrentBytes },
    torrent: {
      infoHash: randomBytes(20).toString("hex"),
      facts: { name: "demo", totalSize: 600, pieceLength: 16384, pieceCount: 1 },
      files: [
        { index: 0, path: "demo/a.bin", size: 100 },
        { index: 1, path: "demo/b.bin", size: 200 },
        { index: 2, path: "demo/c.bin", size: 300 },
      ],
    },
  });
  return { userId, job, files };
}

/** A magnet job of a fresh user for `infoHash`, with a dn and a tracker passkey. */
async function magnetJob(infoHash: string, dn: string, passkey: string) {
  const { userId, profileId } = await userWithProfile();
  const magnet = `magnet:?xt=urn:btih:${infoHash}&dn=${encodeURIComponent(dn)}&tr=https%3A%2F%2Ftracker.example%2F${passkey}%2Fannounce`;
  const { job } = await insertJob(db, keyring, {
    userId,
    storageProfileId: profileId,
    name: dn,
    source: { kind: "magnet", magnet },
    torrent: { infoHash, files: null },
  });
  return { job, magnet };
}

/** Every row of the tables a job touches, as JSON text (bytea comes out as hex). */
async function dump(): Promise<string> {
  const { rows } = await pool.query<{ j: string }>(
    `select row_to_json(t)::text as j from jobs t
     union all select row_to_json(t)::text from torrents t
     union all select row_to_json(t)::text from job_files t
     union all select row_to_json(t)::text from job_transitions t`,
  );
  return rows.map((r) => r.j).join("\n");
}

const hex = (text: string) => Buffer.from(text).toString("hex");

async function history(jobId: string) {
  return db
    .select()
    .from(jobTransitions)
    .where(eq(jobTransitions.jobId, jobId))
    .orderBy(asc(jobTransitions.id));
}

describe("insertJob", () => {
  it("creates a queued job with its files and a first transition", async () => {
    const { job, files } = await newJob([0, 2]);
    expect(job.state).toBe("queued");
    expect(job.enqueuedAt).toBeNull();
    expect(job.bytesTotal).toBe(400);
    expect(files.map((f) => [f.fileIndex, f.selected, f.state])).toEqual([
      [0, true, "pending"],
      [1, false, "skipped"],
      [2, true, "pending"],
    ]);
    const h = await history(job.id);
    expect(h.map((t) => [t.fromState, t.toState, t.cause])).toEqual([[null, "queued", "user"]]);
    await markEnqueued(db, job.id);
  });

  it("keeps only info-dictionary facts on the shared row: no source, no submitter's name", async () => {
    const infoHash = randomBytes(20).toString("hex");
    const first = await magnetJob(infoHash, "SCAM: pay 1 BTC", "passkey-of-a");
    const [bare] = await db.select().from(torrents).where(eq(torrents.id, first.job.torrentId));
    expect(bare).toMatchObject({ infoHash, name: null, totalSize: null, fileCount: null, infoHashV2: null });

    const { userId, profileId } = await userWithProfile();
    const second = await insertJob(db, keyring, {
      userId,
      storageProfileId: profileId,
      name: "Album",
      source: { kind: "torrent", torrent: torrentBytes },
      torrent: {
        infoHash,
        facts: { name: "Album", totalSize: 10, pieceLength: 16384, pieceCount: 1 },
        files: [{ index: 0, path: "Album/a.flac", size: 10 }],
      },
    });
    expect(second.job.torrentId).toBe(first.job.torrentId);
    const [filled] = await db.select().from(torrents).where(eq(torrents.id, first.job.torrentId));
    expect(filled).toMatchObject({ name: "Album", totalSize: 10, pieceLength: 16384, fileCount: 1 });
    // Each job keeps its own name and its own files.
    expect(first.job.name).toBe("SCAM: pay 1 BTC");
    expect(second.job.name).toBe("Album");
    expect(await db.select().from(jobFiles).where(eq(jobFiles.jobId, first.job.id))).toEqual([]);
  });

  it("stores each job's own source encrypted and bound to the job (a passkey stays its user's)", async () => {
    const infoHash = randomBytes(20).toString("hex");
    const a = await magnetJob(infoHash, "a", "passkey-of-a");
    const b = await magnetJob(infoHash, "b", "passkey-of-b");
    expect(b.job.torrentId).toBe(a.job.torrentId);
    expect(a.job.sourceKind).toBe("magnet");
    expect(a.job.sourceMagnet).toBeNull();
    expect(a.job.sourceTorrentFile).toBeNull();
    expect(await decryptJobSource(keyring, sealedSourceOf(a.job)!, a.job.id)).toEqual({
      kind: "magnet",
      magnet: a.magnet,
    });
    expect(await decryptJobSource(keyring, sealedSourceOf(b.job)!, b.job.id)).toEqual({
      kind: "magnet",
      magnet: b.magnet,
    });
    // Nowhere in the database in plain text, in any column.
    const all = await dump();
    for (const secret of ["passkey-of-a", "passkey-of-b", "tracker.example"]) {
      expect(all).not.toContain(secret);
      expect(all).not.toContain(hex(secret));
    }
    // A's ciphertext copied into B's row does not open as B's source.
    await db
      .update(jobs)
      .set({ sourceCiphertext: a.job.sourceCiphertext, sourceIv: a.job.sourceIv })
      .where(eq(jobs.id, b.job.id));
    const [copied] = await db.select().from(jobs).where(eq(jobs.id, b.job.id));
    await expect(decryptJobSource(keyring, sealedSourceOf(copied!)!, b.job.id)).rejects.toThrow(
      /does not decrypt/,
    );
  });

  it("stores a .torrent's bytes encrypted", async () => {
    const { job } = await newJob();
    expect(job.sourceKind).toBe("torrent");
    expect(await decryptJobSource(keyring, sealedSourceOf(job)!, job.id)).toEqual({
      kind: "torrent",
      torrent: torrentBytes,
    });
    const { rows } = await pool.query<{ j: string }>(
      "select row_to_json(t)::text as j from jobs t where id = $1",
      [job.id],
    );
    expect(rows[0]!.j).not.toContain(Buffer.from(torrentBytes).toString("hex"));
  });

  it("refuses a job row with no source, or with plaintext beside a sealed one", async () => {
    const { job } = await newJob();
    await expect(
      pool.query(
        "update jobs set source_ciphertext = null, source_iv = null, source_key_id = null where id = $1",
        [job.id],
      ),
    ).rejects.toMatchObject({ constraint: "jobs_has_source" });
    await expect(
      pool.query("update jobs set source_magnet = 'magnet:?xt=urn:btih:x' where id = $1", [job.id]),
    ).rejects.toMatchObject({ constraint: "jobs_source_plaintext_unsealed_only" });
    await expect(
      pool.query("update jobs set source_iv = null where id = $1", [job.id]),
    ).rejects.toMatchObject({
      constraint: "jobs_source_sealed_whole",
    });
  });
});

describe("transitionJob", () => {
  it("walks the happy path and records every step with its cause", async () => {
    const { job } = await newJob();
    const claimed = await claimJob(db, job.id);
    expect(claimed?.attempt).toBe(1);
    for (const to of ["downloading", "uploading", "completed"] as const) {
      const moved = await transitionJob(db, { jobId: job.id, to, cause: "worker", attempt: 1 });
      expect(moved?.state).toBe(to);
    }
    const done = await transitionJob(db, { jobId: job.id, to: "failed", cause: "worker", attempt: 1 });
    expect(done).toBeUndefined();
    const h = await history(job.id);
    expect(h.map((t) => t.toState)).toEqual(["queued", "downloading", "uploading", "completed"]);
    expect(h.slice(1).every((t) => t.cause === "worker" && t.attempt === 1)).toBe(true);
  });

  it("refuses a move the table does not allow and changes nothing", async () => {
    const { job } = await newJob();
    expect(await transitionJob(db, { jobId: job.id, to: "completed", cause: "worker" })).toBeUndefined();
    expect(await history(job.id)).toHaveLength(1);
  });

  it("fences out a worker whose attempt was superseded", async () => {
    const { job } = await newJob();
    await claimJob(db, job.id); // attempt 1 (will crash)
    await transitionJob(db, { jobId: job.id, to: "downloading", cause: "worker", attempt: 1 });
    const second = await claimJob(db, job.id); // attempt 2 reclaims
    expect(second?.attempt).toBe(2);
    const stale = await transitionJob(db, { jobId: job.id, to: "uploading", cause: "worker", attempt: 1 });
    expect(stale).toBeUndefined();
    const fresh = await transitionJob(db, {
      jobId: job.id,
      to: "queued",
      cause: "worker",
      attempt: 2,
      reason: "reclaimed",
    });
    expect(fresh?.state).toBe("queued");
  });

  it("records a failure reason and clears it on retry", async () => {
    const { job } = await newJob();
    const failed = await transitionJob(db, {
      jobId: job.id,
      to: "failed",
      cause: "worker",
      reason: "bucket not found",
    });
    expect(failed?.failureReason).toBe("bucket not found");
    expect(failed?.finishedAt).toBeInstanceOf(Date);
    const retried = await transitionJob(db, { jobId: job.id, to: "queued", cause: "user" });
    expect(retried?.failureReason).toBeNull();
    expect(retried?.finishedAt).toBeNull();
  });

  it("stores a failure reason that quotes a NUL byte or half a surrogate pair", async () => {
    const { job } = await newJob();
    // Postgres refuses NUL in text: unsanitised, the failure itself could not be recorded.
    const reason = 'The torrent\'s file "a\u0000b\uD800.bin" could not be stored \uDC00.';
    const failed = await transitionJob(db, { jobId: job.id, to: "failed", cause: "worker", reason });
    expect(failed?.state).toBe("failed");
    const stored = 'The torrent\'s file "a\uFFFDb\uFFFD.bin" could not be stored \uFFFD.';
    expect(failed?.failureReason).toBe(stored);
    expect((await history(job.id)).at(-1)?.reason).toBe(stored);
    // Whole pairs (emoji) are kept.
    expect(storableText("ok 🎬")).toBe("ok 🎬");
  });

  it("acts only on the owner's job when scoped to a user", async () => {
    const { job } = await newJob();
    const other = await userWithProfile();
    expect(
      await transitionJob(db, { jobId: job.id, to: "cancelled", cause: "user", userId: other.userId }),
    ).toBeUndefined();
    expect(
      (await transitionJob(db, { jobId: job.id, to: "cancelled", cause: "user", userId: job.userId }))?.state,
    ).toBe("cancelled");
  });

  it("does not claim a terminal job", async () => {
    const { job } = await newJob();
    await transitionJob(db, { jobId: job.id, to: "cancelled", cause: "user" });
    expect(await claimJob(db, job.id)).toBeUndefined();
    const [file] = await db.select().from(jobFiles).where(eq(jobFiles.jobId, job.id)).limit(1);
    expect(file?.state).toBe("pending");
  });
});

describe("admitNext (fair turns)", () => {
  /** `count` more jobs of the same user, oldest first. */
  async function moreJobs(userId: string, profileId: string, count: number) {
    const made = [];
    for (let i = 0; i < count; i++) {
      const { job } = await insertJob(db, keyring, {
        userId,
        storageProfileId: profileId,
        name: `job ${i}`,
        source: { kind: "torrent", torrent: torrentBytes },
        torrent: { infoHash: randomBytes(20).toString("hex"), files: null },
      });
      made.push(job);
    }
    return made;
  }

  it("lets one job in at a time, oldest first, even when many ask at once", async () => {
    const { userId, profileId } = await userWithProfile();
    const held = await moreJobs(userId, profileId, 5);
    // Ten callers at once (workers ending jobs, requests): one job goes in.
    const answers = await Promise.all(Array.from({ length: 10 }, () => admitNext(db, userId)));
    expect(answers.filter(Boolean).map((a) => a!.id)).toEqual([held[0]!.id]);
    // Its turn taken until a worker claims it; then the next.
    expect(await admitNext(db, userId)).toBeUndefined();
    await claimJob(db, held[0]!.id);
    expect((await admitNext(db, userId))?.id).toBe(held[1]!.id);
  });

  it("keeps to the running limit: no more live jobs let in than it allows", async () => {
    const { userId, profileId } = await userWithProfile();
    const held = await moreJobs(userId, profileId, 3);
    expect((await admitNext(db, userId, { runningLimit: 2 }))?.id).toBe(held[0]!.id);
    await claimJob(db, held[0]!.id);
    expect((await admitNext(db, userId))?.id).toBe(held[1]!.id);
    await claimJob(db, held[1]!.id);
    // Two live: the third waits, until one ends.
    expect(await admitNext(db, userId)).toBeUndefined();
    await transitionJob(db, { jobId: held[0]!.id, to: "cancelled", cause: "user" });
    expect((await admitNext(db, userId))?.id).toBe(held[2]!.id);
    const [row] = await db.select().from(users).where(eq(users.id, userId));
    expect(row?.runningLimit).toBe(2);
  });

  it("puts a retried job back in line like a new one", async () => {
    const { userId, profileId } = await userWithProfile();
    const [job] = await moreJobs(userId, profileId, 1);
    await admitNext(db, userId);
    await markEnqueued(db, job!.id);
    await claimJob(db, job!.id);
    await transitionJob(db, { jobId: job!.id, to: "failed", cause: "system" });
    await retryTransition(db, job!.id);
    const [row] = await db.select().from(jobs).where(eq(jobs.id, job!.id));
    expect(row).toMatchObject({ state: "queued", admittedAt: null, claimedAt: null, enqueuedAt: null });
    expect((await admitNext(db, userId))?.id).toBe(job!.id);
  });
});

describe("choosing files after resolving", () => {
  /** A job moved as a worker moves a magnet job that asked to choose: queued → resolving → awaiting_selection. */
  async function awaiting() {
    const made = await newJob();
    const claimed = await claimJob(db, made.job.id);
    for (const to of ["resolving", "awaiting_selection"] as const)
      await transitionJob(db, { jobId: made.job.id, to, cause: "worker", attempt: claimed!.attempt });
    return made;
  }

  it("waits held by no worker, then queues the chosen files and skips the rest", async () => {
    const { job, userId } = await awaiting();
    const [row] = await db.select().from(jobs).where(eq(jobs.id, job.id));
    expect(row?.state).toBe("awaiting_selection");
    expect(row?.selectionSince).not.toBeNull();
    // No worker claims a job that waits for its user.
    expect(await claimJob(db, job.id)).toBeUndefined();
    // Another user's choice changes nothing.
    const other = await userWithProfile();
    expect(await applySelection(db, { jobId: job.id, userId: other.userId, selected: [0] })).toBeUndefined();

    const moved = await applySelection(db, {
      jobId: job.id,
      userId,
      selected: [0, 2],
      targetFolder: "Picked",
    });
    expect(moved?.state).toBe("queued");
    expect(moved?.selectionSince).toBeNull();
    expect(moved?.bytesTotal).toBe(400);
    expect(moved?.targetFolder).toBe("Picked");
    expect(moved?.enqueuedAt).toBeNull();
    const files = await db
      .select()
      .from(jobFiles)
      .where(eq(jobFiles.jobId, job.id))
      .orderBy(asc(jobFiles.fileIndex));
    expect(files.map((f) => [f.selected, f.state])).toEqual([
      [true, "pending"],
      [false, "skipped"],
      [true, "pending"],
    ]);
    expect((await history(job.id)).at(-1)).toMatchObject({
      fromState: "awaiting_selection",
      toState: "queued",
      cause: "user",
      reason: "2 files chosen by the user",
    });
    // Only once: the job no longer waits.
    expect(await applySelection(db, { jobId: job.id, userId, selected: [1] })).toBeUndefined();
  });

  it("cancels only the waits older than the cutoff, recording why", async () => {
    const old = await awaiting();
    const young = await awaiting();
    await db
      .update(jobs)
      .set({ selectionSince: new Date(Date.now() - 2 * 86_400_000) })
      .where(eq(jobs.id, old.job.id));
    const cancelled = await cancelUnchosen(db, new Date(Date.now() - 86_400_000), "No files were chosen.");
    expect(cancelled.map((c) => c.id)).toContain(old.job.id);
    expect(cancelled.map((c) => c.id)).not.toContain(young.job.id);
    const [row] = await db.select().from(jobs).where(eq(jobs.id, old.job.id));
    expect(row).toMatchObject({ state: "cancelled", selectionSince: null });
    expect(row?.finishedAt).not.toBeNull();
    expect((await history(old.job.id)).at(-1)).toMatchObject({
      fromState: "awaiting_selection",
      toState: "cancelled",
      cause: "system",
      reason: "No files were chosen.",
    });
    expect(await cancelUnchosen(db, new Date(Date.now() - 86_400_000), "again")).not.toContainEqual(
      expect.objectContaining({ id: old.job.id }),
    );
  });
});
