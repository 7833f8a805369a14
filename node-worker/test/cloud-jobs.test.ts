// Jobs into OneDrive and Dropbox with real parts: aria2c seeding over a
// loopback tracker, Postgres, Redis, the worker, and each provider's double
// (local/onedrive, local/dropbox). Profiles are stored as the edge stores
// them (the grant's refresh token encrypted, bound to the profile id).
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { columnsOf, decryptOAuthSecret, encryptSecret, parseKeyring, sealedOf } from "@torreclou/contracts";
import { type StorageProfile, storageProfiles } from "@torreclou/db";
import { eq } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type DropboxDouble, startDropboxDouble } from "../../local/dropbox/server.ts";
import { type OneDriveDouble, startOneDriveDouble } from "../../local/onedrive/server.ts";
import { freePort, quietLog } from "../../local/process.ts";
import type { Worker } from "../src/worker.ts";
import {
  type Env,
  filesOf,
  MiB,
  makeFixture,
  seedFixtures,
  setupEnv,
  startWorker,
  submitJob,
  waitFor,
  waitForState,
  workerEnv,
} from "./helpers.ts";

const root = resolve(import.meta.dirname, "../..");

const clientId = "worker-tests-client";
const clientSecret = "worker-tests-secret";

let env: Env;
let onedrive: OneDriveDouble;
let dropbox: DropboxDouble;
let worker: Worker;

/** What a worker needs to reach the doubles. */
function cloudEnv(): Record<string, string> {
  return {
    MICROSOFT_CLIENT_ID: clientId,
    MICROSOFT_CLIENT_SECRET: clientSecret,
    ...onedrive.env,
    WORKER_ONEDRIVE_CHUNK_BYTES: String(320 * 1024),
    DROPBOX_APP_KEY: clientId,
    DROPBOX_APP_SECRET: clientSecret,
    ...dropbox.env,
    WORKER_DROPBOX_CHUNK_BYTES: String(512 * 1024),
  };
}

beforeAll(async () => {
  env = await setupEnv(4);
  onedrive = await startOneDriveDouble({
    port: await freePort(),
    dataDir: join(env.dataDir, "onedrive"),
    clientId,
    clientSecret,
    log: quietLog,
  });
  dropbox = await startDropboxDouble({
    port: await freePort(),
    dataDir: join(env.dataDir, "dropbox"),
    clientId,
    clientSecret,
    log: quietLog,
  });
});

afterAll(async () => {
  await worker?.shutdown(5000);
  await onedrive?.stop();
  await dropbox?.stop();
  await env?.cleanup();
});

async function createProfile(
  kind: "onedrive" | "dropbox",
  email: string,
  refreshToken: string,
): Promise<string> {
  const id = randomUUID();
  const sealed = await encryptSecret(parseKeyring(env.credentialsKeys), { refreshToken }, id);
  await env.db.insert(storageProfiles).values({
    id,
    userId: env.userId,
    kind,
    name: `${kind} (${email}) ${id}`,
    config: { accountEmail: email },
    ...columnsOf(sealed),
  });
  return id;
}

async function profileRow(id: string): Promise<StorageProfile> {
  const [row] = await env.db.select().from(storageProfiles).where(eq(storageProfiles.id, id));
  if (!row) throw new Error(`profile ${id} not found`);
  return row;
}

const cases = [
  {
    kind: "onedrive" as const,
    label: "OneDrive",
    mint: (email: string) => onedrive.mintRefreshToken(email).refreshToken,
    files: (email: string) => new Map(onedrive.filesOf(email).map((f) => [f.path, onedrive.contentOf(f.id)])),
    revoke: (email: string) => onedrive.oauth.revokeAccount(email),
    /** Bytes the session holds and bytes it received again, by the stored upload URL. */
    session: (stored: string) => {
      const stats = onedrive.sessionStats(stored);
      return stats ? { held: stats.received, resent: stats.resent } : undefined;
    },
    // Microsoft hands out a new refresh token with every refresh: the worker writes it back.
    rotates: true,
  },
  {
    kind: "dropbox" as const,
    label: "Dropbox",
    mint: (email: string) => dropbox.mintRefreshToken(email).refreshToken,
    files: (email: string) =>
      new Map(dropbox.filesOf(email).map((f) => [f.path.slice(1), dropbox.contentOf(f.id)])),
    revoke: (email: string) => dropbox.oauth.revokeAccount(email),
    session: (stored: string) => {
      const stats = dropbox.sessionStats(stored);
      return stats ? { held: stats.offset, resent: stats.resent } : undefined;
    },
    rotates: false,
  },
];

