// Transfers in the browser, driven by fetch as a tab drives them: the edge in
// workerd, real Postgres and Redis, the local S3 server (SigV4, presigned
// URLs, CORS) and the Drive double. The bytes go from the test straight to the
// storage, never through the edge.
import { env } from "cloudflare:workers";
import {
  columnsOf,
  encryptSecret,
  type FileUpload,
  keys,
  type PartUrl,
  parseKeyring,
  type TransferPlan,
} from "@torreclou/contracts";
import { jobFiles, jobs, storageProfiles } from "@torreclou/db";
import { admitNext } from "@torreclou/db/jobs";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { redis, withDb } from "../../test/fixtures/db.ts";
import { type JobView, messagesFor, send } from "../../test/fixtures/jobs.ts";
import { makeTorrent, toBase64 } from "../../test/fixtures/torrents.ts";
import { call, fromWebApp, signIn, webOrigin } from "../../test/helpers.ts";
import { reconcile } from "../queue/reconcile.ts";
import { createRedis } from "../redis/index.ts";
import { presignUploadPart } from "../storage/multipart.ts";
import { pausedReason } from "./transfer.ts";

const MiB = 1024 * 1024;

interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}
type View = Omit<JobView, "files"> & {
  runner: string;
  files: (JobView["files"][number] & { cloudUrl: string | null })[];
};

const errorOf = async (response: Response) => ((await response.json()) as ErrorBody).error;

interface User {
  cookie: string;
  userId: string;
}

/** A user whose default storage is a fresh prefix of the local S3 bucket, saved through the real check. */
async function s3User(): Promise<User & { browserTransfer: { ready: boolean; rule: unknown } }> {
  const { cookie, userId } = await signIn();
  const response = await send(cookie, "POST", "/api/storage", {
    kind: "s3",
    name: "local",
    endpoint: env.S3_ENDPOINT,
    region: env.S3_REGION,
    bucket: env.S3_BUCKET,
    prefix: `transfer/${crypto.randomUUID()}`,
    forcePathStyle: true,
    accessKeyId: env.S3_ACCESS_KEY_ID,
    secretAccessKey: env.S3_SECRET_ACCESS_KEY,
  });
  expect(response.status, await response.clone().text()).toBe(201);
  const body = (await response.json()) as { browserTransfer: { ready: boolean; rule: unknown } };
  return { cookie, userId, browserTransfer: body.browserTransfer };
}

/** A user whose default storage is an account of the Drive double (its grant sealed as the connect flow seals it). */
async function driveUser(): Promise<User & { refreshToken: string }> {
  const { cookie, userId } = await signIn();
  const minted = await fetch(`${env.DRIVE_API_BASE_URL}/__accounts`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: `drive-${crypto.randomUUID().slice(0, 8)}@example.com` }),
  });
  const { refreshToken } = (await minted.json()) as { refreshToken: string };
  const id = crypto.randomUUID();
  const sealed = await encryptSecret(parseKeyring(env.CREDENTIALS_KEYS), { refreshToken }, id);
  await withDb((db) =>
    db.insert(storageProfiles).values({
      id,
      userId,
      kind: "gdrive",
      name: "drive",
      isDefault: true,
      config: {},
      ...columnsOf(sealed),
    }),
  );
  return { cookie, userId, refreshToken };
}

/** Deterministic bytes of a file. */
function bytesOf(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (seed * 31 + i * 7) % 256;
  return out;
}

const FILES = [
  { path: "big.bin", size: 8 * MiB + 1000 },
  { path: "notes.txt", size: 3000 },
  { path: "empty.nfo", size: 0 },
];

async function browserJob(user: User, files = FILES): Promise<View> {
  const torrent = await makeTorrent({ files });
  const response = await send(user.cookie, "POST", "/api/jobs", {
    torrent: toBase64(torrent.bytes),
    runner: "browser",
  });
  expect(response.status, await response.clone().text()).toBe(201);
  return ((await response.json()) as { job: View }).job;
}

