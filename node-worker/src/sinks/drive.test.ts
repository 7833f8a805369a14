// The Drive sink against the local Drive double (local/drive): real HTTP, the
// resumable protocol, faults injected on the wire.
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  type DriveDouble,
  FOLDER_MIME,
  type MintedGrant,
  startDriveDouble,
} from "../../../local/drive/server.ts";
import { freePort, quietLog } from "../../../local/process.ts";
import { Ring } from "../torrent/ring.ts";
import {
  type AccessToken,
  DriveSink,
  type DriveSinkOptions,
  driveQuote,
  type GoogleOAuthOptions,
  GoogleTokenSource,
  ReconnectRequiredError,
} from "./drive.ts";
import { PermanentJobError, type SinkFile, type UploadHooks, type UploadResult } from "./index.ts";
import { Outage, type OutageState } from "./outage.ts";

const KiB = 1024;
const CHUNK = 256 * KiB;
const md5 = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("hex");
const silent = pino({ enabled: false });

/** What the runner keeps for one file between attempts. */
interface FileState {
  session: string | null;
  confirmed: number;
  sent: number;
  sessions: string[];
  cleared: number;
}

function hooksFor(state: FileState, signal: AbortSignal, onBytes?: (total: number) => void): UploadHooks {
  return {
    signal,
    ready: async () => {},
    onSession: async (session) => {
      state.session = session;
      state.sessions.push(session);
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

const newState = (): FileState => ({ session: null, confirmed: 0, sent: 0, sessions: [], cleared: 0 });

describe("DriveSink against the Drive double", () => {
  let dataDir: string;
  let work: string;
  let drive: DriveDouble;
  let grant: MintedGrant;
  let tokensIssued: AccessToken[];

  /** Local files of a small torrent: nested folders, an empty file, awkward names. */
  const tree: Record<string, Buffer> = {
    "Show/episode 1.mkv": randomBytes(3 * CHUNK + 12_345),
    'Show/extras/it\'s "odd" ünïcode.bin': randomBytes(CHUNK),
    "Show/extras/deeper/notes.txt": Buffer.from("hello drive\n"),
    "Show/empty.dat": Buffer.alloc(0),
    "Show/subs/en.srt": randomBytes(700 * KiB),
    // Look-alikes that must stay apart: a trailing space, a leading space, a `?`.
    "Show/x.bin": randomBytes(1000),
    "Show/x.bin ": randomBytes(1001),
    "Show/ lead/y.bin": randomBytes(1002),
    "Show/what?.bin": randomBytes(1003),
  };

  const oauth = (refreshToken = grant.refreshToken): GoogleOAuthOptions => ({
    clientId: "local-client",
    clientSecret: "local-secret",
    refreshToken,
    tokenUrl: `${drive.url}/token`,
    onAccessToken: (token) => {
      tokensIssued.push(token);
    },
  });

  const sinkOptions = (extra: Partial<DriveSinkOptions> = {}): DriveSinkOptions => ({
    oauth: oauth(),
    apiBaseUrl: drive.url,
    folder: "job-1",
    chunkSize: CHUNK,
    retry: { attempts: 8, baseDelayMs: 5, maxDelayMs: 40 },
    log: silent,
    ...extra,
  });

  const fileOf = (path: string, session: string | null = null): SinkFile => ({
    path,
    size: tree[path]!.length,
    localPath: join(work, path),
    uploadSession: session,
  });

  /** Uploads every file of the tree, two at a time like the runner. */
  async function uploadTree(sink: DriveSink): Promise<Map<string, UploadResult>> {
    const results = new Map<string, UploadResult>();
    const queue = Object.keys(tree);
    const lane = async () => {
      for (let path = queue.shift(); path; path = queue.shift()) {
        const state = newState();
        results.set(path, await sink.upload(fileOf(path), hooksFor(state, new AbortController().signal)));
        expect(state.confirmed).toBe(tree[path]!.length);
      }
    };
    await Promise.all([lane(), lane()]);
    return results;
  }

  /** Drive's files of the account by path under My Drive, with their md5. */
  function driveTree(): Map<string, { id: string; md5?: string; folder: boolean }> {
    const files = drive.filesOf(grant.accountId);
    const byId = new Map(files.map((f) => [f.id, f]));
    const pathOf = (id: string): string => {
      const f = byId.get(id);
      if (!f) return "";
      const parent = f.parents[0] ? pathOf(f.parents[0]) : "";
      return parent ? `${parent}/${f.name}` : f.name;
    };
    const out = new Map<string, { id: string; md5?: string; folder: boolean }>();
    for (const f of files) {
      const path = pathOf(f.id);
      expect(out.has(path), `duplicate on Drive: ${path}`).toBe(false);
      out.set(path, { id: f.id, ...(f.md5 ? { md5: f.md5 } : {}), folder: f.mimeType === FOLDER_MIME });
    }
    return out;
  }

  function expectTreeOnDrive(job: string) {
    const onDrive = driveTree();
    for (const [path, bytes] of Object.entries(tree)) {
      const entry = onDrive.get(`${job}/${path}`);
      expect(entry, path).toBeDefined();
      expect(entry!.md5, path).toBe(md5(bytes));
    }
    for (const folder of ["Show", "Show/extras", "Show/extras/deeper", "Show/subs", "Show/ lead"])
      expect(onDrive.get(`${job}/${folder}`)?.folder, folder).toBe(true);
  }

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "torreclou-drive-sink-"));
    work = await mkdtemp(join(tmpdir(), "torreclou-drive-files-"));
    for (const [path, bytes] of Object.entries(tree)) {
      await mkdir(dirname(join(work, path)), { recursive: true });
      await writeFile(join(work, path), bytes);
    }
    drive = await startDriveDouble({ port: await freePort(), dataDir, log: quietLog });
    grant = drive.mintRefreshToken("sink@example.com");
  });

  afterAll(async () => {
    await drive?.stop();
    await rm(dataDir, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  beforeEach(() => {
    drive.faults.clear();
    drive.stats.reset();
    tokensIssued = [];
  });

  it("mirrors a nested tree under the job folder, byte-identical", async () => {
    const sink = new DriveSink(sinkOptions());
    await sink.preflight(new AbortController().signal);
    const results = await uploadTree(sink);
    expectTreeOnDrive("job-1");
    for (const [path, result] of results) {
      expect(result.checksum).toBe(`md5:${md5(tree[path]!)}`);
      expect((await drive.contentOf(result.cloudId)).equals(tree[path]!)).toBe(true);
    }
    // 256 KiB chunks: the 3-chunk-plus file took 4 PUTs, the 1-chunk file 1.
    expect(drive.stats.requests("upload.create")).toBe(Object.keys(tree).length);
    expect(tokensIssued.length).toBe(1);
  });

  it("a second run of the same upload creates no duplicate files or folders", async () => {
    const before = drive.filesOf(grant.accountId).length;
    const first = new Map<string, string>();
    for (const f of drive.filesOf(grant.accountId)) first.set(f.id, f.name);
    // A different worker: no folder cache, no session, same job.
    const results = await uploadTree(new DriveSink(sinkOptions()));
    expect(drive.filesOf(grant.accountId).length).toBe(before);
    for (const result of results.values()) expect(first.has(result.cloudId)).toBe(true);
    expect(drive.stats.requests("upload.create")).toBe(0);
    expect(drive.stats.requests("files.create")).toBe(0);
    expectTreeOnDrive("job-1");
  });

  it("keeps the copy already there when a file streamed through a ring turns out to be one, removing the new one", async () => {
    const path = "Show/episode 1.mkv";
    const bytes = tree[path]!;
    const before = driveTree().get(`job-1/${path}`)!;
    const count = drive.filesOf(grant.accountId).length;
    // A ring two chunks round: each range lands there just before the upload asks for it.
    const ring = new Ring(bytes.length, 0, 16 * KiB);
    const localPath = join(work, "ringed.ring");
    const handle = await open(localPath, "w");
    const hooks: UploadHooks = {
      ...hooksFor(newState(), new AbortController().signal),
      ready: async (start, end) => {
        while (ring.end < Math.min(end, ring.tailStart)) ring.addCycle(2 * CHUNK);
        for (const [position, at, length] of ring.runs(start, end))
          await handle.write(bytes, at, length, position);
      },
    };
    try {
      const result = await new DriveSink(sinkOptions()).upload(
        { path, size: bytes.length, localPath, ring, uploadSession: null },
        hooks,
      );
      // Sent again (it could not be compared before), then found to be the same file.
      expect(drive.stats.requests("upload.create")).toBe(1);
      expect(result.cloudId).toBe(before.id);
      expect(result.checksum).toBe(`md5:${md5(bytes)}`);
    } finally {
      await handle.close();
    }
    expect(drive.filesOf(grant.accountId).length).toBe(count);
    expectTreeOnDrive("job-1");
  });

  it("resumes after a crash mid-file without sending an accepted byte again", async () => {
    const path = "Show/episode 1.mkv";
    const size = tree[path]!.length;
    const state = newState();
    const crash = new AbortController();
    // The worker dies once two chunks are stored.
    const hooks = hooksFor(state, crash.signal, (confirmed) => {
      if (confirmed >= 2 * CHUNK) crash.abort(new Error("worker killed"));
    });
    await expect(
      new DriveSink(sinkOptions({ folder: "job-crash" })).upload(fileOf(path), hooks),
    ).rejects.toThrow("worker killed");
    const session = state.session!;
    expect(session).toMatch(/upload_id=/);
    expect(drive.stats.session(session).bytesCommitted).toBe(2 * CHUNK);

    // Another worker takes the job over with the stored session URI.
    const again = newState();
    again.session = session;
    const result = await new DriveSink(sinkOptions({ folder: "job-crash" })).upload(
      fileOf(path, session),
      hooksFor(again, new AbortController().signal),
    );
    expect(again.sessions).toEqual([]); // no new session
    expect(again.confirmed).toBe(size); // resumed bytes count once
    expect(again.sent).toBe(size - 2 * CHUNK);
    const stats = drive.stats.session(session);
    expect(stats.bytesResent).toBe(0);
    expect(stats.bytesReceived).toBe(size);
    expect((await drive.contentOf(result.cloudId)).equals(tree[path]!)).toBe(true);
    expect(drive.stats.requests("upload.create")).toBe(1);
  });

  it("resumes after the connection drops mid-chunk, from the session's Range", async () => {
    const path = "Show/episode 1.mkv";
    drive.faults.inject({ route: "upload.chunk", kind: "drop", afterBytes: 100_000, skip: 1 });
    const state = newState();
    const result = await new DriveSink(sinkOptions({ folder: "job-drop", chunkSize: 2 * CHUNK })).upload(
      fileOf(path),
      hooksFor(state, new AbortController().signal),
    );
    expect(drive.faults.fired().map((f) => f.kind)).toEqual(["drop"]);
    expect((await drive.contentOf(result.cloudId)).equals(tree[path]!)).toBe(true);
    const stats = drive.stats.session(state.session!);
    expect(stats.bytesResent).toBe(0);
    // Only the 100,000 bytes of the cut request that the session did not keep went twice.
    expect(stats.bytesReceived).toBe(tree[path]!.length + 100_000);
  });

  it("waits out an outage longer than its retries (Drive answering 503), shows it, and completes", async () => {
    const path = "Show/episode 1.mkv";
    // More failures in a row than the retry policy's 8 tries: only an outage waits them out.
    drive.faults.inject({ route: "upload.chunk", kind: "status", status: 503, skip: 1, times: 12 });
    const states: (OutageState | undefined)[] = [];
    const outage = new Outage(30 * 60_000, (state) => states.push(state));
    const sink = new DriveSink(sinkOptions({ folder: "job-outage", outage }));
    const state = newState();
    await sink.upload(fileOf(path), hooksFor(state, new AbortController().signal));
    expect(drive.faults.pending()).toBe(0);
    expect(states[0]).toMatchObject({ reason: "HTTP 503" });
    expect(states.at(-1)).toBeUndefined();
    expect(state.confirmed).toBe(tree[path]!.length);
  });

  it("fails once an outage outlasts the operator's limit", async () => {
    drive.faults.inject({ route: "upload.create", kind: "status", status: 503, times: 50 });
    let now = 0;
    const outage = new Outage(
      5 * 60_000,
      () => {},
      () => (now += 60_000),
    );
    const sink = new DriveSink(sinkOptions({ folder: "job-outage-limit", outage }));
    await expect(
      sink.upload(fileOf("Show/x.bin"), hooksFor(newState(), new AbortController().signal)),
    ).rejects.toThrow(/Google Drive did not answer for 5 min \(HTTP 503\)/);
    drive.faults.clear();
  });

  it("survives 5xx, 429, 403 rate limits, a chunk stored before an error, and an expired session", async () => {
    const f = drive.faults;
    f.inject({ route: "upload.chunk", kind: "status", status: 503, skip: 1 });
    f.inject({ route: "upload.chunk", kind: "status", status: 500, afterCommit: true, skip: 2 });
    f.inject({ route: "upload.chunk", kind: "drop", afterBytes: 70_000, skip: 3 });
    f.inject({ route: "upload.chunk", kind: "rate-limit", reason: "userRateLimitExceeded", skip: 4 });
    f.inject({ route: "upload.chunk", kind: "expire-session", skip: 6 });
    f.inject({ route: "upload.query", kind: "status", status: 502 });
    f.inject({ route: "upload.create", kind: "rate-limit", reason: "rateLimitExceeded", times: 2 });
    f.inject({ route: "files.list", kind: "status", status: 429, times: 2 });
    f.inject({ route: "files.create", kind: "status", status: 500 });
    f.inject({ route: "files.get", kind: "status", status: 504 });
    const sink = new DriveSink(sinkOptions({ folder: "job-faults" }));
    await sink.preflight(new AbortController().signal);
    await uploadTree(sink);
    expectTreeOnDrive("job-faults");
    expect(f.pending()).toBe(0);
    expect(new Set(f.fired().map((x) => x.kind))).toEqual(
      new Set(["status", "rate-limit", "drop", "expire-session"]),
    );
    // The session chunks were never sent twice, whatever happened to their requests.
    const sessions = JSON.parse(JSON.stringify(drive.stats)) as {
      sessions: Record<string, { bytesResent: number }>;
    };
    for (const s of Object.values(sessions.sessions)) expect(s.bytesResent).toBe(0);
  });

  it("starts a file over when its stored session is gone", async () => {
    const path = "Show/subs/en.srt";
    const state = newState();
    const crash = new AbortController();
    await expect(
      new DriveSink(sinkOptions({ folder: "job-gone" })).upload(
        fileOf(path),
        hooksFor(state, crash.signal, () => crash.abort(new Error("stop"))),
      ),
    ).rejects.toThrow("stop");
    const old = state.session!;
    drive.faults.expireSession(old);
    const again = newState();
    again.session = old;
    const result = await new DriveSink(sinkOptions({ folder: "job-gone" })).upload(
      fileOf(path, old),
      hooksFor(again, new AbortController().signal),
    );
    expect(again.cleared).toBe(1);
    expect(again.sessions.length).toBe(1);
    expect(again.sessions[0]).not.toBe(old);
    expect((await drive.contentOf(result.cloudId)).equals(tree[path]!)).toBe(true);
  });

  it("refreshes the access token when it expires, and before it does", async () => {
    const sink = new DriveSink(sinkOptions({ folder: "job-refresh" }));
    await sink.preflight(new AbortController().signal);
    expect(tokensIssued.length).toBe(1);
    // Every access token dies (an hour passed): the next call gets a 401 and refreshes.
    drive.faults.expireAccessTokens();
    const state = newState();
    const result = await sink.upload(
      fileOf("Show/subs/en.srt"),
      hooksFor(state, new AbortController().signal),
    );
    expect(tokensIssued.length).toBe(2);
    expect((await drive.contentOf(result.cloudId)).equals(tree["Show/subs/en.srt"]!)).toBe(true);

    // A stored token about to expire is replaced without waiting for a 401.
    const source = new GoogleTokenSource({
      ...oauth(),
      accessToken: { accessToken: tokensIssued[1]!.accessToken, expiresAt: new Date(Date.now() + 30_000) },
      refreshMarginMs: 60_000,
    });
    const token = await source.token(new AbortController().signal);
    expect(token).not.toBe(tokensIssued[1]!.accessToken);
    expect(tokensIssued.length).toBe(3);
    // And a fresh one is kept.
    expect(await source.token(new AbortController().signal)).toBe(token);
    expect(drive.stats.requests("token")).toBe(3);
  });

  it("fails with ReconnectRequiredError when the grant is revoked", async () => {
    const other = drive.mintRefreshToken("revoked@example.com");
    const options = () => sinkOptions({ folder: "job-revoked", oauth: oauth(other.refreshToken) });
    const sink = new DriveSink(options());
    await sink.preflight(new AbortController().signal);
    const revoke = await fetch(`${drive.url}/revoke?token=${encodeURIComponent(other.refreshToken)}`, {
      method: "POST",
    });
    expect(revoke.status).toBe(200);
    // Mid-job: the access token stops working and cannot be refreshed.
    const upload = sink.upload(
      fileOf("Show/subs/en.srt"),
      hooksFor(newState(), new AbortController().signal),
    );
    await expect(upload).rejects.toBeInstanceOf(ReconnectRequiredError);
    await expect(upload).rejects.toThrow("reconnect Google Drive");
    // A new attempt fails at preflight, before any work.
    const error = await new DriveSink(options())
      .preflight(new AbortController().signal)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ReconnectRequiredError);
    expect((error as Error).message).toBe(
      "Google Drive access was revoked or has expired: reconnect Google Drive on the Storage page, then retry the job.",
    );
  });

  it("preflight fails with a readable reason when the destination folder is gone", async () => {
    const error = await new DriveSink(sinkOptions({ rootFolderId: "1doesNotExist" }))
      .preflight(new AbortController().signal)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PermanentJobError);
    expect((error as PermanentJobError).reason).toMatch(
      /folder chosen for this destination no longer exists/,
    );
  });

  it("sends a file in chunk-sized PUTs", async () => {
    const path = "Show/episode 1.mkv";
    const state = newState();
    await new DriveSink(sinkOptions({ folder: "job-chunks" })).upload(
      fileOf(path),
      hooksFor(state, new AbortController().signal),
    );
    expect(drive.stats.session(state.session!).chunks).toBe(Math.ceil(tree[path]!.length / CHUNK));
  });

  it("nests the job folder's names as Drive folders, found again by a name with '", async () => {
    const folder = "Shows/it's 2024";
    const path = 'Show/extras/it\'s "odd" ünïcode.bin';
    for (let run = 0; run < 2; run++) {
      // A second sink (another worker, no folder cache) finds the same folders.
      const sink = new DriveSink(sinkOptions({ folder }));
      await sink.preflight(new AbortController().signal);
      await sink.upload(fileOf(path), hooksFor(newState(), new AbortController().signal));
    }
    const onDrive = driveTree();
    expect(onDrive.get("Shows")?.folder).toBe(true);
    expect(onDrive.get("Shows/it's 2024")?.folder).toBe(true);
    expect(onDrive.get(`Shows/it's 2024/${path}`)?.md5).toBe(md5(tree[path]!));
  });

  it("quotes ' and \\ in Drive queries the way Drive reads them", async () => {
    expect(driveQuote("it's \\ odd")).toBe("'it\\'s \\\\ odd'");
    // The double's query parser (Drive's grammar) finds a folder of that name by it.
    const token = await new GoogleTokenSource(oauth()).token(new AbortController().signal);
    const auth = { authorization: `Bearer ${token}` };
    const made = await fetch(`${drive.url}/drive/v3/files`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ name: "it's \\ odd", mimeType: FOLDER_MIME }),
    });
    const { id } = (await made.json()) as { id: string };
    const q = `name = ${driveQuote("it's \\ odd")} and mimeType = '${FOLDER_MIME}'`;
    const found = await fetch(`${drive.url}/drive/v3/files?q=${encodeURIComponent(q)}&fields=files(id)`, {
      headers: auth,
    });
    expect(await found.json()).toEqual({ files: [{ id }] });
  });
});
