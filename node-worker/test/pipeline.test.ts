// The worker end to end with real parts: aria2c seeding over a loopback
// tracker, Postgres, Redis and the local S3. Jobs are created as the edge
// creates them; a worker in this process takes them from the stream.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { HeadObjectCommand, ListPartsCommand } from "@aws-sdk/client-s3";
import { keys, ProgressEvent, progressField } from "@torreclou/contracts";
import { jobs, storageProfiles, torrents } from "@torreclou/db";
import { eq } from "drizzle-orm";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unfinishedUploads } from "../../local/s3.ts";
import type { Worker } from "../src/worker.ts";
import {
  createProfile,
  type Env,
  enqueue,
  expectStoredExactly,
  filesOf,
  jobRow,
  listKeys,
  MiB,
  makeFixture,
  otherUser,
  s3Proxy,
  seedFixtures,
  setupEnv,
  startWorker,
  submitJob,
  transitionsOf,
  waitFor,
  waitForState,
} from "./helpers.ts";

let env: Env;
let worker: Worker;
let profileId: string;
let proxy: Awaited<ReturnType<typeof s3Proxy>>;

const workerSettings = {
  WORKER_CONCURRENCY: "3",
  WORKER_SCRATCH_BUDGET_BYTES: String(48 * MiB),
};

beforeAll(async () => {
  env = await setupEnv(11);
  proxy = await s3Proxy();
  profileId = await createProfile(env, { endpoint: proxy.endpoint });
  ({ worker } = await startWorker(env, workerSettings));
});

afterAll(async () => {
  await worker?.shutdown(5000);
  await proxy?.close();
  await env?.cleanup();
});

async function progressEvents(jobId: string): Promise<ProgressEvent[]> {
  const entries = await env.redis.xrange(keys.progress(jobId), "-", "+");
  return entries.map(([, fields]) =>
    ProgressEvent.parse(JSON.parse(fields[fields.indexOf(progressField) + 1]!)),
  );
}

