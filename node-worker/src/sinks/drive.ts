// Uploads into a user's Google Drive. Folder lookup and creation and file
// metadata go through googleapis' Drive client (@googleapis/drive: the
// standalone Drive v3 client, a fraction of the whole googleapis package
// the worker image would otherwise carry) and tokens through
// google-auth-library (drive/oauth.ts). The upload itself is our own code on
// Drive's resumable protocol: googleapis never uses it by itself, and a
// session must be resumed by another worker process after a crash, which
// only its stored URI allows. One session per file, chunks (multiples of 256 KiB)
// streamed from the local file as soon as their bytes are downloaded. The
// session URI is handed to the runner before any data is sent, so another
// attempt (or another worker) asks the session how much it holds and goes on
// from there. The torrent's folders are mirrored under a job folder with
// find-or-create, so a retry never makes duplicates.
//
// Protocol: https://developers.google.com/drive/api/guides/manage-uploads#resumable
import { createHash, type Hash } from "node:crypto";
import { Readable, Transform, type TransformCallback } from "node:stream";
import { drive, type drive_v3, type MethodOptions } from "@googleapis/drive";
import { destinationNameRules } from "@torreclou/contracts";
import type { Logger } from "pino";
import {
  defaultRetry,
  GoogleApiError,
  isTransient,
  pause,
  type RetryPolicy,
  withRetry,
} from "./drive/http.ts";
import {
  type GoogleOAuthOptions,
  GoogleTokenSource,
  googleErrorOf,
  ReconnectRequiredError,
} from "./drive/oauth.ts";
import {
  checkReadLength,
  contentTypeFor,
  PermanentJobError,
  type Sink,
  type SinkFile,
  storedPath,
  type UploadHooks,
  type UploadResult,
} from "./index.ts";
import { type LocalFile, readStream } from "./local.ts";
import type { Outage } from "./outage.ts";
import { storedInOrder } from "./stored.ts";

export { GoogleApiError } from "./drive/http.ts";
export {
  type AccessToken,
  GOOGLE_REVOKE_URL,
  GOOGLE_TOKEN_URL,
  type GoogleOAuthOptions,
  GoogleTokenSource,
  ReconnectRequiredError,
} from "./drive/oauth.ts";

export const GOOGLE_API_BASE_URL = "https://www.googleapis.com";
export const FOLDER_MIME = "application/vnd.google-apps.folder";
/** Every chunk but the last must be a multiple of this. */
export const DRIVE_CHUNK_GRANULARITY = 256 * 1024;
const MiB = 1024 * 1024;
/** Times a file starts over in a new session (the old one expired) before the attempt gives up. */
const MAX_RESTARTS = 3;

export interface DriveSinkOptions {
  /** OAuth settings, or a token source shared with other sinks of the same profile. */
  oauth: GoogleOAuthOptions | GoogleTokenSource;
  /** Folder the job folder goes in (the profile's `rootFolderId`); default `root` (My Drive). */
  rootFolderId?: string | undefined;
  /** The job's folder: its target folder (`/`-separated, each name a Drive folder) or its id. */
  folder: string;
  /** Bytes per PUT; a multiple of 256 KiB (default 8 MiB). */
  chunkSize?: number;
  /** Default https://www.googleapis.com; tests point it at the local Drive double. */
  apiBaseUrl?: string;
  retry?: Partial<RetryPolicy>;
  /** The job's storage outage: transient failures wait within its limit instead of failing the job. */
  outage?: Outage | undefined;
  log: Pick<Logger, "warn" | "debug" | "info">;
  fetch?: typeof fetch;
}

/** The parts of a Drive file resource the sink asks for. */
export interface DriveFile {
  id: string;
  name: string;
  mimeType?: string;
  size?: string;
  md5Checksum?: string;
  createdTime?: string;
  webViewLink?: string;
}

const uploadedFields = "id,name,mimeType,size,md5Checksum,webViewLink,createdTime";

