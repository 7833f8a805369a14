// OneDrive on the worker, over Microsoft Graph's documented upload-session
// protocol (https://learn.microsoft.com/graph/api/driveitem-createuploadsession)
// with plain fetch; @microsoft/microsoft-graph-client's LargeFileUploadTask
// keeps its session in memory only, and a session here must outlive the
// worker process (its URL is stored before any byte is sent, so another
// attempt asks it for `nextExpectedRanges` and goes on from there).
//
// Files go under the app's folder (`/me/drive/special/approot`, Apps/<app>),
// in the job's folder; Graph creates the folders of a path as it goes.
// Every chunk but the last is a multiple of 320 KiB. The stored item's
// quickXorHash is checked against the local file. Names pass through
// oneDriveNames (characters OneDrive forbids replaced by look-alikes).
import { Readable, Transform, type TransformCallback } from "node:stream";
import { oneDriveNames } from "@torreclou/contracts";
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
import { FileHash, hashFile, QuickXorHash } from "./hashes.ts";
import { defaultRetry, isTransient, ProviderError, pause, type RetryPolicy, withRetry } from "./http.ts";
import { OAuthTokenSource } from "./oauth.ts";
import type { WorkerDestination } from "./types.ts";

export const GRAPH_API_BASE_URL = "https://graph.microsoft.com";
export const MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/common/oauth2/v2.0/token";
/** Every chunk but the last must be a multiple of this. */
export const ONEDRIVE_CHUNK_GRANULARITY = 320 * 1024;
const LABEL = "OneDrive";
/** Times a file starts over in a new session (the old one expired) before the attempt gives up. */
const MAX_RESTARTS = 3;

export interface OneDriveSinkOptions {
  tokens: OAuthTokenSource;
  /** The job's folder (`/`-separated) or its id. */
  folder: string;
  /** Bytes per PUT; a multiple of 320 KiB (default 10 MiB). */
  chunkSize?: number;
  /** Default https://graph.microsoft.com; tests point it at the local Graph double. */
  apiBaseUrl?: string;
  retry?: Partial<RetryPolicy>;
  outage?: Outage | undefined;
  log: Pick<Logger, "warn" | "debug" | "info">;
  fetch?: typeof fetch;
}

/** The parts of a driveItem the sink reads. */
export interface DriveItem {
  id: string;
  name: string;
  size?: number;
  webUrl?: string;
  file?: { hashes?: { quickXorHash?: string } };
  folder?: unknown;
}

type SessionState = { kind: "partial"; next: number } | { kind: "done"; item: DriveItem } | { kind: "gone" };

class SessionGoneError extends Error {
  constructor() {
    super("the upload session expired or no longer exists");
    this.name = "SessionGoneError";
  }
}

export class OneDriveSink implements Sink {
  readonly tokens: OAuthTokenSource;
  readonly #opts: OneDriveSinkOptions;
  readonly #api: string;
  readonly #chunk: number;
  readonly #retry: RetryPolicy;
  readonly #fetch: typeof fetch;

  constructor(opts: OneDriveSinkOptions) {
    this.#opts = opts;
    this.tokens = opts.tokens;
    this.#api = `${(opts.apiBaseUrl ?? GRAPH_API_BASE_URL).replace(/\/+$/, "")}/v1.0`;
    this.#chunk = opts.chunkSize ?? 32 * ONEDRIVE_CHUNK_GRANULARITY;
    if (this.#chunk < ONEDRIVE_CHUNK_GRANULARITY || this.#chunk % ONEDRIVE_CHUNK_GRANULARITY !== 0)
      throw new Error(`OneDrive chunk size must be a multiple of ${ONEDRIVE_CHUNK_GRANULARITY} bytes`);
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

  /** One authorised Graph request; a 401 refreshes the token and tries once more, a second means the grant is gone. */
  async #graph(method: string, path: string, body: unknown, signal: AbortSignal): Promise<Response> {
    for (let attempt = 1; ; attempt++) {
      const token = await this.tokens.token(signal);
      const response = await this.#fetch(`${this.#api}${path}`, {
        method,
        headers: {
          Authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        redirect: "manual",
        signal,
      });
      if (response.status !== 401) return response;
      await response.body?.cancel();
      this.tokens.invalidate(token);
      if (attempt >= 2) throw new ReconnectRequiredError(LABEL);
    }
  }

