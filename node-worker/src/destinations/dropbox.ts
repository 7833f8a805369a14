// Dropbox on the worker, over Dropbox's documented upload-session protocol
// (https://www.dropbox.com/developers/documentation/http/documentation#files-upload_session-start)
// with plain fetch: the `dropbox` SDK holds no state worth keeping across a
// crash, and a session here must outlive the worker process. The session id
// is stored before any byte is sent. Dropbox has no "how much do you hold"
// call; its documented answer to an append at the wrong offset,
// `incorrect_offset` with `correct_offset`, is the query: a resumed upload
// sends an empty append at offset 0 and learns where the session stands
// without sending a stored byte again.
//
// Files go to the app's folder (Apps/<app name>), in the job's folder; the
// commit creates the folders of its path. The stored file's content_hash is
// checked against the local file. Names pass through dropboxNames.
import { Readable, Transform, type TransformCallback } from "node:stream";
import { dropboxNames } from "@torreclou/contracts";
import type { Logger } from "pino";
import {
  PermanentJobError,
  ReconnectRequiredError,
  type Sink,
  type SinkFile,
  storedPath,
  type UploadHooks,
  type UploadResult,
} from "../sinks/index.ts";
import { readStream } from "../sinks/local.ts";
import type { Outage } from "../sinks/outage.ts";
import { storedInOrder } from "../sinks/stored.ts";
import { openGrant } from "./grant.ts";
import { DropboxContentHash, FileHash, hashFile } from "./hashes.ts";
import { defaultRetry, isTransient, ProviderError, pause, type RetryPolicy, withRetry } from "./http.ts";
import { OAuthTokenSource } from "./oauth.ts";
import type { WorkerDestination } from "./types.ts";

export const DROPBOX_API_BASE_URL = "https://api.dropboxapi.com";
export const DROPBOX_CONTENT_BASE_URL = "https://content.dropboxapi.com";
export const DROPBOX_TOKEN_URL = "https://api.dropboxapi.com/oauth2/token";
const LABEL = "Dropbox";
const MiB = 1024 * 1024;
/** Dropbox's limit per upload request. */
const MAX_CHUNK = 150 * MiB;
const MAX_RESTARTS = 3;

export interface DropboxSinkOptions {
  tokens: OAuthTokenSource;
  folder: string;
  /** Bytes per append (default 8 MiB, at most 150 MiB). */
  chunkSize?: number;
  apiBaseUrl?: string;
  contentBaseUrl?: string;
  retry?: Partial<RetryPolicy>;
  outage?: Outage | undefined;
  log: Pick<Logger, "warn" | "debug" | "info">;
  fetch?: typeof fetch;
}

/** The parts of a FileMetadata the sink reads. */
export interface DropboxFile {
  ".tag"?: string;
  id: string;
  name: string;
  path_display?: string;
  size?: number;
  content_hash?: string;
}

/**
 * JSON for the Dropbox-API-Arg header, which must be ASCII: everything past
 * U+007F escaped as \uXXXX, as Dropbox documents.
 */
