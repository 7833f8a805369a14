// Jobs into OneDrive and Dropbox with real parts: aria2c seeding over a
// loopback tracker, Postgres, Redis, the worker, and each provider's double
// (local/onedrive, local/dropbox). Profiles are stored as the edge stores
// them (the grant's refresh token encrypted, bound to the profile id).
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { columnsOf, decryptOAuthSecret, encryptSecret, parseKeyring, sealedOf } from "@torreclou/contracts";
import { type StorageProfile, storageProfiles } from "@torreclou/db";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DropboxDouble, startDropboxDouble } from "../../local/dropbox/server.ts";
import { type OneDriveDouble, startOneDriveDouble } from "../../local/onedrive/server.ts";
import { freePort, quietLog } from "../../local/process.ts";
import type { Worker } from "../src/worker.ts";
import {
  type Env,
  makeFixture,
  seedFixtures,
  setupEnv,
  startWorker,
  submitJob,
  waitForState,
} from "./helpers.ts";

const clientId = "worker-tests-client";
const clientSecret = "worker-tests-secret";

let env: Env;
let onedrive: OneDriveDouble;
let dropbox: DropboxDouble;
let worker: Worker;

beforeAll(async () => {
  env = await setupEnv(15);
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
  ({ worker } = await startWorker(env, {
    MICROSOFT_CLIENT_ID: clientId,
    MICROSOFT_CLIENT_SECRET: clientSecret,
    ...onedrive.env,
    WORKER_ONEDRIVE_CHUNK_BYTES: String(320 * 1024),
    DROPBOX_APP_KEY: clientId,
    DROPBOX_APP_SECRET: clientSecret,
    ...dropbox.env,
    WORKER_DROPBOX_CHUNK_BYTES: String(512 * 1024),
  }));
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
    rotates: false,
  },
];

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
