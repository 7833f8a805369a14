// A job a browser tab began and handed to the fleet: the tab's upload (opened
// by the edge's own transfer functions, its first bytes sent straight to the
// provider and recorded as the transfer routes record them) is resumed by a
// real worker downloading from an aria2c seeder. What the tab stored is never
// sent again, and the stored file is byte-identical. For S3 (the tab's part
// presigned and journaled) an S3 proxy counts requests; for Google Drive (the
// tab's chunk PUT to the resumable session) the Drive double (local/drive)
// counts each session's bytes.
import { createHash, randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import {
  columnsOf,
  type DestinationOf,
  destinationOf,
  EgressPolicy,
  encryptSecret,
  jobFolder,
  parseKeyring,
  queue,
  storageKey,
} from "@torreclou/contracts";
import { storageProfiles } from "@torreclou/db";
import { recordPart, updateFile } from "@torreclou/db/files";
import { admitNext } from "@torreclou/db/jobs";
import { handToFleet, takeForBrowser } from "@torreclou/db/transfer";
import { eq } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Config } from "../../edge/src/config.ts";
import { gdrive } from "../../edge/src/destinations/gdrive.ts";
import { DRIVE_CHUNK_BYTES } from "../../edge/src/destinations/gdrive-transfer.ts";
import { s3Transfer } from "../../edge/src/destinations/s3-transfer.ts";
import type { TransferContext, TransferFile } from "../../edge/src/destinations/types.ts";
import { type DriveDouble, type MintedGrant, startDriveDouble } from "../../local/drive/server.ts";
import { freePort, quietLog } from "../../local/process.ts";
import type { Worker } from "../src/worker.ts";
import {
  createProfile,
  type Env,
  enqueue,
  expectStoredExactly,
  filesOf,
  MiB,
  makeFixture,
  s3Proxy,
  seedFixtures,
  setupEnv,
  startWorker,
  submitJob,
  transitionsOf,
  waitForState,
} from "./helpers.ts";

const clientId = "handoff-tests.apps.googleusercontent.com";
const clientSecret = "handoff-tests-google-client-secret";
const webOrigin = "http://localhost:5173";

let env: Env;
let proxy: Awaited<ReturnType<typeof s3Proxy>>;
let drive: DriveDouble;
let worker: Worker | undefined;

beforeAll(async () => {
  env = await setupEnv(23);
  proxy = await s3Proxy();
  drive = await startDriveDouble({
    port: await freePort(),
    dataDir: join(env.dataDir, "drive"),
    clientId,
    clientSecret,
    log: quietLog,
  });
});

afterEach(async () => {
  await worker?.shutdown(5000);
  worker = undefined;
});

afterAll(async () => {
  await drive?.stop();
  await proxy?.close();
  await env?.cleanup();
});

/**
 * The edge's transfer context for a job's S3 destination (only the key ring and
 * the egress allowances of its settings are read; the operator allows the S3
 * proxy, as the workers' EGRESS_ALLOW does).
 */
async function contextFor(profileId: string, folder: string): Promise<TransferContext<"s3">> {
  const [row] = await env.db.select().from(storageProfiles).where(eq(storageProfiles.id, profileId));
  const config = {
    CREDENTIALS_KEYS: parseKeyring(env.credentialsKeys),
    EGRESS_ALLOW: EgressPolicy.fromSpec(env.allow.join(",")),
  } as Pick<Config, "CREDENTIALS_KEYS" | "EGRESS_ALLOW">;
  return {
    destination: destinationOf(row!) as DestinationOf<"s3">,
    config: config as Config,
    folder,
    journal: async () => [],
  };
}

