// Jobs into Google Drive with real parts: aria2c seeding over a loopback
// tracker, Postgres, Redis, and the local Drive double (local/drive) speaking
// Google's OAuth and resumable upload protocols. Profiles are stored as the
// edge stores them (the grant's refresh token encrypted, bound to the profile id).
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import {
  columnsOf,
  type DriveSecret,
  decryptDriveSecret,
  encryptSecret,
  parseKeyring,
  sealedOf,
} from "@torreclou/contracts";
import { type StorageProfile, storageProfiles } from "@torreclou/db";
import { eq } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  type DriveDouble,
  FOLDER_MIME,
  type MintedGrant,
  startDriveDouble,
} from "../../local/drive/server.ts";
import type { FileRecord } from "../../local/drive/store.ts";
import { freePort, quietLog } from "../../local/process.ts";
import { type MadeTorrent, readTorrent } from "../../local/seeder/index.ts";
import { markDriveNeedsReconnect } from "../src/jobs/store.ts";
import type { Worker } from "../src/worker.ts";
import {
  type Env,
  filesOf,
  MiB,
  makeFixture,
  sampleScratch,
  seedFixtures,
  setupEnv,
  startWorker,
  submitJob,
  waitFor,
  waitForState,
  workerEnv,
} from "./helpers.ts";

const root = resolve(import.meta.dirname, "../..");
const clientId = "worker-tests.apps.googleusercontent.com";
const clientSecret = "worker-tests-google-client-secret";

let env: Env;
let drive: DriveDouble;

/** What a worker needs to reach the double. */
function driveEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    GOOGLE_CLIENT_ID: clientId,
    GOOGLE_CLIENT_SECRET: clientSecret,
    DRIVE_API_BASE_URL: drive.url,
    GOOGLE_OAUTH_TOKEN_URL: `${drive.url}/token`,
    // Small chunks: many requests per file, so a crash lands between them.
    WORKER_DRIVE_CHUNK_BYTES: String(512 * 1024),
    ...extra,
  };
}

beforeAll(async () => {
  env = await setupEnv(13);
  drive = await startDriveDouble({
    port: await freePort(),
    dataDir: join(env.dataDir, "drive"),
    clientId,
    clientSecret,
    log: quietLog,
  });
});

afterAll(async () => {
  await drive?.stop();
  await env?.cleanup();
});

