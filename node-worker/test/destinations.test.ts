// One contract for every destination's sink, run against each provider's
// double (local/onedrive, local/dropbox, local/drive) and S3 against the
// local S3 server: real HTTP, the provider's upload protocol, faults injected
// on the wire. What every sink must do: store every byte, resume an
// interrupted session without sending stored bytes again, check the
// provider's content hash, map names the provider refuses, stop on a full
// account, say "reconnect" for a revoked grant, and wait out 429 storms as
// the provider asks. A case a provider's stand-in cannot play (the local S3
// server injects no faults; the Drive double has no quotas) is not part of
// that provider's list.
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import {
  CreateBucketCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  type S3Client,
} from "@aws-sdk/client-s3";
import { destinationNameRules, type NameRules } from "@torreclou/contracts";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FaultRule } from "../../local/cloud/server.ts";
import { type DriveDouble, startDriveDouble } from "../../local/drive/server.ts";
import type { FileRecord } from "../../local/drive/store.ts";
import { type DropboxDouble, startDropboxDouble } from "../../local/dropbox/server.ts";
import { type OneDriveDouble, startOneDriveDouble } from "../../local/onedrive/server.ts";
import { freePort, quietLog } from "../../local/process.ts";
import { s3ClientFor } from "../../local/s3.ts";
import { DropboxSink } from "../src/destinations/dropbox.ts";
import { checkNames } from "../src/destinations/index.ts";
import { OAuthTokenSource } from "../src/destinations/oauth.ts";
import { OneDriveSink } from "../src/destinations/onedrive.ts";
import type { JournalPart } from "../src/jobs/store.ts";
import { DriveSink } from "../src/sinks/drive.ts";
import {
  PermanentJobError,
  ReconnectRequiredError,
  type Sink,
  type SinkFile,
  type UploadHooks,
} from "../src/sinks/index.ts";
import { Outage, type OutageState } from "../src/sinks/outage.ts";
import { S3Sink } from "../src/sinks/s3.ts";
import { Ring } from "../src/torrent/ring.ts";

const KiB = 1024;
const silent = pino({ enabled: false });
const fastRetry = { attempts: 6, baseDelayMs: 5, maxDelayMs: 40 };

/** What one provider brings to the contract. */
interface Provider {
  name: "onedrive" | "dropbox" | "gdrive" | "s3";
  names: NameRules;
  /** Bytes per request the sink is built with (small, so files take several). */
  chunk: number;
  start(port: number, dataDir: string): Promise<void>;
  stop(): Promise<void>;
  grant(email: string): string;
  sink(refreshToken: string, folder: string, outage?: Outage): Sink;
  /** Stored files of the account: path under the app folder (or bucket prefix) → bytes. */
  stored(email: string): Promise<Map<string, Buffer>>;
  inject(rule: FaultRule): void;
  clearFaults(): void;
  /** Bytes the provider received again for offsets a session already held, where it counts them. */
  resent?(session: string): number;
  /** What its stand-in can play. */
  can: { faults: boolean; retryAfter: boolean; corrupt: boolean; quota: boolean; revoke: boolean };
  revoke(email: string): void | Promise<void>;
  setQuota(email: string, bytes: number): void;
  /** The fault route of an upload's data requests. */
  chunkRoute: string;
  /** The fault route where a stored file is committed (for corruption). */
  commitRoute: string;
}

let onedriveDouble: OneDriveDouble;
let dropboxDouble: DropboxDouble;
let driveDouble: DriveDouble;
const driveGrants = new Map<string, { accountId: string; refreshToken: string }>();
let s3Admin: S3Client;
let s3Bucket: string;

const tokenSource = (label: string, refreshToken: string, tokenUrl: string) =>
  new OAuthTokenSource({
    label,
    clientId: "local-client",
    clientSecret: "local-secret",
    refreshToken,
    tokenUrl,
    retry: fastRetry,
  });