describe("a browser job handed to the fleet", () => {
  it("is finished by a worker that resumes the tab's multipart upload without sending its parts again", async () => {
    const size = 12 * MiB + 12345;
    const made = await makeFixture(env, "handoff.bin", [{ path: "handoff.bin", size }]);
    await seedFixtures(env, [made]);
    const profileId = await createProfile(env, { endpoint: proxy.endpoint });
    const job = await submitJob(env, { made, profileId, runner: "browser", targetFolder: "handoff" });
    const inStream = async () =>
      (await env.redis.xrange(queue.stream, "-", "+")).filter(([, fields]) =>
        fields.join(" ").includes(job.id),
      );
    expect(await inStream()).toEqual([]);

    // The tab takes the job and opens the file's upload, as POST …/transfer and …/upload do.
    const taken = await takeForBrowser(env.db, { jobId: job.id, userId: env.userId, runningLimit: null });
    if ("refused" in taken) throw new Error(`not taken: ${taken.refused}`);
    const attempt = taken.job.attempt;
    const [row] = await filesOf(env, job.id);
    const file: TransferFile = { index: 0, path: row!.path, size, uploadSession: null };
    const ctx = await contextFor(profileId, jobFolder(taken.job));
    const opened = await s3Transfer.open(ctx, file);
    if (opened.upload.kind !== "s3" || !opened.session) throw new Error("no multipart upload");
    expect(opened.upload.partSize).toBe(8 * MiB);
    const fenced = { db: env.db, jobId: job.id, attempt };
    await updateFile(fenced, row!.id, { uploadSession: opened.session, state: "uploading" });

    // Part 1 straight from the "tab" to S3 through a presigned URL, then journaled.
    const bytes = await readFile(join(env.dataDir, "seed", "handoff.bin"));
    const url = await s3Transfer.parts!.url(ctx, { ...file, uploadSession: opened.session }, 1, new Date());
    const put = await fetch(url, { method: "PUT", body: bytes.subarray(0, 8 * MiB) });
    expect(put.status).toBe(200);
    await recordPart(fenced, row!.id, {
      partNumber: 1,
      etag: put.headers.get("etag")!.replaceAll('"', ""),
      size: 8 * MiB,
    });

    // Handed to the fleet, let in the normal way.
    const handed = await handToFleet(env.db, job.id, env.userId);
    if ("refused" in handed) throw new Error(`not handed over: ${handed.refused}`);
    expect(handed.job).toMatchObject({ runner: "fleet", state: "queued", attempt: attempt + 1 });
    const admitted = await admitNext(env.db, env.userId);
    expect(admitted?.id).toBe(job.id);
    await enqueue(env, job);

    ({ worker } = await startWorker(env));
    const done = await waitForState(env, job.id, ["completed", "failed"], 120_000);
    expect(done.failureReason).toBeNull();
    expect(done.state).toBe("completed");

    // Byte for byte the torrent's file, at the key the tab's upload was opened for.
    const key = storageKey("handoff", "handoff.bin");
    await expectStoredExactly(env, made, "handoff");
    // One upload (the tab's), part 1 sent once (by the tab), part 2 by the worker, no whole-file PUT.
    expect(proxy.count("create", key)).toBe(1);
    expect(proxy.requests.filter((r) => r.kind === "part" && r.key === key).map((r) => r.part)).toEqual([
      1, 2,
    ]);
    expect(proxy.count("put", key)).toBe(0);
    const moves = (await transitionsOf(env, job.id)).map((t) => [t.fromState, t.toState, t.cause]);
    expect(moves).toEqual([
      [null, "queued", "user"],
      ["queued", "downloading", "browser"],
      ["downloading", "queued", "user"],
      ["queued", "downloading", "worker"],
      ["downloading", "uploading", "worker"],
      ["uploading", "completed", "worker"],
    ]);
  });
});

/** A Drive profile as the edge stores it after the consent flow (the grant's refresh token sealed to the profile id). */
async function createDriveProfile(grant: MintedGrant): Promise<string> {
  const id = randomUUID();
  const sealed = await encryptSecret(
    parseKeyring(env.credentialsKeys),
    { refreshToken: grant.refreshToken },
    id,
  );
  await env.db.insert(storageProfiles).values({
    id,
    userId: env.userId,
    kind: "gdrive",
    name: `Google Drive (${grant.email}) ${id}`,
    config: { accountEmail: grant.email },
    ...columnsOf(sealed),
  });
  return id;
}