describe("worker pipeline", () => {
  it("stores a 3-file torrent byte-identical, multipart for the big file, with progress", async () => {
    const made = await makeFixture(env, "three-files", [
      { path: "video/big.bin", size: 17 * MiB + 12_345 },
      { path: "audio/mid.bin", size: 3 * MiB - 777 },
      { path: "notes.txt", content: "hello from the torrent\n" },
    ]);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId });
    const done = await waitForState(env, job.id, ["completed", "failed"]);
    expect(done.failureReason).toBeNull();
    expect(done.state).toBe("completed");
    await expectStoredExactly(env, made, job.id);

    const key = `${job.id}/three-files/video/big.bin`;
    expect(proxy.count("create", key)).toBe(1);
    expect(proxy.count("part", key)).toBe(4); // 17 MiB in 5 MiB parts
    expect(proxy.count("complete", key)).toBe(1);
    expect(proxy.count("put", `${job.id}/three-files/notes.txt`)).toBe(1);

    const files = await filesOf(env, job.id);
    expect(files.every((f) => f.state === "uploaded" && f.cloudId)).toBe(true);
    // Each file's checksum is the ETag the provider gave the stored object (S3's
    // multipart ETag names the part count).
    for (const f of files) {
      const head = await env.s3.send(new HeadObjectCommand({ Bucket: env.bucket, Key: f.cloudId! }));
      expect(f.checksum).toBe(`etag:${head.ETag?.replace(/"/g, "")}`);
    }
    expect(files.find((f) => f.path.endsWith("video/big.bin"))?.checksum).toMatch(/^etag:[0-9a-f]{32}-4$/);
    expect(files.every((f) => f.uploadSession === null)).toBe(true);
    expect(done.bytesUploaded).toBe(done.bytesTotal);

    const states = (await transitionsOf(env, job.id)).map((t) => t.toState);
    expect(states).toEqual(["queued", "downloading", "uploading", "completed"]);

    const events = await progressEvents(job.id);
    expect(events.at(-1)?.phase).toBe("completed");
    expect(events.at(-1)?.bytes.uploaded).toBe(done.bytesTotal);
    expect(events.map((e) => e.phase)).toContain("downloading");
    const snapshot = ProgressEvent.parse(JSON.parse((await env.redis.get(keys.snapshot(job.id)))!));
    expect(snapshot.phase).toBe("completed");
    expect(existsSync(join(env.scratchDir, job.id))).toBe(false);
  });

  it("stores a 200-file torrent byte-identical", async () => {
    const made = await makeFixture(
      env,
      "many-files",
      Array.from({ length: 200 }, (_, i) => ({ path: `dir${i % 7}/file-${i}.dat`, size: 1000 + i * 37 })),
    );
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId, targetFolder: "Many" });
    const done = await waitForState(env, job.id, ["completed", "failed"]);
    expect(done.failureReason).toBeNull();
    const stored = await expectStoredExactly(env, made, "Many");
    expect(stored).toHaveLength(200);
  });

  it("stores only the chosen files of a selective job", async () => {
    const made = await makeFixture(env, "selective", [
      { path: "a.bin", size: 300_001 },
      { path: "b.bin", size: 2 * MiB + 5 },
      { path: "c.bin", size: 123_457 },
      { path: "d.bin", size: 1 * MiB },
    ]);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId, selected: [1, 3] });
    const done = await waitForState(env, job.id, ["completed", "failed"]);
    expect(done.failureReason).toBeNull();
    await expectStoredExactly(env, made, job.id, [1, 3]);
    const files = await filesOf(env, job.id);
    expect(files.map((f) => f.state)).toEqual(["skipped", "uploaded", "skipped", "uploaded"]);
  });

  it("resolves a magnet, records its files, and stores them in a folder named after the torrent", async () => {
    const made = await makeFixture(env, "magnet-job", [
      { path: "one.bin", size: 700_000 },
      { path: "two/three.bin", size: 1_234_567 },
    ]);
    const single = await makeFixture(env, "magnet-single.iso", [
      { path: "magnet-single.iso", size: 300_000 },
    ]);
    await seedFixtures(env, [made, single]);
    const job = await submitJob(env, { made, profileId, magnet: true });
    const one = await submitJob(env, { made: single, profileId, magnet: true });
    expect(await filesOf(env, job.id)).toHaveLength(0);
    const done = await waitForState(env, job.id, ["completed", "failed"]);
    expect(done.failureReason).toBeNull();
    // No folder asked for: a multi-file torrent lands in its own top folder, a one-file torrent in one named after it.
    expect(done.targetFolder).toBe("");
    await expectStoredExactly(env, made, "");
    const oneDone = await waitForState(env, one.id, ["completed", "failed"]);
    expect(oneDone.failureReason).toBeNull();
    expect(oneDone.targetFolder).toBe("magnet-single");
    await expectStoredExactly(env, single, "magnet-single");
    const files = await filesOf(env, job.id);
    expect(files.map((f) => [f.path, f.size])).toEqual([
      ["magnet-job/one.bin", 700_000],
      ["magnet-job/two/three.bin", 1_234_567],
    ]);
    expect(done.bytesTotal).toBe(700_000 + 1_234_567);
    const states = (await transitionsOf(env, job.id)).map((t) => t.toState);
    expect(states).toEqual(["queued", "resolving", "downloading", "uploading", "completed"]);
  });

  it("cancels within seconds: aborts the multipart upload and deletes scratch", async () => {
    const made = await makeFixture(env, "to-cancel", [{ path: "to-cancel", size: 24 * MiB }]);
    await seedFixtures(env, [made], "2M");
    const job = await submitJob(env, { made, profileId });
    const key = `${job.id}/to-cancel`;
    // Wait until the upload has started (a part is journaled).
    await waitFor("a part to be uploaded", async () => proxy.count("part", key) > 0, 30_000);
    const session = await waitFor(
      "upload session saved",
      async () => (await filesOf(env, job.id))[0]?.uploadSession ?? undefined,
    );
    const asked = Date.now();
    await env.redis.set(keys.cancel(job.id), "1");
    const done = await waitForState(env, job.id, ["cancelled", "failed", "completed"], 15_000);
    expect(done.state).toBe("cancelled");
    expect(Date.now() - asked).toBeLessThan(5000);
    await waitFor("scratch removed", async () => !existsSync(join(env.scratchDir, job.id)), 5000);
    expect(proxy.count("abort", key)).toBe(1);
    // The server no longer has the upload, nor any part of it.
    await expect(
      env.s3.send(new ListPartsCommand({ Bucket: env.bucket, Key: key, UploadId: session })),
    ).rejects.toMatchObject({ name: "NoSuchUpload" });
    // Nor any other upload of the job, as an operator listing the bucket would see.
    expect(await unfinishedUploads(env.s3, env.bucket, `${job.id}/`)).toEqual([]);
    const [file] = await filesOf(env, job.id);
    expect(file?.uploadSession).toBeNull();
    expect(await listKeys(env.s3, env.bucket, `${job.id}/`)).toEqual([]);
    const events = await waitFor("final cancelled event", async () => {
      const all = await progressEvents(job.id);
      return all.at(-1)?.phase === "cancelled" ? all : undefined;
    });
    expect(events.at(-1)?.phase).toBe("cancelled");
  });
});