  async #json<T>(method: string, path: string, body: unknown, signal: AbortSignal): Promise<T | undefined> {
    return withRetry(
      async () => {
        const response = await this.#graph(method, path, body, signal);
        if (response.status === 404) {
          await response.body?.cancel();
          return undefined;
        }
        if (!response.ok)
          throw await ProviderError.from(response, `OneDrive ${method} ${path.split("?")[0]}`);
        if (response.status === 204) return undefined;
        return (await response.json()) as T;
      },
      this.#retryOpts(signal, `${method} ${path.split(":")[0]}`),
    );
  }

  /** The Graph address of a stored path under the app's folder. */
  #itemPath(names: string[]): string {
    return `/me/drive/special/approot:/${names.map(encodeURIComponent).join("/")}:`;
  }

  async preflight(signal: AbortSignal): Promise<void> {
    try {
      // Opening the app's folder creates it on first use.
      const root = await this.#json<DriveItem>("GET", "/me/drive/special/approot", undefined, signal);
      if (!root)
        throw new PermanentJobError("OneDrive did not give TorreClou its app folder. Reconnect OneDrive.");
      storedPath(this.#opts.folder, undefined, oneDriveNames);
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
      // The upload URL is the credential: no Authorization header, as Graph asks.
      const response = await this.#fetch(file.uploadSession, {
        method: "DELETE",
        signal: AbortSignal.timeout(10_000),
      });
      await response.body?.cancel();
      if (response.ok || response.status === 404) return true;
      if (response.status >= 500 || response.status === 429) return false;
      return true;
    } catch (error) {
      this.#opts.log.warn({ err: error, path: file.path }, "could not cancel a OneDrive upload session");
      // Graph drops an unfinished session by itself; only an unreachable Graph is worth another try.
      return !isTransient(error);
    }
  }

  close(): void {}

  #fail(error: unknown, signal: AbortSignal): never {
    if (error instanceof PermanentJobError || signal.aborted || isTransient(error)) throw error;
    if (error instanceof ProviderError)
      throw new PermanentJobError(describeOneDriveError(error), { cause: error });
    throw error;
  }

  async #upload(file: SinkFile, hooks: UploadHooks): Promise<UploadResult> {
    const names = storedPath(this.#opts.folder, file.path, oneDriveNames);
    const itemPath = this.#itemPath(names);
    let session = file.uploadSession;
    let mismatches = 0;
    const progress = { reported: 0 };
    // Upload sessions take no empty file: a simple upload does, in one request.
    if (file.size === 0) return this.#uploadEmpty(itemPath, file, hooks);
    for (let restarts = 0; ; ) {
      const hash = new FileHash(file, new QuickXorHash());
      let item: DriveItem;
      try {
        let fresh = false;
        if (!session) {
          const existing = await this.#existing(itemPath, file, hooks);
          if (existing) {
            if (file.size > progress.reported) hooks.onBytes(file.size - progress.reported);
            return existing;
          }
          session = await this.#startSession(itemPath, names.at(-1)!, file, hooks.signal);
          await hooks.onSession(session);
          fresh = true;
        }
        item = await this.#send(session, fresh, file, hooks, hash, progress);
      } catch (error) {
        if (!(error instanceof SessionGoneError) || ++restarts > MAX_RESTARTS) throw error;
        this.#opts.log.info({ path: file.path }, "OneDrive upload session is gone; starting the file over");
        await hooks.clearSession();
        session = null;
        continue;
      }
      if (hash.at < file.size) {
        await hooks.ready(hash.at, file.size);
        await hash.catchUp(file.size);
      }
      const local = hash.digest();
      const stored = item.file?.hashes?.quickXorHash;
      if (stored === local && item.size === file.size) {
        return { cloudId: item.id, cloudUrl: item.webUrl, checksum: `quickxor:${local}` };
      }
      this.#opts.log.warn(
        { path: file.path, local, onedrive: stored, size: item.size },
        "OneDrive's copy does not match the local file",
      );
      await this.#json("DELETE", `/me/drive/items/${encodeURIComponent(item.id)}`, undefined, hooks.signal);
      await hooks.clearSession();
      session = null;
      if (++mismatches > 1)
        throw new PermanentJobError(
          `OneDrive stored "${file.path}" with a different quickXorHash than the downloaded file, twice.`,
        );
    }
  }

  async #uploadEmpty(itemPath: string, file: SinkFile, hooks: UploadHooks): Promise<UploadResult> {
    const item = await withRetry(
      async () => {
        for (let attempt = 1; ; attempt++) {
          const token = await this.tokens.token(hooks.signal);
          const response = await this.#fetch(
            `${this.#api}${itemPath}/content?@microsoft.graph.conflictBehavior=replace`,
            {
              method: "PUT",
              headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/octet-stream" },
              body: new Uint8Array(0),
              redirect: "manual",
              signal: hooks.signal,
            },
          );
          if (response.status === 401 && attempt < 2) {
            await response.body?.cancel();
            this.tokens.invalidate(token);
            continue;
          }
          if (response.status === 401) throw new ReconnectRequiredError(LABEL);
          if (!response.ok) throw await ProviderError.from(response, "OneDrive: upload an empty file");
          return (await response.json()) as DriveItem;
        }
      },
      this.#retryOpts(hooks.signal, "upload empty file"),
    );
    const local = await hashFile(file, 0, new QuickXorHash());
    if (item.size !== 0 || item.file?.hashes?.quickXorHash !== local)
      throw new PermanentJobError(`OneDrive stored the empty file "${file.path}" with content.`);
    return { cloudId: item.id, cloudUrl: item.webUrl, checksum: `quickxor:${local}` };
  }

  /** The same file already at its path (from an earlier attempt whose last answer was lost): same size and hash. */
  async #existing(itemPath: string, file: SinkFile, hooks: UploadHooks): Promise<UploadResult | undefined> {
    const item = await this.#json<DriveItem>("GET", itemPath, undefined, hooks.signal);
    const stored = item?.file?.hashes?.quickXorHash;
    // A file streaming through a ring is never on disk whole, so it cannot be
    // compared: it is sent again, replacing the copy there.
    if (!item || item.size !== file.size || !stored || file.ring) return undefined;
    await hooks.ready(0, file.size);
    const local = await hashFile(file, file.size, new QuickXorHash());
    if (local !== stored) return undefined;
    this.#opts.log.debug({ path: file.path, id: item.id }, "already on OneDrive");
    return { cloudId: item.id, cloudUrl: item.webUrl, checksum: `quickxor:${local}` };
  }

  async #startSession(itemPath: string, name: string, file: SinkFile, signal: AbortSignal): Promise<string> {
    const created = await this.#json<{ uploadUrl?: string }>(
      "POST",
      `${itemPath}/createUploadSession`,
      // An older copy under the name (a file the attempt did not finish checking) is replaced.
      { item: { "@microsoft.graph.conflictBehavior": "replace", name }, deferCommit: false },
      signal,
    );
    if (!created?.uploadUrl) throw new Error(`OneDrive started no upload session for ${file.path}`);
    return created.uploadUrl;
  }

  /** Reads a session's answer: 202 + nextExpectedRanges, 200/201 + item, 404 gone. */
  async #state(response: Response, what: string): Promise<SessionState> {
    if (response.status === 200 || response.status === 201) {
      const body = (await response.json()) as DriveItem & { nextExpectedRanges?: string[] };
      // A status query of a live session answers 200 with its ranges; a finished upload, the item.
      if (Array.isArray(body.nextExpectedRanges))
        return { kind: "partial", next: nextOf(body.nextExpectedRanges) };
      return { kind: "done", item: body };
    }
    if (response.status === 202) {
      const body = (await response.json()) as { nextExpectedRanges?: string[] };
      return { kind: "partial", next: nextOf(body.nextExpectedRanges ?? []) };
    }
    if (response.status === 404) {
      await response.body?.cancel();
      return { kind: "gone" };
    }
    throw await ProviderError.from(response, what);
  }

  /** Asks a session what it holds (GET on the upload URL). */
  async #query(session: string, signal: AbortSignal): Promise<SessionState> {
    return withRetry(
      async () => {
        const response = await this.#fetch(session, { method: "GET", signal });
        return this.#state(response, "OneDrive: upload status");
      },
      this.#retryOpts(signal, "upload status"),
    );
  }

  async #send(
    session: string,
    fresh: boolean,
    file: SinkFile,
    hooks: UploadHooks,
    hash: FileHash,
    progress: { reported: number },
  ): Promise<DriveItem> {
    const { signal } = hooks;
    let state: SessionState = fresh ? { kind: "partial", next: 0 } : await this.#query(session, signal);
    const { free, hashUpTo } = storedInOrder(hooks, hash, this.#chunk, this.#opts.log, file.path);
    let confirmed = 0;
    let failures = 0;
    const confirm = (held: number) => {
      if (held > confirmed) failures = 0;
      confirmed = Math.max(confirmed, held);
      if (held > progress.reported) {
        hooks.onBytes(held - progress.reported);
        progress.reported = held;
      }
    };
    for (;;) {
      if (state.kind === "done") {
        confirm(file.size);
        await hashUpTo(file.size, file.size);
        return state.item;
      }
      if (state.kind === "gone") throw new SessionGoneError();
      const offset = state.next;
      confirm(offset);
      signal.throwIfAborted();
      if (offset >= file.size) {
        // Every byte is in but the item's answer was lost: the session is gone or finishing; ask again.
        state = await this.#query(session, signal);
        if (state.kind === "partial" && state.next >= file.size) throw new SessionGoneError();
        continue;
      }
      const end = Math.min(offset + this.#chunk, file.size);
      await hashUpTo(offset, offset);
      await free(offset);
      await hooks.ready(offset, end);
      try {
        state = await this.#put(session, file, offset, end, hash, hooks);
        this.#opts.outage?.ok();
      } catch (error) {
        if (signal.aborted) throw signal.reason ?? error;
        // 416: the range overlaps what the session holds; ask it where it stands.
        const overlap = error instanceof ProviderError && error.status === 416;
        if (!overlap) {
          if (!isTransient(error)) throw error;
          failures++;
          this.#opts.log.warn(
            { err: error, path: file.path, offset, attempt: failures },
            "OneDrive chunk failed; asking the session where it stands",
          );
          await pause(error, failures, this.#retryOpts(signal, "upload chunk"));
        }
        state = await this.#query(session, signal);
      }
    }
  }

  async #put(
    session: string,
    file: SinkFile,
    start: number,
    end: number,
    hash: FileHash,
    hooks: UploadHooks,
  ): Promise<SessionState> {
    const response = await this.#fetch(session, {
      method: "PUT",
      headers: {
        "Content-Length": String(end - start),
        "Content-Range": `bytes ${start}-${end - 1}/${file.size}`,
      },
      body: (() => {
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
      })(),
      duplex: "half",
      redirect: "manual",
      signal: hooks.signal,
    } as RequestInit);
    return this.#state(response, "OneDrive: upload chunk");
  }
}