/** The edge's transfer context for a job's Drive destination: the settings its Drive calls read, at the double. */
async function driveContextFor(profileId: string, folder: string): Promise<TransferContext<"gdrive">> {
  const [row] = await env.db.select().from(storageProfiles).where(eq(storageProfiles.id, profileId));
  const config = {
    CREDENTIALS_KEYS: parseKeyring(env.credentialsKeys),
    WEB_ORIGIN: webOrigin,
    GOOGLE_CLIENT_ID: clientId,
    GOOGLE_CLIENT_SECRET: clientSecret,
    GOOGLE_OAUTH_AUTH_URL: `${drive.url}/o/oauth2/v2/auth`,
    GOOGLE_OAUTH_TOKEN_URL: `${drive.url}/token`,
    DRIVE_API_BASE_URL: drive.url,
  } as Pick<
    Config,
    | "CREDENTIALS_KEYS"
    | "WEB_ORIGIN"
    | "GOOGLE_CLIENT_ID"
    | "GOOGLE_CLIENT_SECRET"
    | "GOOGLE_OAUTH_AUTH_URL"
    | "GOOGLE_OAUTH_TOKEN_URL"
    | "DRIVE_API_BASE_URL"
  >;
  return {
    destination: destinationOf(row!) as DestinationOf<"gdrive">,
    config: config as Config,
    folder,
    journal: async () => [],
  };
}

const md5 = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("hex");