/** A string literal for Drive's `q` language. */
export function driveQuote(value: string): string {
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}

/** What a session said about itself: how many bytes it holds, or the finished file. */
type SessionState =
  | { kind: "partial"; committed: number }
  | { kind: "done"; file: DriveFile }
  | { kind: "gone" };

class SessionGoneError extends Error {
  constructor() {
    super("the upload session expired or no longer exists");
    this.name = "SessionGoneError";
  }
}

/** Bytes of the local file hashed in order; chunks re-sent after a failure are not hashed twice. */
class FileHasher {
  readonly #hash: Hash = createHash("md5");
  readonly #file: LocalFile;
  at = 0;
  constructor(file: LocalFile) {
    this.#file = file;
  }

  /** Feeds bytes read at `position`; only those past `at` count. */
  feed(piece: Buffer, position: number): void {
    if (position > this.at || position + piece.length <= this.at) return;
    this.#hash.update(piece.subarray(this.at - position));
    this.at = position + piece.length;
  }

  /** Reads and hashes the file up to `end`. */
  async catchUp(end: number): Promise<void> {
    if (this.at >= end) return;
    for await (const piece of readStream(this.#file, this.at, end)) this.feed(piece as Buffer, this.at);
  }

  hex(): string {
    return this.#hash.digest("hex");
  }
}

/** What an upload to Drive reports: the file, where to see it, and its md5. */
function resultOf(file: DriveFile, md5: string): UploadResult {
  return {
    cloudId: file.id,
    cloudUrl: file.webViewLink ?? `https://drive.google.com/file/d/${file.id}/view`,
    checksum: `md5:${md5}`,
  };
}

export class DriveSink implements Sink {
  readonly tokens: GoogleTokenSource;
  readonly #opts: DriveSinkOptions;
  readonly #api: string;
  readonly #chunk: number;
  readonly #retry: RetryPolicy;
  readonly #fetch: typeof fetch;
  readonly #drive: drive_v3.Drive;
  /** Folder ids by their names from the root folder down (JSON; `[]` is the root folder). */
  readonly #folders = new Map<string, Promise<string>>();

  constructor(opts: DriveSinkOptions) {
    this.#opts = opts;
    this.#api = (opts.apiBaseUrl ?? GOOGLE_API_BASE_URL).replace(/\/+$/, "");
    this.#chunk = opts.chunkSize ?? 8 * MiB;
    if (this.#chunk < DRIVE_CHUNK_GRANULARITY || this.#chunk % DRIVE_CHUNK_GRANULARITY !== 0)
      throw new Error(`Drive chunk size must be a multiple of ${DRIVE_CHUNK_GRANULARITY} bytes`);
    this.#retry = { ...defaultRetry, ...opts.retry };
    this.#fetch = opts.fetch ?? fetch;
    this.#drive = drive({ version: "v3", rootUrl: `${this.#api}/` });
    this.tokens =
      opts.oauth instanceof GoogleTokenSource
        ? opts.oauth
        : new GoogleTokenSource({ retry: this.#retry, log: opts.log, fetch: this.#fetch, ...opts.oauth });
  }

  // -- HTTP -----------------------------------------------------------------

  /**
   * One authorised request. A 401 refreshes the access token and tries once
   * more; a second 401 means the grant is gone.
   */
  async #request(
    url: string,
    init: { method: string; headers?: Record<string, string>; body?: () => RequestInit["body"] },
    signal: AbortSignal,
  ): Promise<Response> {
    for (let attempt = 1; ; attempt++) {
      const token = await this.tokens.token(signal);
      const response = await this.#fetch(url, {
        method: init.method,
        headers: { Authorization: `Bearer ${token}`, ...init.headers },
        ...(init.body ? { body: init.body(), duplex: "half" } : {}),
        redirect: "manual",
        signal,
      });
      if (response.status !== 401) return response;
      await response.body?.cancel();
      this.tokens.invalidate(token);
      if (attempt >= 2) throw new ReconnectRequiredError("Google Drive");
    }
  }

  /**
   * A Drive API call through googleapis, with our token (a 401 refreshes it
   * and tries once more; a second means the grant is gone), retried on
   * transient failures within the job's outage limit. googleapis' own
   * retries are off: ours honour the outage clock.
   */
  async #call<T>(
    what: string,
    run: (options: MethodOptions) => Promise<{ data: T }>,
    signal: AbortSignal,
  ): Promise<T> {
    return withRetry(
      async () => {
        for (let attempt = 1; ; attempt++) {
          const token = await this.tokens.token(signal);
          try {
            const response = await run({
              headers: { Authorization: `Bearer ${token}` },
              signal,
              retry: false,
              fetchImplementation: this.#fetch,
            });
            return response.data;
          } catch (error) {
            if (signal.aborted) throw signal.reason ?? error;
            const failure = googleErrorOf(error, `Drive ${what}`);
            if (!(failure instanceof GoogleApiError) || failure.status !== 401) throw failure;
            this.tokens.invalidate(token);
            if (attempt >= 2) throw new ReconnectRequiredError("Google Drive");
          }
        }
      },
      { policy: this.#retry, outage: this.#opts.outage, signal, what, log: this.#opts.log },
    );
  }

  // -- folders --------------------------------------------------------------

  async #findFolders(name: string, parent: string, signal: AbortSignal): Promise<DriveFile[]> {
    const q = `name = ${driveQuote(name)} and ${driveQuote(parent)} in parents and mimeType = '${FOLDER_MIME}' and trashed = false`;
    const found: DriveFile[] = [];
    let pageToken: string | undefined;
    do {
      const page = await this.#call(
        "files.list",
        (options) =>
          this.#drive.files.list(
            {
              q,
              fields: "nextPageToken,files(id,name,createdTime)",
              pageSize: 100,
              ...(pageToken ? { pageToken } : {}),
            },
            options,
          ),
        signal,
      );
      found.push(...((page.files ?? []) as DriveFile[]));
      pageToken = page.nextPageToken ?? undefined;
    } while (pageToken);
    return found;
  }

  /** The oldest of same-named folders: every worker settles on the same one. */
  static #oldest(files: DriveFile[]): DriveFile | undefined {
    return [...files].sort(
      (a, b) => (a.createdTime ?? "").localeCompare(b.createdTime ?? "") || a.id.localeCompare(b.id),
    )[0];
  }

  async #findOrCreateFolder(name: string, parent: string, signal: AbortSignal): Promise<string> {
    const existing = DriveSink.#oldest(await this.#findFolders(name, parent, signal));
    if (existing) return existing.id;
    const created = (await this.#call(
      "files.create",
      (options) =>
        this.#drive.files.create(
          { fields: "id,createdTime", requestBody: { name, mimeType: FOLDER_MIME, parents: [parent] } },
          options,
        ),
      signal,
    )) as DriveFile;
    // Another worker (or a retried request whose answer was lost) may have made
    // the same folder at the same moment: keep the oldest, drop ours if it lost.
    const winner = DriveSink.#oldest(await this.#findFolders(name, parent, signal)) ?? created;
    if (winner.id !== created.id) {
      await this.#call(
        "files.delete",
        (options) => this.#drive.files.delete({ fileId: created.id }, options),
        signal,
      ).catch((error: unknown) =>
        this.#opts.log.warn({ err: error, folder: name }, "could not remove a duplicate folder"),
      );
    }
    return winner.id;
  }

  /** The id of the folder at these names under the root folder, creating the path as needed. */
  #folder(names: string[], signal: AbortSignal): Promise<string> {
    if (names.length === 0) return Promise.resolve(this.#opts.rootFolderId ?? "root");
    // JSON, so a name can never pass for its separator.
    const key = JSON.stringify(names);
    let id = this.#folders.get(key);
    if (!id) {
      id = this.#folder(names.slice(0, -1), signal).then((parent) =>
        this.#findOrCreateFolder(names.at(-1)!, parent, signal),
      );
      // A failed lookup is not cached: the next file tries again.
      id.catch(() => this.#folders.delete(key));
      this.#folders.set(key, id);
    }
    return id;
  }

  /** The stored names of a torrent file (the job folder's, then its path's), or of the job folder alone. */
  #namesOf(path?: string): string[] {
    return storedPath(this.#opts.folder, path, destinationNameRules.gdrive);
  }

  // -- Sink -----------------------------------------------------------------

  async preflight(signal: AbortSignal): Promise<void> {
    const rootId = this.#opts.rootFolderId ?? "root";
    try {
      const root = await this.#call(
        "files.get",
        (options) => this.#drive.files.get({ fileId: rootId, fields: "id,mimeType,trashed" }, options),
        signal,
      );
      if (root.mimeType !== FOLDER_MIME || root.trashed)
        throw new PermanentJobError(
          "The Google Drive folder chosen for this destination is not a folder any more (or is in the trash). Pick another folder.",
        );
      await this.#folder(this.#namesOf(), signal);
    } catch (error) {
      this.#fail(error, signal);
    }
  }

  partSize(): number {
    return this.#chunk;
  }

  async upload(file: SinkFile, hooks: UploadHooks): Promise<UploadResult> {
    try {
      return await this.#upload(file, hooks);
    } catch (error) {
      this.#fail(error, hooks.signal);
    }
  }

  async abort(file: Pick<SinkFile, "path" | "uploadSession">): Promise<boolean> {
    if (!file.uploadSession) return true;
    try {
      const response = await this.#request(
        file.uploadSession,
        { method: "DELETE" },
        AbortSignal.timeout(10_000),
      );
      await response.body?.cancel();
      return true;
    } catch (error) {
      this.#opts.log.warn({ err: error, path: file.path }, "could not cancel a Drive upload session");
      // Drive drops an unfinished session by itself within a week; only an unreachable Drive is worth another try.
      return !isTransient(error);
    }
  }

  close(): void {
    this.#folders.clear();
  }

  /** Rethrows transient errors as they are; everything else as a PermanentJobError a person can read. */
  #fail(error: unknown, signal: AbortSignal): never {
    if (error instanceof PermanentJobError || signal.aborted || isTransient(error)) throw error;
    if (error instanceof GoogleApiError)
      throw new PermanentJobError(describeDriveError(error), { cause: error });
    throw error;
  }

  // -- upload ---------------------------------------------------------------

  async #upload(file: SinkFile, hooks: UploadHooks): Promise<UploadResult> {
    const names = this.#namesOf(file.path);
    const name = names.pop()!;
    const parent = await this.#folder(names, hooks.signal);
    let session = file.uploadSession;
    let mismatches = 0;
    // Bytes reported through onBytes: a session started over does not count its bytes twice.
    const progress = { reported: 0 };
    for (let restarts = 0; ; ) {
      const hasher = new FileHasher(file);
      let uploaded: DriveFile;
      try {
        let fresh = false;
        if (!session) {
          const existing = await this.#existing(name, parent, file, hooks);
          if (existing) {
            if (file.size > progress.reported) hooks.onBytes(file.size - progress.reported);
            return existing;
          }
          session = await this.#startSession(name, parent, file, hooks.signal);
          await hooks.onSession(session);
          fresh = true;
        }
        uploaded = await this.#send(session, fresh, file, hooks, hasher, progress);
      } catch (error) {
        if (!(error instanceof SessionGoneError) || ++restarts > MAX_RESTARTS) throw error;
        this.#opts.log.info({ path: file.path }, "Drive upload session is gone; starting the file over");
        await hooks.clearSession();
        session = null;
        continue;
      }
      if (hasher.at < file.size) {
        await hooks.ready(hasher.at, file.size);
        await hasher.catchUp(file.size);
      }
      const md5 = hasher.hex();
      if (uploaded.md5Checksum === md5 && Number(uploaded.size ?? -1) === file.size) {
        const twin = file.ring ? await this.#olderTwin(name, parent, uploaded, hooks) : undefined;
        if (!twin) return resultOf(uploaded, md5);
        // Sent again because it could not be compared before: the copy already
        // there stays. Removing the new one is housekeeping: if that fails, the
        // file is stored all the same, twice.
        try {
          await this.#call(
            "files.delete",
            (options) => this.#drive.files.delete({ fileId: uploaded.id }, options),
            hooks.signal,
          );
        } catch (error) {
          if (hooks.signal.aborted) throw error;
          this.#opts.log.warn({ err: error, path: file.path }, "could not remove the second copy on Drive");
          return resultOf(uploaded, md5);
        }
        this.#opts.log.info({ path: file.path, id: twin.id }, "already on Drive; the new copy was removed");
        return resultOf(twin, md5);
      }
      // Drive stored something else: drop it and send the file once more.
      this.#opts.log.warn(
        { path: file.path, local: md5, drive: uploaded.md5Checksum, size: uploaded.size },
        "Drive's copy does not match the local file",
      );
      await this.#call(
        "files.delete",
        (options) => this.#drive.files.delete({ fileId: uploaded.id }, options),
        hooks.signal,
      );
      await hooks.clearSession();
      session = null;
      if (++mismatches > 1)
        throw new PermanentJobError(
          `Google Drive stored "${file.path}" with a different checksum than the downloaded file, twice.`,
        );
    }
  }

  /** Finished files named `name` in `parent` of `size` bytes, with their md5. */
  async #sameSized(name: string, parent: string, size: number, signal: AbortSignal): Promise<DriveFile[]> {
    const q = `name = ${driveQuote(name)} and ${driveQuote(parent)} in parents and mimeType != '${FOLDER_MIME}' and trashed = false`;
    const page = await this.#call(
      "files.list",
      (options) => this.#drive.files.list({ q, fields: `files(${uploadedFields})`, pageSize: 100 }, options),
      signal,
    );
    return ((page.files ?? []) as DriveFile[]).filter((f) => Number(f.size ?? -1) === size && f.md5Checksum);
  }

  /** A finished file of the same name, size and md5 already in the folder (from an earlier attempt). */
  async #existing(
    name: string,
    parent: string,
    file: SinkFile,
    hooks: UploadHooks,
  ): Promise<UploadResult | undefined> {
    // A file streaming through a ring is never on disk whole, so it cannot be
    // compared before it is sent: #olderTwin compares it after.
    if (file.ring) return undefined;
    const candidates = await this.#sameSized(name, parent, file.size, hooks.signal);
    if (candidates.length === 0) return undefined;
    await hooks.ready(0, file.size);
    const hasher = new FileHasher(file);
    await hasher.catchUp(file.size);
    const md5 = hasher.hex();
    const match = candidates.find((f) => f.md5Checksum === md5);
    if (!match) return undefined;
    this.#opts.log.debug({ path: file.path, id: match.id }, "already on Drive");
    return resultOf(match, md5);
  }

  /**
   * Another copy of `uploaded` (same name, size and md5) made before it, such
   * as an earlier attempt's upload whose last answer was lost. The oldest
   * copy is the one kept, so two uploads that finish together agree on it.
   */
  async #olderTwin(
    name: string,
    parent: string,
    uploaded: DriveFile,
    hooks: UploadHooks,
  ): Promise<DriveFile | undefined> {
    const copies = (await this.#sameSized(name, parent, Number(uploaded.size), hooks.signal)).filter(
      (f) => f.md5Checksum === uploaded.md5Checksum,
    );
    const oldest = DriveSink.#oldest([uploaded, ...copies.filter((f) => f.id !== uploaded.id)]);
    return oldest && oldest.id !== uploaded.id ? oldest : undefined;
  }

  async #startSession(name: string, parent: string, file: SinkFile, signal: AbortSignal): Promise<string> {
    const url = `${this.#api}/upload/drive/v3/files?${new URLSearchParams({ uploadType: "resumable", fields: uploadedFields })}`;
    const type = contentTypeFor(name);
    return withRetry(
      async () => {
        const response = await this.#request(
          url,
          {
            method: "POST",
            headers: {
              "Content-Type": "application/json; charset=UTF-8",
              "X-Upload-Content-Type": type,
              "X-Upload-Content-Length": String(file.size),
            },
            body: () => JSON.stringify({ name, parents: [parent], mimeType: type }),
          },
          signal,
        );
        if (!response.ok) throw await GoogleApiError.from(response, "Drive: start a resumable upload");
        await response.body?.cancel();
        const location = response.headers.get("location");
        if (!location) throw new Error("Drive started an upload session without a Location");
        return location;
      },
      {
        policy: this.#retry,
        outage: this.#opts.outage,
        signal,
        what: `start upload ${name}`,
        log: this.#opts.log,
      },
    );
  }

  /** Reads a session's answer: 308 + Range, 200/201 + file, 404/410 gone; anything else throws. */
  async #state(response: Response, what: string): Promise<SessionState> {
    if (response.status === 200 || response.status === 201)
      return { kind: "done", file: (await response.json()) as DriveFile };
    if (response.status === 308) {
      await response.body?.cancel();
      const range = /^bytes=0-(\d+)$/.exec(response.headers.get("range") ?? "");
      return { kind: "partial", committed: range ? Number(range[1]) + 1 : 0 };
    }
    if (response.status === 404 || response.status === 410) {
      await response.body?.cancel();
      return { kind: "gone" };
    }
    throw await GoogleApiError.from(response, what);
  }

  /** Bytes [start, end) of a stored file: `alt=media` with a Range (seeding from storage). */
  async read(cloudId: string, start: number, end: number, signal: AbortSignal): Promise<Uint8Array> {
    const url = `${this.#api}/drive/v3/files/${encodeURIComponent(cloudId)}?alt=media`;
    const bytes = await withRetry(
      async () => {
        const response = await this.#request(
          url,
          { method: "GET", headers: { Range: `bytes=${start}-${end - 1}` } },
          signal,
        );
        if (response.status !== 206 && response.status !== 200)
          throw await GoogleApiError.from(response, "Drive: read back");
        const body = new Uint8Array(await response.arrayBuffer());
        // A server that ignores Range answers 200 with everything: take the range from it.
        return response.status === 200 ? body.subarray(start, end) : body;
      },
      { policy: this.#retry, outage: this.#opts.outage, signal, what: "read back", log: this.#opts.log },
    );
    return checkReadLength(bytes, start, end, "Drive: read back");
  }

  /** Asks a session how much it holds: an empty PUT with `Content-Range: bytes *\/size`. */
  async #query(session: string, size: number, signal: AbortSignal): Promise<SessionState> {
    return withRetry(
      async () => {
        const response = await this.#request(
          session,
          { method: "PUT", headers: { "Content-Range": `bytes */${size}`, "Content-Length": "0" } },
          signal,
        );
        return this.#state(response, "Drive: upload status");
      },
      { policy: this.#retry, outage: this.#opts.outage, signal, what: "upload status", log: this.#opts.log },
    );
  }

  /** Sends the file through `session`, resuming where it stands; returns the finished file. */
  async #send(
    session: string,
    fresh: boolean,
    file: SinkFile,
    hooks: UploadHooks,
    hasher: FileHasher,
    progress: { reported: number },
  ): Promise<DriveFile> {
    const { signal } = hooks;
    // A session from an earlier attempt may hold some bytes already, or the whole file.
    let state: SessionState = fresh
      ? { kind: "partial", committed: 0 }
      : await this.#query(session, file.size, signal);
    let confirmed = 0;
    const confirm = (committed: number) => {
      confirmed = Math.max(confirmed, committed);
      if (committed > progress.reported) {
        hooks.onBytes(committed - progress.reported);
        progress.reported = committed;
      }
    };
    const { free, hashUpTo } = storedInOrder(hooks, hasher, this.#chunk, this.#opts.log, file.path);
    let failures = 0;
    for (;;) {
      if (state.kind === "done") {
        confirm(file.size);
        await hashUpTo(file.size, file.size);
        return state.file;
      }
      if (state.kind === "gone") throw new SessionGoneError();
      const offset = state.committed;
      if (offset > confirmed) failures = 0;
      confirm(offset);
      signal.throwIfAborted();
      const end = Math.min(offset + this.#chunk, file.size);
      // Resuming: hash what the session already holds first. (Drive checks a
      // file by the md5 of all of it, so a resumed file's stored bytes are
      // fetched again to be hashed: the one case where stored bytes are.)
      await hashUpTo(offset, offset);
      await free(offset);
      await hooks.ready(offset, end);
      try {
        state = await this.#put(session, file, offset, end, hasher, hooks);
        this.#opts.outage?.ok();
      } catch (error) {
        if (signal.aborted) throw signal.reason ?? error;
        const gap =
          error instanceof GoogleApiError &&
          error.status === 400 &&
          /exceeds already uploaded size/.test(error.message);
        if (!gap && !isTransient(error)) throw error;
        if (!gap) {
          failures++;
          await pause(error, failures, {
            policy: this.#retry,
            signal,
            what: `upload chunk at ${offset} of ${file.path}`,
            log: this.#opts.log,
            outage: this.#opts.outage,
          });
        }
        // The session may hold some, all or none of what was sent: ask it.
        state = await this.#query(session, file.size, signal);
      }
    }
  }

  async #put(
    session: string,
    file: SinkFile,
    start: number,
    end: number,
    hasher: FileHasher,
    hooks: UploadHooks,
  ): Promise<SessionState> {
    const length = end - start;
    const headers: Record<string, string> = {
      "Content-Length": String(length),
      "Content-Range": length === 0 ? `bytes */${file.size}` : `bytes ${start}-${end - 1}/${file.size}`,
    };
    const response = await this.#request(
      session,
      {
        method: "PUT",
        headers,
        ...(length === 0
          ? {}
          : {
              body: () => {
                let position = start;
                const tap = new Transform({
                  transform(piece: Buffer, _encoding, done: TransformCallback) {
                    hasher.feed(piece, position);
                    position += piece.length;
                    hooks.onSent?.(piece.length);
                    done(null, piece);
                  },
                });
                const source = readStream(file, start, end);
                source.on("error", (error) => tap.destroy(error));
                return Readable.toWeb(source.pipe(tap)) as ReadableStream<Uint8Array>;
              },
            }),
      },
      hooks.signal,
    );
    return this.#state(response, "Drive: upload chunk");
  }
}

/** A sentence for the user about a Drive error no retry fixes. */
export function describeDriveError(error: GoogleApiError): string {
  switch (error.reason) {
    case "storageQuotaExceeded":
    case "quotaExceeded":
      return "Google Drive is full: the account's storage quota is used up. Free some space and retry.";
    case "insufficientPermissions":
    case "insufficientFilePermissions":
    case "appNotAuthorizedToFile":
    case "forbidden":
      return "TorreClou is not allowed to write to the chosen Google Drive folder. Reconnect Google Drive or pick another folder.";
    case "notFound":
      return "The Google Drive folder chosen for this destination no longer exists. Pick another folder and retry.";
    case "dailyLimitExceeded":
    case "uploadLimitExceeded":
      return "Google Drive refused more uploads today (daily upload limit). Retry tomorrow.";
  }
  if (error.status === 404)
    return "The Google Drive folder chosen for this destination no longer exists. Pick another folder and retry.";
  return `Google Drive refused the upload (${error.reason || error.status}): ${error.message}`;
}