const providers: Provider[] = [
  {
    name: "onedrive",
    names: destinationNameRules.onedrive,
    chunk: 320 * KiB,
    async start(port, dataDir) {
      onedriveDouble = await startOneDriveDouble({
        port,
        dataDir,
        log: quietLog,
        clientId: "local-client",
        clientSecret: "local-secret",
      });
    },
    stop: () => onedriveDouble.stop(),
    grant: (email) => onedriveDouble.mintRefreshToken(email).refreshToken,
    sink: (refreshToken, folder, outage) =>
      new OneDriveSink({
        tokens: tokenSource("OneDrive", refreshToken, `${onedriveDouble.url}/common/oauth2/v2.0/token`),
        folder,
        chunkSize: 320 * KiB,
        apiBaseUrl: onedriveDouble.url,
        retry: fastRetry,
        outage,
        log: silent,
      }),
    stored: async (email) =>
      new Map(onedriveDouble.filesOf(email).map((f) => [f.path, onedriveDouble.contentOf(f.id)])),
    can: { faults: true, retryAfter: true, corrupt: true, quota: true, revoke: true },
    inject: (rule) => onedriveDouble.faults.inject(rule),
    clearFaults: () => onedriveDouble.faults.clear(),
    resent: (session) => onedriveDouble.sessionStats(session)?.resent ?? 0,
    revoke: (email) => {
      onedriveDouble.oauth.revokeAccount(email);
    },
    setQuota: (email, bytes) => onedriveDouble.setQuota(email, bytes),
    chunkRoute: "upload.chunk",
    commitRoute: "upload.chunk",
  },
  {
    name: "dropbox",
    names: destinationNameRules.dropbox,
    chunk: 256 * KiB,
    async start(port, dataDir) {
      dropboxDouble = await startDropboxDouble({
        port,
        dataDir,
        log: quietLog,
        clientId: "local-client",
        clientSecret: "local-secret",
      });
    },
    stop: () => dropboxDouble.stop(),
    grant: (email) => dropboxDouble.mintRefreshToken(email).refreshToken,
    sink: (refreshToken, folder, outage) =>
      new DropboxSink({
        tokens: tokenSource("Dropbox", refreshToken, `${dropboxDouble.url}/oauth2/token`),
        folder,
        chunkSize: 256 * KiB,
        apiBaseUrl: dropboxDouble.url,
        contentBaseUrl: dropboxDouble.url,
        retry: fastRetry,
        outage,
        log: silent,
      }),
    stored: async (email) =>
      new Map(dropboxDouble.filesOf(email).map((f) => [f.path.slice(1), dropboxDouble.contentOf(f.id)])),
    can: { faults: true, retryAfter: true, corrupt: true, quota: true, revoke: true },
    inject: (rule) => dropboxDouble.faults.inject(rule),
    clearFaults: () => dropboxDouble.faults.clear(),
    resent: (session) => dropboxDouble.sessionStats(session)?.resent ?? 0,
    revoke: (email) => {
      dropboxDouble.oauth.revokeAccount(email);
    },
    setQuota: (email, bytes) => dropboxDouble.setQuota(email, bytes),
    chunkRoute: "upload.append",
    commitRoute: "upload.finish",
  },
  {
    name: "gdrive",
    names: destinationNameRules.gdrive,
    chunk: 256 * KiB,
    async start(port, dataDir) {
      driveDouble = await startDriveDouble({ port, dataDir, log: quietLog });
    },
    stop: () => driveDouble.stop(),
    grant(email) {
      const grant = driveDouble.mintRefreshToken(email);
      driveGrants.set(email, grant);
      return grant.refreshToken;
    },
    sink: (refreshToken, folder, outage) =>
      new DriveSink({
        oauth: {
          clientId: "local-client",
          clientSecret: "local-secret",
          refreshToken,
          tokenUrl: `${driveDouble.url}/token`,
        },
        apiBaseUrl: driveDouble.url,
        folder,
        chunkSize: 256 * KiB,
        retry: fastRetry,
        outage,
        log: silent,
      }),
    async stored(email) {
      const grant = driveGrants.get(email)!;
      const records = driveDouble.filesOf(grant.accountId);
      const byId = new Map(records.map((r) => [r.id, r]));
      const pathOf = (r: FileRecord): string => {
        const parent = byId.get(r.parents[0] ?? "");
        return parent ? `${pathOf(parent)}/${r.name}` : r.name;
      };
      const out = new Map<string, Buffer>();
      for (const r of records)
        if (r.mimeType !== "application/vnd.google-apps.folder")
          out.set(pathOf(r), await driveDouble.contentOf(r.id));
      return out;
    },
    inject: (rule) => driveDouble.faults.inject(rule as Parameters<DriveDouble["faults"]["inject"]>[0]),
    clearFaults: () => driveDouble.faults.clear(),
    resent: (session) => driveDouble.stats.session(session).bytesResent,
    async revoke(email) {
      const token = driveGrants.get(email)!.refreshToken;
      await fetch(`${driveDouble.url}/revoke?token=${encodeURIComponent(token)}`, { method: "POST" });
    },
    setQuota: () => {},
    chunkRoute: "upload.chunk",
    commitRoute: "upload.chunk",
    // The Drive double sends no Retry-After, keeps no quota and never stores a damaged copy.
    can: { faults: true, retryAfter: false, corrupt: false, quota: false, revoke: true },
  },
  {
    name: "s3",
    names: destinationNameRules.s3,
    // S3's smallest part.
    chunk: 5 * 1024 * KiB,
    async start() {
      s3Admin = s3ClientFor(process.env);
      s3Bucket = `contract-${randomBytes(4).toString("hex")}`;
      await s3Admin.send(new CreateBucketCommand({ Bucket: s3Bucket }));
    },
    async stop() {
      s3Admin.destroy();
    },
    // No grant: each "account" is a key prefix in one bucket.
    grant: (email) => email,
    sink: (prefix, folder, outage) =>
      new S3Sink({
        outage,
        config: {
          endpoint: process.env.S3_ENDPOINT,
          region: "us-east-1",
          bucket: s3Bucket,
          prefix,
          forcePathStyle: true,
        },
        secret: {
          accessKeyId: process.env.S3_ACCESS_KEY_ID ?? "",
          secretAccessKey: process.env.S3_SECRET_ACCESS_KEY ?? "",
        },
        folder,
        partSize: 5 * 1024 * KiB,
        concurrency: 2,
        log: silent,
      }),
    async stored(prefix) {
      const listed = await s3Admin.send(new ListObjectsV2Command({ Bucket: s3Bucket, Prefix: `${prefix}/` }));
      const out = new Map<string, Buffer>();
      for (const o of listed.Contents ?? []) {
        const body = await s3Admin.send(new GetObjectCommand({ Bucket: s3Bucket, Key: o.Key! }));
        out.set(o.Key!.slice(prefix.length + 1), Buffer.from(await body.Body!.transformToByteArray()));
      }
      return out;
    },
    inject: () => {},
    clearFaults: () => {},
    revoke: () => {},
    setQuota: () => {},
    chunkRoute: "",
    commitRoute: "",
    // The local S3 server injects no faults and keeps no quotas; keys are not OAuth grants.
    can: { faults: false, retryAfter: false, corrupt: false, quota: false, revoke: false },
  },
];