/** A Drive profile as the edge stores it after the consent flow. */
async function createDriveProfile(grant: MintedGrant, secret: Partial<DriveSecret> = {}): Promise<string> {
  const id = randomUUID();
  const sealed = await encryptSecret(
    parseKeyring(env.credentialsKeys),
    { refreshToken: grant.refreshToken, ...secret },
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

async function profileRow(id: string): Promise<StorageProfile> {
  const [row] = await env.db.select().from(storageProfiles).where(eq(storageProfiles.id, id));
  if (!row) throw new Error(`profile ${id} not found`);
  return row;
}

async function secretOf(id: string): Promise<DriveSecret> {
  const row = await profileRow(id);
  return decryptDriveSecret(parseKeyring(env.credentialsKeys), sealedOf(row), row.id);
}

async function md5File(path: string): Promise<string> {
  const hash = createHash("md5");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

interface Tree {
  /** Path under the account's root → file. */
  files: Map<string, FileRecord>;
  folders: string[];
}

/** An account's Drive as paths, failing on two same-named entries in one folder. */
function treeOf(grant: MintedGrant): Tree {
  const all = drive.filesOf(grant.accountId).filter((f) => !f.trashed);
  const byId = new Map(all.map((f) => [f.id, f]));
  const pathOf = (file: FileRecord): string => {
    const parent = file.parents[0];
    if (!parent || parent === grant.rootFolderId) return file.name;
    const up = byId.get(parent);
    if (!up) throw new Error(`${file.name}: parent ${parent} is not in the drive`);
    return `${pathOf(up)}/${file.name}`;
  };
  const files = new Map<string, FileRecord>();
  const folders: string[] = [];
  for (const file of all) {
    const path = pathOf(file);
    if (files.has(path) || folders.includes(path)) throw new Error(`two entries at ${path}`);
    if (file.mimeType === FOLDER_MIME) folders.push(path);
    else files.set(path, file);
  }
  return { files, folders: folders.sort() };
}

/** Every file of the torrent sits at `<folder>/<torrent path>`, byte-identical (md5 of the bytes Drive holds). */
async function expectInDrive(grant: MintedGrant, made: MadeTorrent, folder: string): Promise<Tree> {
  const summary = readTorrent(await readFile(made.torrentPath));
  const tree = treeOf(grant);
  const expected = summary.files.map((f) => `${folder}/${f.path}`).sort();
  const actual = [...tree.files.keys()].filter((p) => p.startsWith(`${folder}/`)).sort();
  expect(actual).toEqual(expected);
  for (const file of summary.files) {
    const local = await md5File(join(env.dataDir, "seed", ...file.path.split("/")));
    const stored = tree.files.get(`${folder}/${file.path}`)!;
    expect(stored.md5, file.path).toBe(local);
    expect(stored.size, file.path).toBe(file.length);
    const bytes = await drive.contentOf(stored.id);
    expect(createHash("md5").update(bytes).digest("hex"), file.path).toBe(local);
  }
  return tree;
}

describe("Drive jobs", () => {
  let worker: Worker;

  beforeAll(async () => {
    ({ worker } = await startWorker(env, driveEnv({ WORKER_CONCURRENCY: "2" })));
  });

  afterAll(async () => {
    await worker?.shutdown(5000);
  });

  it("mirrors a torrent with nested folders into Drive byte-identical, and a second job adds nothing", async () => {
    const grant = drive.mintRefreshToken("ada@example.com");
    const profileId = await createDriveProfile(grant);
    const made = await makeFixture(env, "nested-drive", [
      { path: "Season 1/episode 1.mkv", size: 3 * MiB + 12_345 },
      { path: "Season 1/extras/deeper/notes.txt", content: "hello drive\n" },
      { path: "Season 1/extras/it's odd ünïcode.bin", size: 700_001 },
      { path: "Season 2/episode 1.mkv", size: 1 * MiB },
      { path: "cover.jpg", size: 200_000 },
    ]);
    await seedFixtures(env, [made]);

    const job = await submitJob(env, { made, profileId, targetFolder: "Shows" });
    const done = await waitForState(env, job.id, ["completed", "failed"]);
    expect(done.failureReason).toBeNull();
    expect(done.state).toBe("completed");
    const tree = await expectInDrive(grant, made, "Shows");
    expect(tree.folders).toEqual([
      "Shows",
      "Shows/nested-drive",
      "Shows/nested-drive/Season 1",
      "Shows/nested-drive/Season 1/extras",
      "Shows/nested-drive/Season 1/extras/deeper",
      "Shows/nested-drive/Season 2",
    ]);
    const files = await filesOf(env, job.id);
    for (const file of files) {
      expect(file.state).toBe("uploaded");
      expect(file.uploadSession).toBeNull();
      expect(file.cloudId).toBe(tree.files.get(`Shows/${file.path}`)?.id);
      expect(file.checksum).toBe(`md5:${tree.files.get(`Shows/${file.path}`)?.md5}`);
    }
    expect(done.bytesUploaded).toBe(done.bytesTotal);

    // The same torrent again into the same folder (a retry after completion):
    // every file is found in place, no session is opened, nothing is duplicated.
    const sessionsBefore = drive.stats.requests("upload.create");
    const foldersBefore = drive.stats.requests("files.create");
    const again = await submitJob(env, { made, profileId, targetFolder: "Shows" });
    const second = await waitForState(env, again.id, ["completed", "failed"]);
    expect(second.failureReason).toBeNull();
    const after = await expectInDrive(grant, made, "Shows");
    expect(after.folders).toEqual(tree.folders);
    expect([...after.files.values()].map((f) => f.id).sort()).toEqual(
      [...tree.files.values()].map((f) => f.id).sort(),
    );
    expect(drive.stats.requests("upload.create")).toBe(sessionsBefore);
    expect(drive.stats.requests("files.create")).toBe(foldersBefore);
    const secondFiles = await filesOf(env, again.id);
    expect(secondFiles.map((f) => f.cloudId).sort()).toEqual(files.map((f) => f.cloudId).sort());
  });

  it("stores refreshed access tokens in the profile, encrypted, and reuses them", async () => {
    const grant = drive.mintRefreshToken("grace@example.com");
    const profileId = await createDriveProfile(grant);
    const made = [1, 2, 3].map((n) =>
      makeFixture(env, `tokens-${n}.bin`, [{ path: `tokens-${n}.bin`, size: 300_000 + n }]),
    );
    const torrents = await Promise.all(made);
    await seedFixtures(env, torrents);

    // First job: no access token yet, one refresh, stored.
    const refreshes = () => drive.stats.requests("token");
    const before = refreshes();
    const first = await submitJob(env, { made: torrents[0]!, profileId });
    expect((await waitForState(env, first.id, ["completed", "failed"])).failureReason).toBeNull();
    expect(refreshes()).toBe(before + 1);
    const stored = await secretOf(profileId);
    expect(stored.refreshToken).toBe(grant.refreshToken);
    expect(stored.accessToken).toBeTruthy();
    expect(drive.store.accessTokens.get(stored.accessToken!)?.accountId).toBe(grant.accountId);
    expect(new Date(stored.accessTokenExpiresAt!).getTime()).toBeGreaterThan(Date.now() + 50 * 60_000);
    const row = await profileRow(profileId);
    expect(JSON.stringify(row)).not.toContain(stored.accessToken!);
    expect(JSON.stringify(row)).not.toContain(grant.refreshToken);

    // Second job: the stored token is still good, so no refresh.
    const second = await submitJob(env, { made: torrents[1]!, profileId });
    expect((await waitForState(env, second.id, ["completed", "failed"])).failureReason).toBeNull();
    expect(refreshes()).toBe(before + 1);

    // Google expired it early (as it may): the API's 401 makes the worker refresh and store the new one.
    drive.faults.expireAccessTokens();
    const third = await submitJob(env, { made: torrents[2]!, profileId });
    expect((await waitForState(env, third.id, ["completed", "failed"])).failureReason).toBeNull();
    expect(refreshes()).toBe(before + 2);
    const renewed = await secretOf(profileId);
    expect(renewed.accessToken).not.toBe(stored.accessToken);
    expect(renewed.refreshToken).toBe(grant.refreshToken);
    expect((await profileRow(profileId)).status).toBe("active");
  });

  it("fails with 'reconnect Google Drive' and marks the profile when the grant was revoked", async () => {
    const grant = drive.mintRefreshToken("linus@example.com");
    const profileId = await createDriveProfile(grant);
    const revoked = await fetch(`${drive.url}/revoke?token=${encodeURIComponent(grant.refreshToken)}`, {
      method: "POST",
    });
    expect(revoked.status).toBe(200);
    const made = await makeFixture(env, "revoked.bin", [{ path: "revoked.bin", size: 100_000 }]);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId });
    const done = await waitForState(env, job.id, ["completed", "failed"]);
    expect(done.state).toBe("failed");
    expect(done.failureReason).toMatch(/reconnect Google Drive/);
    expect((await profileRow(profileId)).status).toBe("needs_reconnect");
    expect(treeOf(grant).files.size).toBe(0);

    // A later job on the same profile fails at once, without asking Google again.
    const refreshes = drive.stats.requests("token");
    const next = await submitJob(env, { made, profileId });
    const failed = await waitForState(env, next.id, ["completed", "failed"]);
    expect(failed.failureReason).toMatch(/reconnect Google Drive/);
    expect(drive.stats.requests("token")).toBe(refreshes);
  });

  it("leaves a profile alone when the user reconnected while an old grant failed", async () => {
    const old = drive.mintRefreshToken("mary@example.com");
    const profileId = await createDriveProfile(old);
    await fetch(`${drive.url}/revoke?token=${encodeURIComponent(old.refreshToken)}`, { method: "POST" });
    // The user connects again before the worker gets to the job: a new grant in the same profile.
    const fresh = drive.mintRefreshToken("mary@example.com");
    const ring = parseKeyring(env.credentialsKeys);
    const sealed = await encryptSecret(ring, { refreshToken: fresh.refreshToken }, profileId);
    await env.db.update(storageProfiles).set(columnsOf(sealed)).where(eq(storageProfiles.id, profileId));
    expect(await markDriveNeedsReconnect(env.db, ring, profileId, old.refreshToken)).toBe(false);
    expect((await profileRow(profileId)).status).toBe("active");
    expect(await markDriveNeedsReconnect(env.db, ring, profileId, fresh.refreshToken)).toBe(true);
    expect((await profileRow(profileId)).status).toBe("needs_reconnect");
  });
});

describe("Drive jobs and crashes", () => {
  const children: ChildProcess[] = [];

  afterEach(() => {
    for (const child of children.splice(0)) if (child.exitCode === null) child.kill("SIGKILL");
  });

  function spawnWorker(name: string) {
    const child = spawn(process.execPath, ["node-worker/src/main.ts"], {
      cwd: root,
      env: {
        ...workerEnv(env, { WORKER_ID: name, LOG_LEVEL: "info", ...driveEnv() }),
        PATH: process.env.PATH ?? "",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    const output: string[] = [];
    child.stdout?.on("data", (d: Buffer) => output.push(d.toString()));
    child.stderr?.on("data", (d: Buffer) => output.push(d.toString()));
    const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)));
    return { child, output, exited };
  }

  it("kill -9 mid-file: the next attempt resumes the Drive session and resends nothing", async () => {
    const grant = drive.mintRefreshToken("crash@example.com");
    const profileId = await createDriveProfile(grant);
    const size = 24 * MiB + 4321;
    const made = await makeFixture(env, "drive-crash.bin", [{ path: "drive-crash.bin", size }]);
    // A throttled seeder: the upload follows the download, so the kill lands mid-file.
    await seedFixtures(env, [made], "4M");
    const job = await submitJob(env, { made, profileId });

    const a = spawnWorker("drive-worker-a");
    const session = await waitFor(
      "a third of the file in the Drive session",
      async () => {
        const uri = (await filesOf(env, job.id))[0]?.uploadSession;
        return uri && drive.stats.session(uri).bytesCommitted > size / 3 ? uri : undefined;
      },
      60_000,
      20,
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${a.output.join("").slice(-3000)}`);
    });
    a.child.kill("SIGKILL");
    await a.exited;
    const atKill = drive.stats.session(session);
    expect(atKill.bytesCommitted).toBeLessThan(size);

    const b = spawnWorker("drive-worker-b");
    const done = await waitForState(env, job.id, ["completed", "failed"], 90_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${b.output.join("").slice(-3000)}`);
    });
    expect(done.failureReason).toBeNull();
    expect(done.attempt).toBe(2);
    await expectInDrive(grant, made, job.id);

    // The same session finished the file: one session, asked where it stood, nothing sent twice.
    const stats = drive.stats.session(session);
    expect(stats.bytesCommitted).toBe(size);
    expect(stats.bytesResent).toBe(0);
    expect(stats.queries).toBeGreaterThanOrEqual(1);
    const [file] = await filesOf(env, job.id);
    expect(file?.cloudId).toBe(treeOf(grant).files.get(`${job.id}/drive-crash.bin`)?.id);
    expect(treeOf(grant).files.size).toBe(1);
    b.child.kill("SIGTERM");
    await b.exited;
  });
});