describe("jobs into OneDrive and Dropbox", () => {
  beforeAll(async () => {
    ({ worker } = await startWorker(env, cloudEnv()));
  });
  afterAll(async () => {
    await worker?.shutdown(5000);
  });

  describe.each(cases)("jobs into $label", (c) => {
    it("stores a torrent byte-identical under the job folder, names mapped, tokens written back", async () => {
      const email = `ada-${c.kind}@example.com`;
      const refreshToken = c.mint(email);
      const profileId = await createProfile(c.kind, email, refreshToken);
      const made = await makeFixture(env, `to-${c.kind}`, [
        { path: "Season 1/episode 1.mkv", size: 1024 * 1024 + 12_345 },
        { path: "Season 1/what? notes.txt", content: "hello\n" },
        { path: "cover.jpg", size: 200_000 },
      ]);
      await seedFixtures(env, [made]);
      const job = await submitJob(env, { made, profileId, targetFolder: "Shows" });
      const done = await waitForState(env, job.id, ["completed", "failed"]);
      expect(done.failureReason).toBeNull();
      expect(done.state).toBe("completed");

      const stored = c.files(email);
      const name = (path: string) =>
        path
          .split("/")
          .map((n) => (c.kind === "onedrive" ? n.replace("?", "？") : n))
          .join("/");
      for (const path of ["Season 1/episode 1.mkv", "Season 1/what? notes.txt", "cover.jpg"]) {
        const local = await readFile(join(made.root, path));
        expect(stored.get(name(`Shows/to-${c.kind}/${path}`))?.equals(local), path).toBe(true);
      }
      expect(stored.size).toBe(3);

      const secret = await decryptOAuthSecret(
        parseKeyring(env.credentialsKeys),
        sealedOf(await profileRow(profileId)),
        profileId,
      );
      expect(secret.accessToken).toBeTruthy();
      if (c.rotates) expect(secret.refreshToken).not.toBe(refreshToken);
      else expect(secret.refreshToken).toBe(refreshToken);
    });

    it(`fails with 'reconnect ${c.label}' and marks the profile when the grant was revoked`, async () => {
      const email = `linus-${c.kind}@example.com`;
      const profileId = await createProfile(c.kind, email, c.mint(email));
      c.revoke(email);
      const made = await makeFixture(env, `revoked-${c.kind}.bin`, [
        { path: `revoked-${c.kind}.bin`, size: 100_000 },
      ]);
      await seedFixtures(env, [made]);
      const job = await submitJob(env, { made, profileId });
      const done = await waitForState(env, job.id, ["completed", "failed"]);
      expect(done.state).toBe("failed");
      expect(done.failureReason).toMatch(new RegExp(`reconnect ${c.label}`));
      expect((await profileRow(profileId)).status).toBe("needs_reconnect");
      expect(c.files(email).size).toBe(0);
    });
  });
});

describe.each(cases)("a worker killed mid-upload into $label", (c) => {
  const children: ChildProcess[] = [];

  afterEach(() => {
    for (const child of children.splice(0)) if (child.exitCode === null) child.kill("SIGKILL");
  });

  function spawnWorker(name: string) {
    const child = spawn(process.execPath, ["node-worker/src/main.ts"], {
      cwd: root,
      env: {
        ...workerEnv(env, { WORKER_ID: name, LOG_LEVEL: "info", ...cloudEnv() }),
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

  it("kill -9: the next attempt resumes the stored session and sends nothing twice", async () => {
    const email = `crash-${c.kind}@example.com`;
    const profileId = await createProfile(c.kind, email, c.mint(email));
    const size = 16 * MiB + 4321;
    const made = await makeFixture(env, `crash-${c.kind}.bin`, [{ path: `crash-${c.kind}.bin`, size }]);
    // A throttled seeder: the upload follows the download, so the kill lands mid-file.
    await seedFixtures(env, [made], "4M");
    const job = await submitJob(env, { made, profileId });

    const a = spawnWorker(`${c.kind}-worker-a`);
    const session = await waitFor(
      "a third of the file in the upload session",
      async () => {
        const stored = (await filesOf(env, job.id))[0]?.uploadSession;
        return stored && (c.session(stored)?.held ?? 0) > size / 3 ? stored : undefined;
      },
      60_000,
      20,
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${a.output.join("").slice(-3000)}`);
    });
    a.child.kill("SIGKILL");
    await a.exited;
    expect(c.session(session)!.held).toBeLessThan(size);

    const b = spawnWorker(`${c.kind}-worker-b`);
    const done = await waitForState(env, job.id, ["completed", "failed"], 90_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${b.output.join("").slice(-3000)}`);
    });
    expect(done.failureReason).toBeNull();
    expect(done.attempt).toBe(2);
    // The same session finished the file and never received a stored byte again.
    expect(c.session(session)!.resent).toBe(0);
    const stored = c.files(email);
    expect(stored.size).toBe(1);
    const local = await readFile(join(made.root));
    expect([...stored.values()][0]!.equals(local)).toBe(true);
    b.child.kill("SIGTERM");
    await b.exited;
  });
});