describe("worker failures", () => {
  it("fails with a readable reason when the access key is rejected", async () => {
    const made = await makeFixture(env, "bad-creds", [{ path: "bad-creds", content: "x" }]);
    const badProfile = await createProfile(env, { accessKeyId: "NOT-A-KEY" });
    const job = await submitJob(env, { made, profileId: badProfile });
    const done = await waitForState(env, job.id, ["failed", "completed"]);
    expect(done.failureReason).toMatch(/^The storage provider rejected the access key/);
  });

  it("fails when the bucket does not exist", async () => {
    const made = await makeFixture(env, "no-bucket", [{ path: "no-bucket", content: "y" }]);
    const p = await createProfile(env, { bucket: "no-such-bucket-here" });
    const job = await submitJob(env, { made, profileId: p });
    const done = await waitForState(env, job.id, ["failed", "completed"]);
    expect(done.failureReason).toMatch(/bucket "no-such-bucket-here" does not exist/);
  });

  it("fails when the storage profile was deleted", async () => {
    const made = await makeFixture(env, "no-profile", [{ path: "no-profile", content: "z" }]);
    const p = await createProfile(env);
    await worker.shutdown(3000);
    const job = await submitJob(env, { made, profileId: p });
    await env.db.delete(storageProfiles).where(eq(storageProfiles.id, p));
    ({ worker } = await startWorker(env, {
      WORKER_CONCURRENCY: "3",
      WORKER_SCRATCH_BUDGET_BYTES: String(48 * MiB),
    }));
    const done = await waitForState(env, job.id, ["failed", "completed"]);
    expect(done.failureReason).toMatch(/storage profile for this job was deleted/);
  });

  it("fails when no peer shows up", async () => {
    const made = await makeFixture(env, "no-peers", [{ path: "no-peers", content: "nobody seeds this" }]);
    const job = await submitJob(env, { made, profileId });
    const done = await waitForState(env, job.id, ["failed", "completed"], 20_000);
    expect(done.failureReason).toMatch(/No peers are sharing this torrent/);
  });
});