describe("Drive jobs larger than the disk budget", () => {
  it("streams a file four times the budget into Drive byte-identical, never holding more than the budget", async () => {
    const budget = 8 * MiB;
    const { worker } = await startWorker(env, driveEnv({ WORKER_SCRATCH_BUDGET_BYTES: String(budget) }));
    try {
      const grant = drive.mintRefreshToken("big@example.com");
      const profileId = await createDriveProfile(grant);
      const made = await makeFixture(env, "drive-four-times", [
        { path: "drive-four-times", size: 4 * budget + 777 },
      ]);
      await seedFixtures(env, [made], "12M");
      const sampler = sampleScratch(env.scratchDir);
      const job = await submitJob(env, { made, profileId, targetFolder: "Big" });
      const done = await waitForState(env, job.id, ["completed", "failed"], 120_000);
      const peak = await sampler.stop();
      expect(done.failureReason).toBeNull();
      await expectInDrive(grant, made, "Big");
      expect(peak, `peak scratch ${peak} bytes`).toBeGreaterThan(0);
      expect(peak, `peak scratch ${peak} bytes`).toBeLessThanOrEqual(budget);
      // Through a ring (room for two 512 KiB chunks is enough), rewritten in place.
      expect([...sampler.rings]).toEqual([`${job.id}/0.ring`]);
    } finally {
      await worker.shutdown(5000);
    }
  });
});