export function headerJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[\u007f-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

class SessionGoneError extends Error {
  constructor() {
    super("the upload session expired or no longer exists");
    this.name = "SessionGoneError";
  }
}

export class DropboxSink implements Sink {
  readonly tokens: OAuthTokenSource;
  readonly #opts: DropboxSinkOptions;
  readonly #api: string;
  readonly #content: string;
  readonly #chunk: number;
  readonly #retry: RetryPolicy;
  readonly #fetch: typeof fetch;

  constructor(opts: DropboxSinkOptions) {
    this.#opts = opts;
    this.tokens = opts.tokens;
    this.#api = (opts.apiBaseUrl ?? DROPBOX_API_BASE_URL).replace(/\/+$/, "");
    this.#content = (opts.contentBaseUrl ?? DROPBOX_CONTENT_BASE_URL).replace(/\/+$/, "");
    this.#chunk = opts.chunkSize ?? 8 * MiB;
    if (this.#chunk < 1 || this.#chunk > MAX_CHUNK)
      throw new Error(`Dropbox chunk size must be 1 byte to 150 MiB`);
    this.#retry = { ...defaultRetry, ...opts.retry };
    this.#fetch = opts.fetch ?? fetch;
  }

  #retryOpts(signal: AbortSignal, what: string) {
    return {
      policy: this.#retry,
      outage: this.#opts.outage,
      signal,
      what,
      where: LABEL,
      log: this.#opts.log,
    };
  }

  /**
   * One authorised call. RPC calls carry JSON in the body; content calls carry
   * their argument in Dropbox-API-Arg and bytes in the body. A 401 refreshes
   * the token and tries once more; a second means the grant is gone.
   */
  async #call(
    kind: "rpc" | "content",
    path: string,
    arg: unknown,
    body: (() => RequestInit["body"]) | undefined,
    signal: AbortSignal,
  ): Promise<Response> {
    for (let attempt = 1; ; attempt++) {
      const token = await this.tokens.token(signal);
      const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
      let payload: RequestInit["body"];
      if (kind === "rpc") {
        headers["Content-Type"] = "application/json";
        payload = arg === undefined ? "null" : JSON.stringify(arg);
      } else {
        headers["Content-Type"] = "application/octet-stream";
        headers["Dropbox-API-Arg"] = headerJson(arg);
        payload = body ? body() : new Uint8Array(0);
      }
      const response = await this.#fetch(`${kind === "rpc" ? this.#api : this.#content}${path}`, {
        method: "POST",
        headers,
        body: payload,
        ...(payload instanceof ReadableStream ? { duplex: "half" } : {}),
        redirect: "manual",
        signal,
      } as RequestInit);
      if (response.status !== 401) return response;
      const error = await ProviderError.from(response, `Dropbox ${path}`);
      this.tokens.invalidate(token);
      if (attempt >= 2 || !/expired_access_token|invalid_access_token/.test(error.code)) {
        throw new ReconnectRequiredError(LABEL, { cause: error });
      }
    }
  }

  async #rpc<T>(path: string, arg: unknown, signal: AbortSignal): Promise<T> {
    return withRetry(
      async () => {
        const response = await this.#call("rpc", path, arg, undefined, signal);
        if (!response.ok) throw await ProviderError.from(response, `Dropbox ${path}`);
        return (await response.json()) as T;
      },
      this.#retryOpts(signal, path),
    );
  }

  async preflight(signal: AbortSignal): Promise<void> {
    try {
      const usage = await this.#rpc<{ used?: number; allocation?: { allocated?: number } }>(
        "/2/users/get_space_usage",
        undefined,
        signal,
      );
      const allocated = usage.allocation?.allocated;
      if (typeof allocated === "number" && typeof usage.used === "number" && usage.used >= allocated)
        throw new PermanentJobError(
          "Dropbox is full: the account's storage is used up. Free some space and retry.",
        );
      storedPath(this.#opts.folder, undefined, dropboxNames);
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

  /** Dropbox drops an unfinished session by itself after 7 days and offers no call to end one sooner. */
  async abort(): Promise<boolean> {
    return true;
  }

  close(): void {}

  #fail(error: unknown, signal: AbortSignal): never {
    if (error instanceof PermanentJobError || signal.aborted || isTransient(error)) throw error;
    if (error instanceof ProviderError)
      throw new PermanentJobError(describeDropboxError(error), { cause: error });
    throw error;
  }

  async #upload(file: SinkFile, hooks: UploadHooks): Promise<UploadResult> {
    const path = `/${storedPath(this.#opts.folder, file.path, dropboxNames).join("/")}`;
    let session = file.uploadSession;
    let mismatches = 0;
    const progress = { reported: 0 };
    for (let restarts = 0; ; ) {
      const hash = new FileHash(file, new DropboxContentHash());
      let stored: DropboxFile;
      try {
        let offset = 0;
        if (!session) {
          const existing = await this.#existing(path, file, hooks);
          if (existing) {
            if (file.size > progress.reported) hooks.onBytes(file.size - progress.reported);
            return existing;
          }
          session = await this.#start(hooks.signal);
          await hooks.onSession(session);
        } else {
          offset = await this.#held(session, hooks.signal);
        }
        stored = await this.#send(session, offset, path, file, hooks, hash, progress);
      } catch (error) {
        if (!(error instanceof SessionGoneError) || ++restarts > MAX_RESTARTS) throw error;
        this.#opts.log.info({ path: file.path }, "Dropbox upload session is gone; starting the file over");
        await hooks.clearSession();
        session = null;
        continue;
      }
      if (hash.at < file.size) {
        await hooks.ready(hash.at, file.size);
        await hash.catchUp(file.size);
      }
      const local = hash.digest();
      if (stored.content_hash === local && stored.size === file.size) {
        return { cloudId: stored.id, checksum: `dropbox:${local}` };
      }
      this.#opts.log.warn(
        { path: file.path, local, dropbox: stored.content_hash, size: stored.size },
        "Dropbox's copy does not match the local file",
      );
      await this.#rpc("/2/files/delete_v2", { path: stored.id }, hooks.signal);
      await hooks.clearSession();
      session = null;
      if (++mismatches > 1)
        throw new PermanentJobError(
          `Dropbox stored "${file.path}" with a different content hash than the downloaded file, twice.`,
        );
    }
  }

  /** The same file already at its path (an earlier attempt whose last answer was lost): same size and content hash. */
  async #existing(path: string, file: SinkFile, hooks: UploadHooks): Promise<UploadResult | undefined> {
    const found = await withRetry(
      async () => {
        const response = await this.#call("rpc", "/2/files/get_metadata", { path }, undefined, hooks.signal);
        if (response.status === 409) {
          const error = await ProviderError.from(response, "Dropbox /2/files/get_metadata");
          if (error.code.startsWith("path/not_found")) return undefined;
          throw error;
        }
        if (!response.ok) throw await ProviderError.from(response, "Dropbox /2/files/get_metadata");
        return (await response.json()) as DropboxFile;
      },
      this.#retryOpts(hooks.signal, "get_metadata"),
    );
    // A file streaming through a ring is never on disk whole, so it cannot be
    // compared: it is sent again, over the copy there.
    if (found?.[".tag"] !== "file" || found.size !== file.size || !found.content_hash || file.ring)
      return undefined;
    await hooks.ready(0, file.size);
    const local = await hashFile(file, file.size, new DropboxContentHash());
    if (local !== found.content_hash) return undefined;
    this.#opts.log.debug({ path: file.path, id: found.id }, "already on Dropbox");
    return { cloudId: found.id, checksum: `dropbox:${local}` };
  }

  async #start(signal: AbortSignal): Promise<string> {
    return withRetry(
      async () => {
        const response = await this.#call(
          "content",
          "/2/files/upload_session/start",
          { close: false },
          undefined,
          signal,
        );
        if (!response.ok) throw await ProviderError.from(response, "Dropbox: start an upload session");
        const body = (await response.json()) as { session_id?: unknown };
        if (typeof body.session_id !== "string")
          throw new Error("Dropbox started an upload session without an id");
        return body.session_id;
      },
      this.#retryOpts(signal, "upload_session/start"),
    );
  }

  /**
   * How many bytes a session holds: an empty append at offset 0, which
   * Dropbox answers `incorrect_offset` with the `correct_offset` (or accepts,
   * when the session holds nothing). Throws SessionGoneError for a session
   * that expired, was finished or never existed.
   */
  async #held(session: string, signal: AbortSignal): Promise<number> {
    return withRetry(
      async () => {
        const response = await this.#call(
          "content",
          "/2/files/upload_session/append_v2",
          { cursor: { session_id: session, offset: 0 }, close: false },
          undefined,
          signal,
        );
        if (response.ok) {
          await response.body?.cancel();
          return 0;
        }
        return this.#offsetFrom(response);
      },
      this.#retryOpts(signal, "upload status"),
    );
  }

  /** The session's offset from an `incorrect_offset` answer; SessionGoneError for a lookup failure; the error otherwise. */
  async #offsetFrom(response: Response): Promise<number> {
    const text = await response.text().catch(() => "");
    if (response.status === 409) {
      try {
        const body = JSON.parse(text) as { error_summary?: string; error?: { correct_offset?: unknown } };
        const summary = body.error_summary ?? "";
        if (summary.startsWith("incorrect_offset") && typeof body.error?.correct_offset === "number")
          return body.error.correct_offset;
        if (/^(not_found|closed|not_closed|too_large)/.test(summary)) throw new SessionGoneError();
      } catch (error) {
        if (error instanceof SessionGoneError) throw error;
      }
    }
    throw await ProviderError.from(
      new Response(text, { status: response.status, headers: response.headers }),
      "Dropbox: upload chunk",
    );
  }

  async #send(
    session: string,
    start: number,
    path: string,
    file: SinkFile,
    hooks: UploadHooks,
    hash: FileHash,
    progress: { reported: number },
  ): Promise<DropboxFile> {
    const { signal } = hooks;
    const { free, hashUpTo } = storedInOrder(hooks, hash, this.#chunk, this.#opts.log, file.path);
    let offset = start;
    let failures = 0;
    const confirm = (held: number) => {
      if (held > progress.reported) {
        hooks.onBytes(held - progress.reported);
        progress.reported = held;
      }
    };
    for (;;) {
      confirm(offset);
      signal.throwIfAborted();
      const last = offset >= file.size;
      const end = Math.min(offset + this.#chunk, file.size);
      await hashUpTo(offset, offset);
      await free(offset);
      await hooks.ready(offset, end);
      try {
        if (last) return await this.#finish(session, offset, path, signal);
        const response = await this.#call(
          "content",
          "/2/files/upload_session/append_v2",
          { cursor: { session_id: session, offset }, close: false },
          () => this.#body(file, offset, end, hash, hooks),
          signal,
        );
        if (response.ok) {
          await response.body?.cancel();
          if (end > offset) failures = 0;
          offset = end;
          this.#opts.outage?.ok();
          continue;
        }
        // Dropbox says where the session stands (part of a dropped chunk may have been kept).
        offset = await this.#offsetFrom(response);
      } catch (error) {
        if (signal.aborted) throw signal.reason ?? error;
        if (error instanceof SessionGoneError || !isTransient(error)) throw error;
        failures++;
        this.#opts.log.warn(
          { err: error, path: file.path, offset, attempt: failures },
          "Dropbox chunk failed; asking the session where it stands",
        );
        await pause(error, failures, this.#retryOpts(signal, "upload chunk"));
        offset = await this.#held(session, signal);
      }
    }
  }

  async #finish(session: string, offset: number, path: string, signal: AbortSignal): Promise<DropboxFile> {
    const response = await this.#call(
      "content",
      "/2/files/upload_session/finish",
      {
        cursor: { session_id: session, offset },
        // Overwrite: a copy an earlier attempt left unchecked under the name is replaced, never renamed beside it.
        commit: { path, mode: "overwrite", autorename: false, mute: true, strict_conflict: false },
      },
      undefined,
      signal,
    );
    if (response.ok) {
      this.#opts.outage?.ok();
      return (await response.json()) as DropboxFile;
    }
    if (response.status === 409) {
      const text = await response.text();
      const replay = new Response(text, { status: 409, headers: response.headers });
      if (/^lookup_failed\/(not_found|closed)/.test(text.match(/"error_summary":\s*"([^"]*)"/)?.[1] ?? ""))
        throw new SessionGoneError();
      throw await ProviderError.from(replay, "Dropbox: finish the upload");
    }
    throw await ProviderError.from(response, "Dropbox: finish the upload");
  }

  #body(file: SinkFile, start: number, end: number, hash: FileHash, hooks: UploadHooks): RequestInit["body"] {
    if (end <= start) return new Uint8Array(0);
    let position = start;
    const tap = new Transform({
      transform(piece: Buffer, _encoding, done: TransformCallback) {
        hash.feed(piece, position);
        position += piece.length;
        hooks.onSent?.(piece.length);
        done(null, piece);
      },
    });
    const source = readStream(file, start, end);
    source.on("error", (error) => tap.destroy(error));
    return Readable.toWeb(source.pipe(tap)) as ReadableStream<Uint8Array>;
  }
}