describe("job sources", () => {
  const magnetOf = (infoHash: string, dn: string | undefined, announce: string) =>
    `magnet:?xt=urn:btih:${infoHash}${dn === undefined ? "" : `&dn=${encodeURIComponent(dn)}`}&tr=${encodeURIComponent(announce)}`;

  it("resolves a magnet job's metadata itself, named by its own dn, when another user's .torrent job has the same hash", async () => {
    const made = await makeFixture(env, "shared-hash", [
      { path: "a.bin", size: 300_000 },
      { path: "b/c.bin", size: 200_000 },
    ]);
    await seedFixtures(env, [made]);
    const a = await otherUser(env, { endpoint: proxy.endpoint });
    const first = await submitJob(env, { made, profileId: a.profileId, userId: a.userId });
    expect((await waitForState(env, first.id, ["completed", "failed"])).state).toBe("completed");

    const named = await submitJob(env, {
      made,
      profileId,
      magnet: true,
      magnetUri: magnetOf(made.infoHash, "my own name", env.tracker.announceUrl),
      targetFolder: "shared-hash-named",
    });
    const bare = await submitJob(env, {
      made,
      profileId,
      magnet: true,
      magnetUri: magnetOf(made.infoHash, undefined, env.tracker.announceUrl),
      targetFolder: "shared-hash-bare",
    });
    for (const job of [named, bare]) {
      const done = await waitForState(env, job.id, ["completed", "failed"]);
      expect(done.failureReason).toBeNull();
      await expectStoredExactly(env, made, job.targetFolder ?? job.id);
      // Its own resolution, not the other job's files.
      const states = (await transitionsOf(env, job.id)).map((t) => t.toState);
      expect(states).toEqual(["queued", "resolving", "downloading", "uploading", "completed"]);
    }
    expect((await jobRow(env, first.id)).name).toBe("shared-hash");
    expect((await jobRow(env, named.id)).name).toBe("my own name");
    // A magnet without a dn is named by the info dictionary its own worker fetched.
    expect((await jobRow(env, bare.id)).name).toBe("shared-hash");
    const [shared] = await env.db.select().from(torrents).where(eq(torrents.infoHash, made.infoHash));
    expect(shared).toMatchObject({ name: "shared-hash", fileCount: 2, totalSize: 500_000 });
  });

  it("fails a job whose source ciphertext was copied from another job's row, storing nothing", async () => {
    const made = await makeFixture(env, "copied-source", [{ path: "copied-source", size: 100_000 }]);
    await seedFixtures(env, [made]);
    const donor = await submitJob(env, { made, profileId, enqueue: false });
    const victim = await submitJob(env, { made, profileId, enqueue: false });
    await env.db
      .update(jobs)
      .set({
        sourceKind: donor.sourceKind,
        sourceCiphertext: donor.sourceCiphertext,
        sourceIv: donor.sourceIv,
        sourceKeyId: donor.sourceKeyId,
      })
      .where(eq(jobs.id, victim.id));
    await enqueue(env, victim);
    const done = await waitForState(env, victim.id, ["failed", "completed"]);
    expect(done.state).toBe("failed");
    expect(done.failureReason).toMatch(
      /^The job's \.torrent file or magnet link could not be read: the stored secret does not decrypt/,
    );
    expect(await listKeys(env.s3, env.bucket, `${victim.id}/`)).toEqual([]);
  });

  it("keeps a tracker passkey out of the worker's logs and the failure reason", async () => {
    await worker.shutdown(3000);
    const lines: string[] = [];
    const log = pino({ level: "debug" }, { write: (line: string) => void lines.push(line) });
    ({ worker } = await startWorker(env, workerSettings, log));
    try {
      const made = await makeFixture(env, "passkey-job", [
        { path: "passkey-job", content: "nobody seeds this" },
      ]);
      const passkey = `pk${randomBytes(16).toString("hex")}`;
      // The local tracker refuses this path and echoes it back, as a tracker error may.
      const announce = env.tracker.announceUrl.replace(/\/announce$/, `/${passkey}/announce`);
      const job = await submitJob(env, {
        made,
        profileId,
        magnet: true,
        magnetUri: magnetOf(made.infoHash, "passkey-job", announce),
      });
      await waitFor("the tracker's refusal in the log", async () =>
        lines.some((line) => line.includes("invalid action in HTTP request")),
      );
      const done = await waitForState(env, job.id, ["failed", "completed"]);
      expect(done.failureReason).toMatch(/No peers shared this magnet's metadata/);
      const all = lines.join("");
      expect(all).toContain(job.id);
      expect(all).not.toContain(passkey);
      expect(all).not.toContain("magnet:?xt");
    } finally {
      await worker.shutdown(3000);
      ({ worker } = await startWorker(env, workerSettings));
    }
  });
});