/** A browser tab: its user's session and the calls of the contract. */
function tab(user: User, jobId: string) {
  const base = `/api/jobs/${jobId}/transfer`;
  const post = (path: string, body?: unknown) => send(user.cookie, "POST", `${base}${path}`, body);
  return {
    take: () => post(""),
    open: (index: number, attempt: number) => post(`/files/${index}/upload`, { attempt }),
    partUrl: (index: number, n: number, attempt: number) => post(`/files/${index}/parts/${n}`, { attempt }),
    record: (index: number, n: number, body: { attempt: number; etag: string; size: number }) =>
      send(user.cookie, "PUT", `${base}/files/${index}/parts/${n}`, body),
    complete: (index: number, body: { attempt: number; driveFileId?: string }) =>
      post(`/files/${index}/complete`, body),
    progress: (body: unknown) => post("/progress", body),
    finish: (attempt: number) => post("/finish", { attempt }),
    pause: (attempt: number) => post("/pause", { attempt }),
    fail: (attempt: number, reason: string) => post("/fail", { attempt, reason }),
    fleet: () => post("/fleet"),
  };
}
type Tab = ReturnType<typeof tab>;

async function ok<T>(response: Promise<Response>, status = 200): Promise<T> {
  const r = await response;
  expect(r.status, await r.clone().text()).toBe(status);
  return (status === 204 ? undefined : await r.json()) as T;
}

/** Sends one S3 part as a tab does: a presigned URL, the PUT from the web app's origin, then the record. */
async function sendPart(t: Tab, attempt: number, index: number, n: number, body: Uint8Array): Promise<void> {
  const { url, expiresAt } = await ok<PartUrl>(t.partUrl(index, n, attempt));
  expect(expiresAt).toBeGreaterThan(Date.now());
  const put = await fetch(url, { method: "PUT", body, headers: { origin: webOrigin } });
  expect(put.status, await put.clone().text()).toBe(200);
  // The bucket's CORS rule lets the page read the ETag it must record.
  expect(put.headers.get("access-control-allow-origin")).toMatch(/^(\*|http:\/\/127\.0\.0\.1:5173)$/);
  expect(put.headers.get("access-control-expose-headers") ?? "").toMatch(/etag/i);
  const etag = put.headers.get("etag")!;
  await ok(t.record(index, n, { attempt, etag, size: body.length }), 204);
}

/** Uploads a whole file to S3 in parts, skipping parts already stored. */
async function uploadS3File(t: Tab, attempt: number, index: number, data: Uint8Array): Promise<void> {
  const upload = await ok<FileUpload>(t.open(index, attempt));
  if (upload.kind !== "s3") throw new Error("not an S3 upload");
  const stored = new Set(upload.stored.map((p) => p.partNumber));
  for (let n = 1; (n - 1) * upload.partSize < data.length; n++) {
    if (stored.has(n)) continue;
    await sendPart(t, attempt, index, n, data.subarray((n - 1) * upload.partSize, n * upload.partSize));
  }
  await ok(t.complete(index, { attempt }), 204);
}

const view = async (user: User, id: string) =>
  (await ok<{ job: View }>(send(user.cookie, "GET", `/api/jobs/${id}`))).job;