interface FileState {
  session: string | null;
  confirmed: number;
  sent: number;
  cleared: number;
  /** Parts journaled for the session (S3). */
  parts: JournalPart[];
}

const newState = (): FileState => ({ session: null, confirmed: 0, sent: 0, cleared: 0, parts: [] });

function hooksFor(state: FileState, signal: AbortSignal, onBytes?: (confirmed: number) => void): UploadHooks {
  return {
    signal,
    ready: async () => {},
    onSession: async (session) => {
      state.session = session;
    },
    onPart: async (part) => {
      state.parts.push(part);
    },
    journal: async () => [...state.parts],
    clearSession: async () => {
      state.session = null;
      state.parts = [];
      state.cleared++;
    },
    onBytes: (bytes) => {
      state.confirmed += bytes;
      onBytes?.(state.confirmed);
    },
    onSent: (bytes) => {
      state.sent += bytes;
    },
  };
}

/** A case for the providers whose stand-in can play it; the others do not list it. */
function only(can: boolean): typeof it {
  return can ? it : ((() => {}) as unknown as typeof it);
}

describe.each(providers)("the $name sink against its double", (provider) => {
  let dataDir: string;
  let work: string;
  let n = 0;
  const email = () => `user-${++n}-${randomBytes(3).toString("hex")}@example.com`;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), `tc-${provider.name}-`));
    work = join(dataDir, "work");
    await provider.start(await freePort(), join(dataDir, "double"));
  });
  afterAll(async () => {
    await provider.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  async function localFile(path: string, bytes: Buffer, session: string | null = null): Promise<SinkFile> {
    const localPath = join(work, `${n}-${randomBytes(4).toString("hex")}`, path);
    await mkdir(dirname(localPath), { recursive: true });
    await writeFile(localPath, bytes);
    return { path, size: bytes.length, localPath, uploadSession: session };
  }

  const storedName = (folder: string, path: string) =>
    [folder, ...path.split("/")].map((c) => provider.names.name(c)).join("/");

  it("stores every file byte for byte under the job folder, names mapped as the provider allows", async () => {
    const who = email();
    const sink = provider.sink(provider.grant(who), "job 1");
    await sink.preflight(AbortSignal.timeout(30_000));
    const tree: Record<string, Buffer> = {
      "Show/episode 1.mkv": randomBytes(3 * provider.chunk + 12_345),
      "Show/extras/deeper/notes.txt": Buffer.from("hello\n"),
      "Show/empty.dat": Buffer.alloc(0),
      // Characters OneDrive refuses, a space Dropbox refuses at the end: replaced, never dropped.
      "Show/what? <x>.bin": randomBytes(1000),
      "Show/trailing .bin ": randomBytes(1001),
      "Show/ünïcode 日本.bin": randomBytes(provider.chunk),
    };
    for (const [path, bytes] of Object.entries(tree)) {
      const state = newState();
      const result = await sink.upload(
        await localFile(path, bytes),
        hooksFor(state, AbortSignal.timeout(30_000)),
      );
      expect(result.cloudId).toBeTruthy();
      expect(state.confirmed).toBe(bytes.length);
    }
    const stored = await provider.stored(who);
    expect(stored.size).toBe(Object.keys(tree).length);
    for (const [path, bytes] of Object.entries(tree)) {
      expect(stored.get(storedName("job 1", path))?.equals(bytes), path).toBe(true);
    }
    sink.close();
  });

  it("reads a file that streams through a ring, each range written there just before it is asked for", async () => {
    const who = email();
    const bytes = randomBytes(6 * provider.chunk + 999);
    // A ring two chunks (or parts) round: each range overwrites the one sent two before it.
    const ring = new Ring(bytes.length, 0, 16 * KiB);
    const localPath = join(work, `ring-${randomBytes(4).toString("hex")}.ring`);
    await mkdir(work, { recursive: true });
    const handle = await open(localPath, "w");
    const state = newState();
    const hooks: UploadHooks = {
      ...hooksFor(state, AbortSignal.timeout(30_000)),
      // What the download does once the window selects a range: its bytes land at the ring's positions.
      ready: async (start, end) => {
        while (ring.end < Math.min(end, ring.tailStart)) ring.addCycle(2 * provider.chunk);
        for (const [position, at, length] of ring.runs(start, end))
          await handle.write(bytes, at, length, position);
      },
    };
    try {
      const sink = provider.sink(provider.grant(who), "job");
      await sink.upload(
        { path: "ringed.bin", size: bytes.length, localPath, ring, uploadSession: null },
        hooks,
      );
      sink.close();
    } finally {
      await handle.close();
    }
    expect(ring.cycles.length).toBeGreaterThan(2);
    expect((await provider.stored(who)).get("job/ringed.bin")?.equals(bytes)).toBe(true);
  });

  it("refuses a torrent two of whose files it would store under one name", () => {
    const caseBlind = provider.name === "onedrive" || provider.name === "dropbox";
    if (caseBlind)
      expect(() => checkNames(provider.name, ["T/Readme.txt", "T/README.txt"])).toThrow(PermanentJobError);
    else expect(() => checkNames(provider.name, ["T/Readme.txt", "T/README.txt"])).not.toThrow();
    expect(() => checkNames(provider.name, ["T/a.txt", "T/b.txt"])).not.toThrow();
    expect(() => checkNames("s3", ["T/Readme.txt", "T/README.txt"])).not.toThrow();
  });

  it("resumes an interrupted session in a new sink without sending stored bytes again", async () => {
    const who = email();
    const refreshToken = provider.grant(who);
    const bytes = randomBytes(5 * provider.chunk + 777);
    const file = await localFile("big.bin", bytes);
    const state = newState();
    // The first attempt stops (as a killed worker does) once two chunks are stored.
    const stop = new AbortController();
    const first = provider.sink(refreshToken, "job").upload(
      file,
      hooksFor(state, stop.signal, (confirmed) => {
        if (confirmed >= 2 * provider.chunk) stop.abort(new Error("worker killed"));
      }),
    );
    await expect(first).rejects.toThrow();
    expect(state.session).toBeTruthy();
    const held = state.confirmed;
    expect(held).toBeGreaterThanOrEqual(2 * provider.chunk);

    // Another worker: a fresh sink and token source, the stored session.
    const second = newState();
    second.session = state.session;
    second.parts = [...state.parts];
    const result = await provider
      .sink(refreshToken, "job")
      .upload({ ...file, uploadSession: state.session }, hooksFor(second, AbortSignal.timeout(30_000)));
    expect(result.cloudId).toBeTruthy();
    expect((await provider.stored(who)).get("job/big.bin")?.equals(bytes)).toBe(true);
    if (provider.resent) expect(provider.resent(state.session!)).toBe(0);
    expect(second.cleared).toBe(0);
    // Only what the session lacked went over the wire again.
    expect(second.sent).toBeLessThanOrEqual(bytes.length - held + provider.chunk);
  });

  only(provider.can.faults)(
    "goes on through dropped connections and 5xx, asking the session where it stands",
    async () => {
      const who = email();
      const bytes = randomBytes(4 * provider.chunk + 5);
      provider.inject({ route: provider.chunkRoute, kind: "drop", afterBytes: provider.chunk / 2, skip: 1 });
      provider.inject({ route: provider.chunkRoute, kind: "status", status: 503, times: 2 });
      provider.inject({ route: provider.chunkRoute, kind: "status", status: 500, afterCommit: true });
      const state = newState();
      await provider
        .sink(provider.grant(who), "job")
        .upload(await localFile("f.bin", bytes), hooksFor(state, AbortSignal.timeout(60_000)));
      provider.clearFaults();
      expect((await provider.stored(who)).get("job/f.bin")?.equals(bytes)).toBe(true);
      expect(state.confirmed).toBe(bytes.length);
    },
  );

  only(provider.can.faults)(
    "waits out a 429 storm as Retry-After asks, showing the wait on the job",
    async () => {
      const who = email();
      const bytes = randomBytes(2 * provider.chunk);
      const seen: (OutageState | undefined)[] = [];
      const outage = new Outage(600_000, (s) => seen.push(s ? { ...s } : undefined));
      provider.inject({ route: provider.chunkRoute, kind: "status", status: 429, retryAfter: 1, times: 3 });
      const started = Date.now();
      await provider
        .sink(provider.grant(who), "job", outage)
        .upload(await localFile("g.bin", bytes), hooksFor(newState(), AbortSignal.timeout(60_000)));
      provider.clearFaults();
      expect((await provider.stored(who)).get("job/g.bin")?.equals(bytes)).toBe(true);
      // Three answers each asked for a second: the sink never came back sooner.
      if (provider.can.retryAfter) expect(Date.now() - started).toBeGreaterThanOrEqual(3000);
      expect(seen[0]?.reason).toBe("HTTP 429 (too many requests)");
      expect(seen.at(-1)).toBeUndefined();
    },
  );

  only(provider.can.faults)("starts a file over when its session expired", async () => {
    const who = email();
    const bytes = randomBytes(3 * provider.chunk + 1);
    provider.inject({ route: provider.chunkRoute, kind: "expire-session", skip: 1 });
    const state = newState();
    await provider
      .sink(provider.grant(who), "job")
      .upload(await localFile("h.bin", bytes), hooksFor(state, AbortSignal.timeout(60_000)));
    provider.clearFaults();
    expect(state.cleared).toBe(1);
    expect((await provider.stored(who)).get("job/h.bin")?.equals(bytes)).toBe(true);
  });

  only(provider.can.corrupt)(
    "checks the provider's content hash: a stored copy that differs is replaced",
    async () => {
      const who = email();
      const bytes = randomBytes(provider.chunk + 99);
      provider.inject({
        route: provider.commitRoute,
        kind: "corrupt",
        skip: provider.name === "onedrive" ? 1 : 0,
      });
      const state = newState();
      await provider
        .sink(provider.grant(who), "job")
        .upload(await localFile("c.bin", bytes), hooksFor(state, AbortSignal.timeout(60_000)));
      provider.clearFaults();
      expect(state.cleared).toBe(1);
      expect((await provider.stored(who)).get("job/c.bin")?.equals(bytes)).toBe(true);
    },
  );

  only(provider.can.quota)("stops with a message when the account is full", async () => {
    const who = email();
    const refreshToken = provider.grant(who);
    provider.setQuota(who, 1000);
    const error = await provider
      .sink(refreshToken, "job")
      .upload(
        await localFile("q.bin", randomBytes(provider.chunk)),
        hooksFor(newState(), AbortSignal.timeout(30_000)),
      )
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PermanentJobError);
    expect((error as PermanentJobError).reason).toMatch(/full/);
  });

  only(provider.can.revoke)("says reconnect when the grant was revoked", async () => {
    const who = email();
    const refreshToken = provider.grant(who);
    await provider.revoke(who);
    const error = await provider
      .sink(refreshToken, "job")
      .upload(await localFile("r.bin", randomBytes(10)), hooksFor(newState(), AbortSignal.timeout(30_000)))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ReconnectRequiredError);
    expect((error as ReconnectRequiredError).reason).toMatch(/reconnect/);
  });
});
