// A magnet job's metadata handed in by its submitter's browser: accepted only
// for the owner's magnet job that waits to choose its files and whose metadata
// is unknown, only when it hashes to the job's info hash and passes the
// parser; a worker still resolving the job is replaced (a new attempt, its
// old one flagged to stop). Every refusal changes nothing.
import { keys } from "@torreclou/contracts";
import { jobFiles, jobs } from "@torreclou/db";
import { claimJob, transitionJob } from "@torreclou/db/jobs";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { redis, withDb } from "../../test/fixtures/db.ts";
import { type JobView, send, type TestUser, userWithStorage } from "../../test/fixtures/jobs.ts";
import { bencode, type FixtureTorrent, makeTorrent, toBase64 } from "../../test/fixtures/torrents.ts";

interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}
type Selectable = JobView & { selectionDeadline: string | null };

const errorOf = async (response: Response) => ((await response.json()) as ErrorBody).error;
const jobOf = async (response: Response) => ((await response.json()) as { job: Selectable }).job;

async function sha1Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-1", bytes.slice()));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A magnet job for `infoHash`, submitted as the web app does. */
async function magnetJob(
  user: TestUser,
  infoHash: string,
  extra: string,
  chooseFiles = true,
): Promise<Selectable> {
  const created = await send(user.cookie, "POST", "/api/jobs", {
    magnet: `magnet:?xt=urn:btih:${infoHash}&dn=Album${extra}`,
    ...(chooseFiles ? { chooseFiles: true } : {}),
  });
  expect(created.status).toBe(201);
  return jobOf(created);
}

const handIn = (user: TestUser, jobId: string, info: Uint8Array | string) =>
  send(user.cookie, "POST", `/api/jobs/${jobId}/metadata`, {
    infoDictionary: typeof info === "string" ? info : toBase64(info),
  });

async function rowOf(jobId: string) {
  return withDb(async (db) => {
    const [job] = await db.select().from(jobs).where(eq(jobs.id, jobId));
    const files = await db.select().from(jobFiles).where(eq(jobFiles.jobId, jobId));
    return { job: job!, files };
  });
}

/** Nothing of the job moved: still queued (or as it was), no files, no metadata. */
async function expectUntouched(jobId: string, state = "queued"): Promise<void> {
  const { job, files } = await rowOf(jobId);
  expect(job.state).toBe(state);
  expect(job.infoDictionary).toBeNull();
  expect(files).toHaveLength(0);
}

const infoOf = (torrent: FixtureTorrent) => bencode(torrent.info);