describe("a browser transfer into S3", () => {
  it("runs the whole job from a tab: the bytes go to the bucket, the job completes as a fleet job does", async () => {
    const user = await s3User();
    expect(user.browserTransfer.ready).toBe(true);
    const job = await browserJob(user);
    expect(job).toMatchObject({ runner: "browser", state: "queued" });
    const t = tab(user, job.id);
    const plan = await ok<TransferPlan>(t.take());
    expect(plan.destination).toBe("s3");
    expect(plan.source.kind).toBe("torrent");
    expect(plan.files.map((f) => [f.index, f.path.split("/").at(-1), f.size, f.state])).toEqual([
      [0, "big.bin", 8 * MiB + 1000, "pending"],
      [1, "notes.txt", 3000, "pending"],
      [2, "empty.nfo", 0, "pending"],
    ]);
    const attempt = plan.attempt;
    expect((await view(user, job.id)).state).toBe("downloading");

    // Progress: the first post is written, one right after it is dropped; uploading moves the job.
    const report = (phase: "downloading" | "uploading", uploaded: number) => ({
      attempt,
      phase,
      bytes: { downloaded: 5000, uploaded },
      rates: { down: 1000, up: 500 },
      peers: 2,
      files: [{ index: 1, downloaded: 3000, uploaded }],
    });
    expect(await ok(t.progress(report("downloading", 0)), 202)).toEqual({ recorded: true });
    expect(await ok(t.progress(report("downloading", 0)), 202)).toEqual({ recorded: false });
    expect(await ok(t.progress(report("uploading", 10)), 202)).toEqual({ recorded: true });
    expect((await view(user, job.id)).state).toBe("uploading");
    expect(await redis().get(keys.snapshot(job.id))).toMatchObject({
      jobId: job.id,
      attempt,
      phase: "uploading",
    });

    const data = FILES.map((f, i) => bytesOf(f.size, i + 1));
    for (const [index, bytes] of data.entries()) {
      if (bytes.length === 0) {
        // Stored by the edge when opened: no parts.
        expect(await ok<FileUpload>(t.open(index, attempt))).toMatchObject({ kind: "s3", stored: [] });
        await ok(t.complete(index, { attempt }), 204);
      } else {
        await uploadS3File(t, attempt, index, bytes);
      }
    }
    const done = await ok<{ job: View }>(t.finish(attempt));
    expect(done.job.state).toBe("completed");
    expect(done.job.transitions.map((tr) => [tr.to, tr.cause])).toEqual([
      ["queued", "user"],
      ["downloading", "browser"],
      ["uploading", "browser"],
      ["completed", "browser"],
    ]);
    for (const [index, file] of done.job.files.entries()) {
      expect(file.state).toBe("uploaded");
      const stored = await fetch(file.cloudUrl!);
      expect(new Uint8Array(await stored.arrayBuffer())).toEqual(data[index]);
    }
    // Never in the workers' stream.
    expect(await messagesFor(job.id)).toEqual([]);
  });

  it("presigns a part for exactly one upload, key and time: an expired or altered URL is refused by S3", async () => {
    const user = await s3User();
    const first = await browserJob(user);
    const second = await browserJob(user);
    const t1 = tab(user, first.id);
    const t2 = tab(user, second.id);
    const a1 = (await ok<TransferPlan>(t1.take())).attempt;
    const a2 = (await ok<TransferPlan>(t2.take())).attempt;
    await ok(t1.open(0, a1));
    await ok(t2.open(0, a2));
    const part = bytesOf(8 * MiB, 9);

    const { url } = await ok<PartUrl>(t1.partUrl(0, 1, a1));
    const signed = new URL(url);

    // The same URL signed an hour ago with the 15 minutes of partUrlSeconds: past its time.
    const key = decodeURIComponent(signed.pathname.split("/").slice(2).join("/"));
    const expired = await presignUploadPart(
      {
        endpoint: env.S3_ENDPOINT,
        region: env.S3_REGION,
        bucket: env.S3_BUCKET,
        prefix: "",
        forcePathStyle: true,
      },
      { accessKeyId: env.S3_ACCESS_KEY_ID, secretAccessKey: env.S3_SECRET_ACCESS_KEY },
      key,
      signed.searchParams.get("uploadId")!,
      1,
      { expiresSeconds: 15 * 60, now: new Date(Date.now() - 3600_000) },
    );
    const late = await fetch(expired, { method: "PUT", body: part });
    expect(late.status).toBe(403);
    const lateText = await late.text();
    expect(lateText).toContain("<Code>AccessDenied</Code>");
    expect(lateText).toContain("Request has expired");

    // Another key in the bucket, or the other job's file: the signature does not cover it.
    const otherKey = new URL(url);
    otherKey.pathname = `${otherKey.pathname}.elsewhere`;
    const { url: secondUrl } = await ok<PartUrl>(t2.partUrl(0, 1, a2));
    const otherJob = new URL(url);
    otherJob.pathname = new URL(secondUrl).pathname;
    otherJob.searchParams.set("uploadId", new URL(secondUrl).searchParams.get("uploadId")!);
    for (const altered of [otherKey, otherJob]) {
      const refused = await fetch(altered, { method: "PUT", body: part });
      expect(refused.status).toBe(403);
      expect(await refused.text()).toContain("SignatureDoesNotMatch");
    }
    // The URL as given works.
    expect((await fetch(url, { method: "PUT", body: part })).status).toBe(200);
  });

  it("refuses what does not fit: another user's job, an old attempt, a part outside the layout, a file not stored", async () => {
    const user = await s3User();
    const job = await browserJob(user);
    const t = tab(user, job.id);
    const first = (await ok<TransferPlan>(t.take())).attempt;

    // Someone else: the job does not exist for them, whatever the call.
    const other = await s3User();
    const theirs = tab(other, job.id);
    for (const response of [
      await theirs.take(),
      await theirs.open(0, first),
      await theirs.partUrl(0, 1, first),
      await theirs.progress({
        attempt: first,
        phase: "downloading",
        bytes: { downloaded: 0, uploaded: 0 },
        rates: { down: 0, up: 0 },
        peers: 0,
        files: [],
      }),
      await theirs.finish(first),
      await theirs.pause(first),
      await theirs.fleet(),
    ]) {
      expect(response.status).toBe(404);
      expect((await errorOf(response)).code).toBe("job_not_found");
    }

    // A second tab takes it: the first one's attempt is stale everywhere.
    const second = (await ok<TransferPlan>(t.take())).attempt;
    expect(second).toBe(first + 1);
    for (const response of [
      await t.open(0, first),
      await t.finish(first),
      await t.pause(first),
      await t.progress({
        attempt: first,
        phase: "downloading",
        bytes: { downloaded: 0, uploaded: 0 },
        rates: { down: 0, up: 0 },
        peers: 0,
        files: [],
      }),
    ]) {
      expect(response.status).toBe(409);
      expect((await errorOf(response)).code).toBe("stale_attempt");
    }

    // big.bin has two parts (8 MiB and 1000 bytes): part 3 does not exist, nor a short part 1.
    await ok(t.open(0, second));
    const outside = await t.partUrl(0, 3, second);
    expect(outside.status).toBe(422);
    expect(await errorOf(outside)).toMatchObject({ code: "part_out_of_range", details: { parts: 2 } });
    const short = await t.record(0, 1, { attempt: second, etag: "abc", size: 10 });
    expect(short.status).toBe(422);
    const beyond = await t.partUrl(0, 10_001, second);
    expect(beyond.status).toBe(400);

    // Completing with a part missing names it; finishing with files unstored names them.
    await sendPart(t, second, 0, 1, bytesOf(8 * MiB, 1));
    const incomplete = await t.complete(0, { attempt: second });
    expect(incomplete.status).toBe(409);
    expect(await errorOf(incomplete)).toMatchObject({ code: "parts_missing", details: { missing: [2] } });
    const early = await t.finish(second);
    expect(early.status).toBe(409);
    const error = await errorOf(early);
    expect(error.code).toBe("files_not_stored");
    expect(error.message).toContain("big.bin");
    expect((await view(user, job.id)).state).toBe("downloading");

    // A fleet job is not a tab's to take.
    const torrent = await makeTorrent();
    const fleetJob = (
      await ok<{ job: View }>(
        send(user.cookie, "POST", "/api/jobs", { torrent: toBase64(torrent.bytes) }),
        201,
      )
    ).job;
    expect(fleetJob.runner).toBe("fleet");
    const notMine = await tab(user, fleetJob.id).take();
    expect(notMine.status).toBe(409);
    expect((await errorOf(notMine)).code).toBe("not_browser_job");
  });

  it("pauses when the tab closes (a beacon) and gives the stored parts back to the next tab", async () => {
    const user = await s3User();
    const job = await browserJob(user);
    const t = tab(user, job.id);
    const attempt = (await ok<TransferPlan>(t.take())).attempt;
    await ok(t.open(0, attempt));
    const data = bytesOf(8 * MiB + 1000, 1);
    await sendPart(t, attempt, 0, 1, data.subarray(0, 8 * MiB));

    // navigator.sendBeacon: a POST with a JSON Blob, the session cookie and the page's Origin.
    const beacon = await call(`/api/jobs/${job.id}/transfer/pause`, {
      method: "POST",
      headers: fromWebApp(user.cookie, { "content-type": "application/json" }),
      body: new Blob([JSON.stringify({ attempt })], { type: "application/json" }),
    });
    expect(beacon.status, await beacon.clone().text()).toBe(200);
    const paused = await view(user, job.id);
    expect(paused).toMatchObject({ state: "queued", runner: "browser" });
    expect(paused.transitions.at(-1)).toMatchObject({ to: "queued", cause: "browser", reason: pausedReason });

    const again = await ok<TransferPlan>(t.take());
    expect(again.attempt).toBe(attempt + 1);
    const upload = await ok<FileUpload>(t.open(0, again.attempt));
    expect(upload).toEqual({ kind: "s3", partSize: 8 * MiB, stored: [{ partNumber: 1, size: 8 * MiB }] });
    await sendPart(t, again.attempt, 0, 2, data.subarray(8 * MiB));
    await ok(t.complete(0, { attempt: again.attempt }), 204);
    const file = (await view(user, job.id)).files[0]!;
    expect(new Uint8Array(await (await fetch(file.cloudUrl!)).arrayBuffer())).toEqual(data);
  });

  it("never lets a browser job into the workers' stream: not on creation, by admitNext, the reconcile cron or a pause", async () => {
    const user = await s3User();
    const job = await browserJob(user);
    expect(await withDb((db) => admitNext(db, user.userId))).toBeUndefined();
    await withDb((db) => reconcile(db, createRedis(env), { olderThanMs: 0 }));
    const t = tab(user, job.id);
    const attempt = (await ok<TransferPlan>(t.take())).attempt;
    await ok(t.pause(attempt));
    await withDb((db) => reconcile(db, createRedis(env), { olderThanMs: 0 }));
    expect(await withDb((db) => admitNext(db, user.userId))).toBeUndefined();
    expect(await messagesFor(job.id)).toEqual([]);
    const [row] = await withDb((db) => db.select().from(jobs).where(eq(jobs.id, job.id)));
    expect(row).toMatchObject({ runner: "browser", state: "queued", admittedAt: null, enqueuedAt: null });

    // Handed to the fleet, it goes in the normal way, as a new attempt.
    const handed = await ok<{ job: View }>(t.fleet());
    expect(handed.job).toMatchObject({ runner: "fleet", state: "queued", attempt: attempt + 1 });
    expect(await messagesFor(job.id)).toHaveLength(1);
    expect((await t.take()).status).toBe(409);
  });

  it("fails with the tab's reason, and refuses a browser job into a destination a tab cannot upload to", async () => {
    const user = await s3User();
    const job = await browserJob(user);
    const t = tab(user, job.id);
    const attempt = (await ok<TransferPlan>(t.take())).attempt;
    const failed = await ok<{ job: View }>(t.fail(attempt, "No peer or web seed answered in 5 min"));
    expect(failed.job).toMatchObject({
      state: "failed",
      failureReason: "The transfer in the browser failed: No peer or web seed answered in 5 min",
    });

    const { cookie, userId } = await signIn();
    const { addStorageProfile } = await import("../../test/fixtures/db.ts");
    await addStorageProfile(userId, { kind: "onedrive" });
    const torrent = await makeTorrent();
    const refused = await send(cookie, "POST", "/api/jobs", {
      torrent: toBase64(torrent.bytes),
      runner: "browser",
    });
    expect(refused.status).toBe(422);
    const error = await errorOf(refused);
    expect(error.code).toBe("browser_transfer_unsupported");
    expect(error.message).toMatch(/S3 and Google Drive/);
  });

  it("checks the bucket's endpoint against the egress policy before calling it", async () => {
    const user = await s3User();
    const job = await browserJob(user);
    // The profile now names a private address (the operator's allowances changed since it was saved).
    await withDb(async (db) => {
      const [profile] = await db
        .select()
        .from(storageProfiles)
        .where(eq(storageProfiles.userId, user.userId));
      await db
        .update(storageProfiles)
        .set({
          config: {
            ...(profile!.config as { region: string; bucket: string }),
            endpoint: "http://10.1.2.3:9000",
          },
        })
        .where(eq(storageProfiles.id, profile!.id));
    });
    const t = tab(user, job.id);
    const attempt = (await ok<TransferPlan>(t.take())).attempt;
    const refused = await t.open(0, attempt);
    expect(refused.status).toBe(422);
    const error = await errorOf(refused);
    expect(error.code).toBe("endpoint_refused");
    expect(error.message).toContain("10.1.2.3");
    const files = await withDb((db) => db.select().from(jobFiles).where(eq(jobFiles.jobId, job.id)));
    expect(files.every((f) => f.uploadSession === null)).toBe(true);
  });
});