describe("a browser job into Google Drive handed to the fleet", () => {
  it("is finished by a worker that resumes the tab's resumable session without sending its bytes again", async () => {
    const grant = drive.mintRefreshToken("handoff@example.com");
    const profileId = await createDriveProfile(grant);
    const size = 12 * MiB + 12345;
    const made = await makeFixture(env, "handoff-drive.bin", [{ path: "handoff-drive.bin", size }]);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId, runner: "browser", targetFolder: "drive-handoff" });
    const bytes = await readFile(join(env.dataDir, "seed", "handoff-drive.bin"));

    // The tab takes the job and opens the file's upload, as POST …/transfer and …/upload do.
    const taken = await takeForBrowser(env.db, { jobId: job.id, userId: env.userId, runningLimit: null });
    if ("refused" in taken) throw new Error(`not taken: ${taken.refused}`);
    const attempt = taken.job.attempt;
    const [row] = await filesOf(env, job.id);
    const file: TransferFile = { index: 0, path: row!.path, size, uploadSession: null };
    const ctx = await driveContextFor(profileId, jobFolder(taken.job));
    const sessionsBefore = drive.stats.requests("upload.create");
    const opened = await gdrive.transfer!.open(ctx, file);
    if (opened.upload.kind !== "gdrive" || !opened.session) throw new Error("no resumable session");
    const session = opened.session;
    expect(opened.upload).toMatchObject({ sessionUrl: session, offset: 0, chunkSize: DRIVE_CHUNK_BYTES });
    expect(drive.stats.requests("upload.create")).toBe(sessionsBefore + 1);
    const fenced = { db: env.db, jobId: job.id, attempt };
    await updateFile(fenced, row!.id, { uploadSession: session, state: "uploading" });

    // The first chunk straight from the "tab" to the session, with the web app's Origin.
    const stored = DRIVE_CHUNK_BYTES;
    expect(stored % (256 * 1024)).toBe(0);
    const put = await fetch(session, {
      method: "PUT",
      headers: { origin: webOrigin, "content-range": `bytes 0-${stored - 1}/${size}` },
      body: bytes.subarray(0, stored),
    });
    await put.body?.cancel();
    expect(put.status).toBe(308);
    expect(put.headers.get("range")).toBe(`bytes=0-${stored - 1}`);
    expect(put.headers.get("access-control-allow-origin")).toBe(webOrigin);
    // A reopened tab would be told the same session and where it stands.
    const reopened = await gdrive.transfer!.open(ctx, { ...file, uploadSession: session });
    expect(reopened.session).toBe(session);
    expect(reopened.upload).toMatchObject({ sessionUrl: session, offset: stored });
    const byTab = drive.stats.session(session);
    expect(byTab).toMatchObject({ bytesReceived: stored, bytesCommitted: stored, bytesResent: 0, chunks: 1 });

    // Handed to the fleet, let in the normal way.
    const handed = await handToFleet(env.db, job.id, env.userId);
    if ("refused" in handed) throw new Error(`not handed over: ${handed.refused}`);
    expect(handed.job).toMatchObject({ runner: "fleet", state: "queued", attempt: attempt + 1 });
    expect((await filesOf(env, job.id))[0]?.uploadSession).toBe(session);
    const admitted = await admitNext(env.db, env.userId);
    expect(admitted?.id).toBe(job.id);
    await enqueue(env, job);

    const workerChunk = 1 * MiB;
    ({ worker } = await startWorker(env, {
      GOOGLE_CLIENT_ID: clientId,
      GOOGLE_CLIENT_SECRET: clientSecret,
      DRIVE_API_BASE_URL: drive.url,
      GOOGLE_OAUTH_TOKEN_URL: `${drive.url}/token`,
      WORKER_DRIVE_CHUNK_BYTES: String(workerChunk),
    }));
    const done = await waitForState(env, job.id, ["completed", "failed"], 120_000);
    expect(done.failureReason).toBeNull();
    expect(done.state).toBe("completed");
    expect(done.bytesUploaded).toBe(size);

    // One file, byte for byte the torrent's, where the tab's session put it.
    const files = drive
      .filesOf(grant.accountId)
      .filter((f) => f.mimeType !== "application/vnd.google-apps.folder");
    expect(files.map((f) => f.name)).toEqual(["handoff-drive.bin"]);
    const [inDrive] = files;
    const folder = drive.filesOf(grant.accountId).find((f) => f.id === inDrive!.parents[0]);
    expect(folder?.name).toBe("drive-handoff");
    expect(folder?.parents).toEqual([grant.rootFolderId]);
    expect(inDrive!.size).toBe(size);
    expect(inDrive!.md5).toBe(md5(bytes));
    expect(md5(await drive.contentOf(inDrive!.id))).toBe(md5(bytes));
    const [row2] = await filesOf(env, job.id);
    expect(row2).toMatchObject({ state: "uploaded", uploadSession: null, cloudId: inDrive!.id });
    expect(row2!.checksum).toBe(`md5:${md5(bytes)}`);

    // The tab's session finished the file: no other session was opened, the
    // worker asked it where it stood and sent only the bytes after the tab's,
    // in its own chunks; every byte arrived once.
    expect(drive.stats.requests("upload.create")).toBe(sessionsBefore + 1);
    const stats = drive.stats.session(session);
    expect(stats.bytesCommitted).toBe(size);
    expect(stats.bytesReceived).toBe(size);
    expect(stats.bytesResent).toBe(0);
    expect(stats.chunks - byTab.chunks).toBe(Math.ceil((size - stored) / workerChunk));
    expect(stats.queries).toBeGreaterThan(byTab.queries);
    expect(drive.stats.uploadBytesReceived()).toBe(size);
    const moves = (await transitionsOf(env, job.id)).map((t) => [t.fromState, t.toState, t.cause]);
    expect(moves).toEqual([
      [null, "queued", "user"],
      ["queued", "downloading", "browser"],
      ["downloading", "queued", "user"],
      ["queued", "downloading", "worker"],
      ["downloading", "uploading", "worker"],
      ["uploading", "completed", "worker"],
    ]);
  });
});