/** The first byte a session still expects, from ranges like `["12345-", ...]`. */
function nextOf(ranges: string[]): number {
  let next = Number.POSITIVE_INFINITY;
  for (const range of ranges) {
    const start = Number(/^(\d+)-/.exec(range)?.[1]);
    if (Number.isFinite(start)) next = Math.min(next, start);
  }
  return Number.isFinite(next) ? next : 0;
}

/** A sentence for the user about a OneDrive error no retry fixes. */
export function describeOneDriveError(error: ProviderError): string {
  if (error.status === 507 || error.code === "quotaLimitReached" || error.code === "insufficientStorage")
    return "OneDrive is full: the account's storage is used up. Free some space and retry.";
  if (error.code === "accessDenied" || error.status === 403)
    return "TorreClou is not allowed to write to OneDrive any more. Reconnect OneDrive and retry.";
  if (error.code === "nameAlreadyExists")
    return "OneDrive already holds a folder where a file of this job goes. Move it away and retry.";
  if (error.code === "invalidRequest" && /name/i.test(error.message))
    return `OneDrive refused a file name: ${error.message}`;
  return `OneDrive refused the upload (${error.code || error.status}): ${error.message}`;
}

export const onedrive: WorkerDestination<"onedrive"> = {
  kind: "onedrive",
  label: LABEL,
  names: oneDriveNames,
  async open(destination, ctx) {
    const { config, outage, folder, log } = ctx;
    let tokens: OAuthTokenSource | undefined;
    const grant = await openGrant(destination, LABEL, ctx, () => tokens?.refreshToken ?? "");
    const { MICROSOFT_CLIENT_ID: clientId, MICROSOFT_CLIENT_SECRET: clientSecret } = config;
    if (!clientId || !clientSecret) {
      throw new PermanentJobError(
        "This worker cannot upload to OneDrive: its operator has not set MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET.",
      );
    }
    const source: OAuthTokenSource = new OAuthTokenSource({
      label: LABEL,
      clientId,
      clientSecret,
      refreshToken: grant.secret.refreshToken,
      tokenUrl: config.MICROSOFT_OAUTH_TOKEN_URL,
      accessToken: grant.stored,
      // Called before the source takes a rotated refresh token: it still names the stored grant.
      onTokens: (answer) => grant.save(source.refreshToken, answer),
      log,
    });
    tokens = source;
    const sink = new OneDriveSink({
      tokens: source,
      folder,
      chunkSize: config.WORKER_ONEDRIVE_CHUNK_BYTES,
      apiBaseUrl: config.GRAPH_API_BASE_URL,
      outage,
      log,
    });
    return { sink, needsReconnect: () => grant.needsReconnect() };
  },
};