describe("POST /api/jobs/{id}/metadata", () => {
  it("takes the browser's info dictionary for a queued job: its files wait for a choice", async () => {
    const user = await userWithStorage();
    const torrent = await makeTorrent({ name: "Album" });
    const job = await magnetJob(user, torrent.infoHash, "&so=0,2");
    const response = await handIn(user, job.id, infoOf(torrent));
    expect(response.status).toBe(200);
    const moved = await jobOf(response);
    expect(moved.state).toBe("awaiting_selection");
    expect(moved.selectionDeadline).not.toBeNull();
    // so= pre-selects, exactly as when a worker resolves it;
    expect(moved.files.map((f) => [f.index, f.path, f.size, f.selected])).toEqual([
      [0, "Album/disc 1/track 01.flac", 40_000, true],
      [1, "Album/disc 1/track 02.flac", 25_000, false],
      [2, "Album/cover.jpg", 3_000, true],
    ]);
    // "": a multi-file torrent's files keep their own top folder, as from a worker.
    expect(moved.targetFolder).toBe("");
    expect(moved.transitions.at(-1)).toMatchObject({
      from: "queued",
      to: "awaiting_selection",
      cause: "user",
      reason: "the metadata was found by the submitter's browser",
    });
    const { job: row } = await rowOf(job.id);
    expect(new Uint8Array(row.infoDictionary!)).toEqual(infoOf(torrent));
    expect(await redis().zscore(keys.awaitingSelection, job.id)).not.toBeNull();
    // No worker was running it: nothing to stop.
    expect(await redis().get(keys.cancel(job.id))).toBeNull();

    // The choice then goes as for a worker-resolved magnet.
    const chosen = await send(user.cookie, "POST", `/api/jobs/${job.id}/selection`, { files: [1] });
    expect(chosen.status).toBe(200);
    expect((await jobOf(chosen)).state).toBe("queued");
    // Once known, it is never taken again.
    const again = await handIn(user, job.id, infoOf(torrent));
    expect(again.status).toBe(409);
    expect(await errorOf(again)).toMatchObject({ code: "metadata_not_needed" });
  });

  it("replaces a worker still resolving the job: a new attempt, the old one flagged to stop", async () => {
    const user = await userWithStorage();
    const torrent = await makeTorrent({ name: "Album" });
    const job = await magnetJob(user, torrent.infoHash, "");
    const resolving = await withDb(async (db) => {
      const claimed = await claimJob(db, job.id);
      await transitionJob(db, { jobId: job.id, to: "resolving", cause: "worker", attempt: claimed!.attempt });
      return claimed!.attempt;
    });
    const response = await handIn(user, job.id, infoOf(torrent));
    expect(response.status).toBe(200);
    const moved = await jobOf(response);
    expect(moved).toMatchObject({ state: "awaiting_selection", attempt: resolving + 1 });
    expect(Number(await redis().get(keys.cancel(job.id)))).toBe(resolving);
    // The worker's own writes, fenced by its attempt, land nowhere.
    const late = await withDb((db) =>
      transitionJob(db, { jobId: job.id, to: "failed", cause: "worker", attempt: resolving, reason: "late" }),
    );
    expect(late).toBeUndefined();
    expect((await rowOf(job.id)).job.state).toBe("awaiting_selection");
  });

  it("refuses an info dictionary of another torrent, naming both hashes, and changes nothing", async () => {
    const user = await userWithStorage();
    const torrent = await makeTorrent({ name: "Album" });
    const other = await makeTorrent({ name: "Other" });
    const job = await magnetJob(user, torrent.infoHash, "");
    const response = await handIn(user, job.id, infoOf(other));
    expect(response.status).toBe(422);
    const error = await errorOf(response);
    expect(error.code).toBe("info_hash_mismatch");
    expect(error.message).toContain(torrent.infoHash);
    expect(error.message).toContain(other.infoHash);
    await expectUntouched(job.id);
  });

  it("runs the .torrent parser: an unsafe path is refused even with the right hash", async () => {
    const user = await userWithStorage();
    const info = bencode({
      name: "Album",
      "piece length": 16_384,
      pieces: new Uint8Array(20),
      files: [{ length: 10, path: ["..", "escape.txt"] }],
    });
    const job = await magnetJob(user, await sha1Hex(info), "");
    const response = await handIn(user, job.id, info);
    expect(response.status).toBe(422);
    const error = await errorOf(response);
    expect(error.code).toBe("invalid_torrent");
    expect(error.details?.problem).toBe("unsafe_path");
    await expectUntouched(job.id);
  });

  it("refuses a so= naming a file the torrent does not have", async () => {
    const user = await userWithStorage();
    const torrent = await makeTorrent({ name: "Album" });
    const job = await magnetJob(user, torrent.infoHash, "&so=7");
    const response = await handIn(user, job.id, infoOf(torrent));
    expect(response.status).toBe(422);
    expect((await errorOf(response)).message).toMatch(
      /selects file 7 \(so=\), but the torrent has no such file/,
    );
    await expectUntouched(job.id);
  });

  it("refuses bodies that are not an info dictionary in base64, or too large", async () => {
    const user = await userWithStorage();
    const torrent = await makeTorrent({ name: "Album" });
    const job = await magnetJob(user, torrent.infoHash, "");
    for (const bad of ["not base64!", "a"]) {
      const response = await handIn(user, job.id, bad);
      expect(response.status, bad).toBe(400);
      expect((await errorOf(response)).message).toMatch(
        /infoDictionary: must be the info dictionary's bytes/,
      );
    }
    const notBencode = await handIn(user, job.id, new TextEncoder().encode("hello"));
    expect(notBencode.status).toBe(422);
    const huge = await handIn(user, job.id, new Uint8Array(9 * 1024 * 1024));
    expect(huge.status).toBe(413);
    await expectUntouched(job.id);
  });

  it("is for the owner's magnet jobs that choose their files and still need metadata", async () => {
    const owner = await userWithStorage();
    const stranger = await userWithStorage();
    const torrent = await makeTorrent({ name: "Album" });
    const job = await magnetJob(owner, torrent.infoHash, "");
    const theirs = await handIn(stranger, job.id, infoOf(torrent));
    expect(theirs.status).toBe(404);
    expect(await errorOf(theirs)).toMatchObject({ code: "job_not_found" });
    await expectUntouched(job.id);

    // Downloading everything: the fleet needs peers anyway, and no choice waits for it.
    const everything = await magnetJob(owner, torrent.infoHash, "", false);
    const refused = await handIn(owner, everything.id, infoOf(torrent));
    expect(refused.status).toBe(409);
    await expectUntouched(everything.id);

    // A .torrent job has its metadata.
    const uploaded = await send(owner.cookie, "POST", "/api/jobs", { torrent: toBase64(torrent.bytes) });
    expect(uploaded.status).toBe(201);
    const known = await handIn(owner, (await jobOf(uploaded)).id, infoOf(torrent));
    expect(known.status).toBe(409);
    expect(await errorOf(known)).toMatchObject({ code: "metadata_not_needed" });

    // A cancelled job no longer wants it.
    const cancelled = await send(owner.cookie, "POST", `/api/jobs/${job.id}/cancel`);
    expect(cancelled.status).toBe(200);
    const late = await handIn(owner, job.id, infoOf(torrent));
    expect(late.status).toBe(409);
    expect((await errorOf(late)).message).toMatch(/it is cancelled/);
    await expectUntouched(job.id, "cancelled");
  });
});