/** A sentence for the user about a Dropbox error no retry fixes. */
export function describeDropboxError(error: ProviderError): string {
  const code = error.code;
  if (/insufficient_space/.test(code))
    return "Dropbox is full: the account's storage is used up. Free some space and retry.";
  if (/disallowed_name|malformed_path/.test(code)) return `Dropbox refused a file name (${code}).`;
  if (/no_write_permission|team_folder|insufficient_quota/.test(code))
    return `Dropbox refused to store the file here (${code}).`;
  if (/conflict/.test(code))
    return "Dropbox already holds a folder where a file of this job goes. Move it away and retry.";
  if (/too_many_write_operations/.test(code))
    return `Dropbox is busy with other writes to this account (${code}).`;
  return `Dropbox refused the upload (${code || error.status}): ${error.message}`;
}

export const dropbox: WorkerDestination<"dropbox"> = {
  kind: "dropbox",
  label: LABEL,
  names: dropboxNames,
  async open(destination, ctx) {
    const { config, outage, folder, log } = ctx;
    let tokens: OAuthTokenSource | undefined;
    const grant = await openGrant(destination, LABEL, ctx, () => tokens?.refreshToken ?? "");
    const { DROPBOX_APP_KEY: clientId, DROPBOX_APP_SECRET: clientSecret } = config;
    if (!clientId || !clientSecret) {
      throw new PermanentJobError(
        "This worker cannot upload to Dropbox: its operator has not set DROPBOX_APP_KEY and DROPBOX_APP_SECRET.",
      );
    }
    const source: OAuthTokenSource = new OAuthTokenSource({
      label: LABEL,
      clientId,
      clientSecret,
      refreshToken: grant.secret.refreshToken,
      tokenUrl: config.DROPBOX_OAUTH_TOKEN_URL,
      accessToken: grant.stored,
      onTokens: (answer) => grant.save(source.refreshToken, answer),
      log,
    });
    tokens = source;
    const sink = new DropboxSink({
      tokens: source,
      folder,
      chunkSize: config.WORKER_DROPBOX_CHUNK_BYTES,
      apiBaseUrl: config.DROPBOX_API_BASE_URL,
      contentBaseUrl: config.DROPBOX_CONTENT_BASE_URL,
      outage,
      log,
    });
    return { sink, needsReconnect: () => grant.needsReconnect() };
  },
};