describe("a browser transfer into Google Drive", () => {
  it("opens a session the tab sends chunks to (CORS for the web app) and records the file Drive made", async () => {
    const user = await driveUser();
    const job = await browserJob(user, [
      { path: "Show/e01.bin", size: 600 * 1024 },
      { path: "Show/empty.txt", size: 0 },
    ]);
    const t = tab(user, job.id);
    const plan = await ok<TransferPlan>(t.take());
    expect(plan.destination).toBe("gdrive");
    const attempt = plan.attempt;

    const data = bytesOf(600 * 1024, 5);
    const upload = await ok<FileUpload>(t.open(0, attempt));
    if (upload.kind !== "gdrive") throw new Error("not a Drive upload");
    expect(upload).toMatchObject({ offset: 0 });
    expect(upload.chunkSize % (256 * 1024)).toBe(0);
    // The page's preflight and chunks: allowed for the web app's origin only.
    const preflight = await fetch(upload.sessionUrl, {
      method: "OPTIONS",
      headers: {
        origin: webOrigin,
        "access-control-request-method": "PUT",
        "access-control-request-headers": "content-range",
      },
    });
    expect(preflight.status).toBe(200);
    expect(preflight.headers.get("access-control-allow-origin")).toBe(webOrigin);
    const stranger = await fetch(upload.sessionUrl, {
      method: "OPTIONS",
      headers: { origin: "https://evil.example", "access-control-request-method": "PUT" },
    });
    expect(stranger.status).toBe(403);

    // The first 256 KiB, then the tab goes away; a reopened upload says where Drive stands.
    const first = await fetch(upload.sessionUrl, {
      method: "PUT",
      headers: { origin: webOrigin, "content-range": `bytes 0-${256 * 1024 - 1}/${data.length}` },
      body: data.subarray(0, 256 * 1024),
    });
    expect(first.status).toBe(308);
    expect(first.headers.get("access-control-expose-headers")).toMatch(/Range/);
    const reopened = await ok<FileUpload>(t.open(0, attempt));
    expect(reopened).toMatchObject({ kind: "gdrive", sessionUrl: upload.sessionUrl, offset: 256 * 1024 });
    const last = await fetch(upload.sessionUrl, {
      method: "PUT",
      headers: {
        origin: webOrigin,
        "content-range": `bytes ${256 * 1024}-${data.length - 1}/${data.length}`,
      },
      body: data.subarray(256 * 1024),
    });
    expect(last.status).toBe(200);
    const made = (await last.json()) as { id: string };

    // Another file's id (the empty one's) is not this file.
    const empty = await ok<FileUpload>(t.open(1, attempt));
    expect(empty).toMatchObject({ kind: "gdrive", offset: 0 });
    const refusedId = await t.complete(0, { attempt, driveFileId: "not-a-file" });
    expect(refusedId.status).toBe(409);
    expect((await errorOf(refusedId)).code).toBe("drive_file_mismatch");
    await ok(t.complete(0, { attempt, driveFileId: made.id }), 204);
    await ok(t.complete(1, { attempt }), 204);

    const done = await ok<{ job: View }>(t.finish(attempt));
    expect(done.job.state).toBe("completed");
    expect(done.job.files.map((f) => f.state)).toEqual(["uploaded", "uploaded"]);
    // Drive holds the bytes, in the job's folder.
    const token = await fetch(env.GOOGLE_OAUTH_TOKEN_URL, {
      method: "POST",
      body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: user.refreshToken }),
    });
    const { access_token } = (await token.json()) as { access_token: string };
    const media = await fetch(`${env.DRIVE_API_BASE_URL}/drive/v3/files/${made.id}?alt=media`, {
      headers: { authorization: `Bearer ${access_token}` },
    });
    expect(new Uint8Array(await media.arrayBuffer())).toEqual(data);
  });
});
