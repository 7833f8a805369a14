// One contract for every OAuth destination's sink, run against each
// provider's double (local/onedrive, local/dropbox): real HTTP, the provider's
// upload-session protocol, faults injected on the wire. What every sink must
// do: store every byte, resume an interrupted session without sending stored
// bytes again, check the provider's content hash, map names the provider
// refuses, stop on a full account, say "reconnect" for a revoked grant, and
// wait out 429 storms as the provider asks.
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { destinationNameRules, type NameRules } from "@torreclou/contracts";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FaultRule } from "../../local/cloud/server.ts";
import { type DropboxDouble, startDropboxDouble } from "../../local/dropbox/server.ts";
import { type OneDriveDouble, startOneDriveDouble } from "../../local/onedrive/server.ts";
import { freePort, quietLog } from "../../local/process.ts";
import { DropboxSink } from "../src/destinations/dropbox.ts";
import { checkNames } from "../src/destinations/index.ts";
import { OAuthTokenSource } from "../src/destinations/oauth.ts";
import { OneDriveSink } from "../src/destinations/onedrive.ts";
import {
  PermanentJobError,
  ReconnectRequiredError,
  type Sink,
  type SinkFile,
  type UploadHooks,
} from "../src/sinks/index.ts";
import { Outage, type OutageState } from "../src/sinks/outage.ts";

const KiB = 1024;
const silent = pino({ enabled: false });
const fastRetry = { attempts: 6, baseDelayMs: 5, maxDelayMs: 40 };

/** What one provider brings to the contract. */
interface Provider {
  name: "onedrive" | "dropbox";
  names: NameRules;
  /** Bytes per request the sink is built with (small, so files take several). */
  chunk: number;
  start(port: number, dataDir: string): Promise<void>;
  stop(): Promise<void>;
  grant(email: string): string;
  sink(refreshToken: string, folder: string, outage?: Outage): Sink;
  /** Stored files of the account: path under the app folder → bytes. */
  stored(email: string): Map<string, Buffer>;
  inject(rule: FaultRule): void;
  clearFaults(): void;
  /** Bytes the provider received again for offsets a session already held. */
  resent(session: string): number;
  revoke(email: string): void;
  setQuota(email: string, bytes: number): void;
  /** The fault route of an upload's data requests. */
  chunkRoute: string;
  /** The fault route where a stored file is committed (for corruption). */
  commitRoute: string;
}

let onedriveDouble: OneDriveDouble;
let dropboxDouble: DropboxDouble;

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
    stored: (email) =>
      new Map(onedriveDouble.filesOf(email).map((f) => [f.path, onedriveDouble.contentOf(f.id)])),
    inject: (rule) => onedriveDouble.faults.inject(rule),
    clearFaults: () => onedriveDouble.faults.clear(),
    resent: (session) => onedriveDouble.sessionStats(session)?.resent ?? 0,
    revoke: (email) => onedriveDouble.oauth.revokeAccount(email),
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
    stored: (email) =>
      new Map(dropboxDouble.filesOf(email).map((f) => [f.path.slice(1), dropboxDouble.contentOf(f.id)])),
    inject: (rule) => dropboxDouble.faults.inject(rule),
    clearFaults: () => dropboxDouble.faults.clear(),
    resent: (session) => dropboxDouble.sessionStats(session)?.resent ?? 0,
    revoke: (email) => dropboxDouble.oauth.revokeAccount(email),
    setQuota: (email, bytes) => dropboxDouble.setQuota(email, bytes),
    chunkRoute: "upload.append",
    commitRoute: "upload.finish",
  },
];

interface FileState {
  session: string | null;
  confirmed: number;
  sent: number;
  cleared: number;
}

const newState = (): FileState => ({ session: null, confirmed: 0, sent: 0, cleared: 0 });

function hooksFor(state: FileState, signal: AbortSignal, onBytes?: (confirmed: number) => void): UploadHooks {
  return {
    signal,
    ready: async () => {},
    onSession: async (session) => {
      state.session = session;
    },
    onPart: async () => {},
    journal: async () => [],
    clearSession: async () => {
      state.session = null;
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
    const stored = provider.stored(who);
    expect(stored.size).toBe(Object.keys(tree).length);
    for (const [path, bytes] of Object.entries(tree)) {
      expect(stored.get(storedName("job 1", path))?.equals(bytes), path).toBe(true);
    }
    sink.close();
  });

  it("refuses a torrent two of whose files it would store under one name", () => {
    expect(() => checkNames(provider.name, ["T/Readme.txt", "T/README.txt"])).toThrow(PermanentJobError);
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
    const result = await provider
      .sink(refreshToken, "job")
      .upload({ ...file, uploadSession: state.session }, hooksFor(second, AbortSignal.timeout(30_000)));
    expect(result.cloudId).toBeTruthy();
    expect(provider.stored(who).get("job/big.bin")?.equals(bytes)).toBe(true);
    expect(provider.resent(state.session!)).toBe(0);
    expect(second.cleared).toBe(0);
    // Only what the session lacked went over the wire again.
    expect(second.sent).toBeLessThanOrEqual(bytes.length - held + provider.chunk);
  });

  it("goes on through dropped connections and 5xx, asking the session where it stands", async () => {
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
    expect(provider.stored(who).get("job/f.bin")?.equals(bytes)).toBe(true);
    expect(state.confirmed).toBe(bytes.length);
  });

  it("waits out a 429 storm as Retry-After asks, showing the wait on the job", async () => {
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
    expect(provider.stored(who).get("job/g.bin")?.equals(bytes)).toBe(true);
    // Three answers each asked for a second: the sink never came back sooner.
    expect(Date.now() - started).toBeGreaterThanOrEqual(3000);
    expect(seen[0]?.reason).toBe("HTTP 429 (too many requests)");
    expect(seen.at(-1)).toBeUndefined();
  });

  it("starts a file over when its session expired", async () => {
    const who = email();
    const bytes = randomBytes(3 * provider.chunk + 1);
    provider.inject({ route: provider.chunkRoute, kind: "expire-session", skip: 1 });
    const state = newState();
    await provider
      .sink(provider.grant(who), "job")
      .upload(await localFile("h.bin", bytes), hooksFor(state, AbortSignal.timeout(60_000)));
    provider.clearFaults();
    expect(state.cleared).toBe(1);
    expect(provider.stored(who).get("job/h.bin")?.equals(bytes)).toBe(true);
  });

  it("checks the provider's content hash: a stored copy that differs is replaced", async () => {
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
    expect(provider.stored(who).get("job/c.bin")?.equals(bytes)).toBe(true);
  });

  it("stops with a message when the account is full", async () => {
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

  it("says reconnect when the grant was revoked", async () => {
    const who = email();
    const refreshToken = provider.grant(who);
    provider.revoke(who);
    const error = await provider
      .sink(refreshToken, "job")
      .upload(await localFile("r.bin", randomBytes(10)), hooksFor(newState(), AbortSignal.timeout(30_000)))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ReconnectRequiredError);
    expect((error as ReconnectRequiredError).reason).toMatch(/reconnect/);
  });
});
