// The shared job writes against a real Postgres: creation, the transition
// table, fencing by attempt, owner scoping, and the recorded history.
import { randomBytes } from "node:crypto";
import { asc, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { claimJob, insertJob, markEnqueued, storableText, transitionJob } from "./jobs.ts";
import { migrate } from "./migrate.ts";
import { jobFiles, jobTransitions, storageProfiles, users } from "./schema.ts";
import { dropDatabases, freshDatabase } from "./testing.ts";

let pool: pg.Pool;
let db: ReturnType<typeof drizzle>;

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

async function newJob(selected?: number[]) {
  const { userId, profileId } = await userWithProfile();
  const { job, files } = await insertJob(db, {
    userId,
    storageProfileId: profileId,
    selected,
    torrent: {
      infoHash: randomBytes(20).toString("hex"),
      name: "demo",
      totalSize: 600,
      files: [
        { index: 0, path: "demo/a.bin", size: 100 },
        { index: 1, path: "demo/b.bin", size: 200 },
        { index: 2, path: "demo/c.bin", size: 300 },
      ],
      torrentFile: new Uint8Array([100, 101]),
    },
  });
  return { userId, job, files };
}

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

  it("shares one torrent row between jobs with the same info hash", async () => {
    const { job } = await newJob();
    const { rows: before } = await pool.query<{ info_hash: string }>(
      "select info_hash from torrents where id = $1",
      [job.torrentId],
    );
    const { userId, profileId } = await userWithProfile();
    const again = await insertJob(db, {
      userId,
      storageProfileId: profileId,
      torrent: {
        infoHash: before[0]!.info_hash,
        name: "demo",
        files: null,
        magnetUri: "magnet:?xt=urn:btih:x",
      },
    });
    expect(again.job.torrentId).toBe(job.torrentId);
    const { rows } = await pool.query(
      "select magnet_uri, torrent_file is not null as has_file from torrents where id = $1",
      [job.torrentId],
    );
    // The magnet fills a gap; the .torrent bytes already known are kept.
    expect(rows[0]).toEqual({ magnet_uri: "magnet:?xt=urn:btih:x", has_file: true });
  });

  it("keeps each job's own source beside the shared row (a passkey in one user's tracker URL stays theirs)", async () => {
    const infoHash = randomBytes(20).toString("hex");
    const submit = async (passkey: string) => {
      const { userId, profileId } = await userWithProfile();
      return insertJob(db, {
        userId,
        storageProfileId: profileId,
        torrent: {
          infoHash,
          name: "private",
          files: null,
          magnetUri: `magnet:?xt=urn:btih:${infoHash}&tr=https%3A%2F%2Ftracker.example%2F${passkey}%2Fannounce`,
        },
      });
    };
    const first = await submit("passkey-of-a");
    const second = await submit("passkey-of-b");
    expect(second.job.torrentId).toBe(first.job.torrentId);
    expect(first.job.sourceMagnet).toContain("passkey-of-a");
    expect(second.job.sourceMagnet).toContain("passkey-of-b");
    expect(second.job.sourceMagnet).not.toContain("passkey-of-a");
    expect(second.job.sourceTorrentFile).toBeNull();
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
