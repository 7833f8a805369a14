// A local Google Drive: the OAuth token endpoint and the parts of Drive API v3
// TorreClou uses, following Google's documented behaviour (see README.md
// next to this file for the API, the fault controls and known deviations).
//
//   GET    /o/oauth2/v2/auth                         consent screen: approves at once for a local account
//   POST   /token                                    authorization_code (PKCE) and refresh_token grants
//   POST   /revoke?token=                            revoke a grant
//   GET    /drive/v3/about?fields=user               the account's email and name
//   POST   /drive/v3/files                           create (metadata only, e.g. folders)
//   GET    /drive/v3/files                           list: q, pageSize, pageToken, fields
//   GET    /drive/v3/files/:id                       metadata (fields) or alt=media (Range)
//   PATCH  /drive/v3/files/:id                       name, trashed, starred
//   DELETE /drive/v3/files/:id                       204
//   POST   /upload/drive/v3/files?uploadType=resumable   start a session → Location
//   PUT    <session URI>                             chunk (Content-Range a-b/N) or status query (*/N)
//   DELETE <session URI>                             cancel → 499
//   /__faults, /__stats, /__accounts, ...            test controls

import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { type LogSink, prefixedLog, type Service } from "../process.ts";
import { controlHandlers } from "./controls.ts";
import { answerer, type DriveEnv } from "./env.ts";
import { type DriveStats, type FaultControl, Faults, type Route, Stats } from "./faults.ts";
import { fileHandlers } from "./files.ts";
import { type Ctx, classify, drain, errors, googleError, HttpError } from "./http.ts";
import { oauthHandlers } from "./oauth.ts";
import { DriveStore, type FileRecord } from "./store.ts";
import { uploadHandlers } from "./uploads.ts";

export type { DriveStats, FaultControl, FaultRule, Route } from "./faults.ts";
export { CHUNK_GRANULARITY } from "./http.ts";
export { FOLDER_MIME } from "./store.ts";

export interface DriveDoubleOptions {
  port: number;
  host?: string;
  dataDir: string;
  log?: LogSink;
  /** Lifetime of access tokens the token endpoint issues (Google: 3599 s). */
  accessTokenTtlSeconds?: number;
  /** Lifetime of an upload session (Google: one week). */
  sessionTtlMs?: number;
  /** The double's clock, ms since the epoch (default Date.now): tests move it instead of waiting. */
  now?: () => number;
  /** When set, the consent screen and the token endpoint check client_id (and the secret). */
  clientId?: string;
  clientSecret?: string;
  /**
   * The Google account the consent screen signs in as, unless the request
   * carries a `login_hint` email (default `drive-user@example.com`).
   */
  consentEmail?: string;
}

export interface MintedGrant {
  accountId: string;
  email: string;
  /** The account's "My Drive" folder id (`root` also works). */
  rootFolderId: string;
  refreshToken: string;
}

export interface DriveDouble extends Service {
  /**
   * `http://host:port`: the API base; the token endpoint is `${url}/token`,
   * the consent screen `${url}/o/oauth2/v2/auth`.
   */
  readonly url: string;
  readonly faults: FaultControl;
  readonly stats: DriveStats;
  readonly store: DriveStore;
  /** Creates the account if needed and issues a refresh token for it. */
  mintRefreshToken(email?: string): MintedGrant;
  /** Every file of an account, folders included, in creation order. */
  filesOf(accountId: string): FileRecord[];
  /** A stored file's bytes. */
  contentOf(fileId: string): Promise<Buffer>;
}

// ---------------------------------------------------------------------------

export async function startDriveDouble(opts: DriveDoubleOptions): Promise<DriveDouble> {
  const host = opts.host ?? "127.0.0.1";
  const log = opts.log ?? prefixedLog;
  const store = new DriveStore(opts.dataDir);
  const faults = new Faults();
  const stats = new Stats();
  const base = `http://${host.includes(":") ? `[${host}]` : host}:${opts.port}`;
  const sockets = new Set<Socket>();
  const now = opts.now ?? Date.now;
  const env: DriveEnv = {
    now,
    store,
    faults,
    stats,
    base,
    log,
    accessTtl: opts.accessTokenTtlSeconds ?? 3599,
    sessionTtl: opts.sessionTtlMs ?? 7 * 24 * 3600 * 1000,
    opts,
    locks: new Map(),
    ...answerer(store, now),
  };
  const { send } = env;
  const { handleAuthorize, handleToken, handleRevoke } = oauthHandlers(env);
  const { handleAbout, handleCreate, handleList, handleGet, handleMedia, handleUpdate, handleDelete } =
    fileHandlers(env);
  const {
    handleUploadCreate,
    handleUploadQuery,
    handleUploadChunk,
    handleUploadCancel,
    handleUploadPreflight,
    allowSessionOrigin,
  } = uploadHandlers(env);
  const { expireSession, expireAccessTokens, mintRefreshToken, filesOf, handleControl } =
    controlHandlers(env);

  // -- dispatch ---------------------------------------------------------------

  const handlers: Record<Route, (ctx: Ctx) => Promise<void> | void> = {
    authorize: handleAuthorize,
    token: handleToken,
    revoke: handleRevoke,
    about: handleAbout,
    "files.create": handleCreate,
    "files.list": handleList,
    "files.get": handleGet,
    "files.media": handleMedia,
    "files.update": handleUpdate,
    "files.delete": handleDelete,
    "upload.create": handleUploadCreate,
    "upload.chunk": handleUploadChunk,
    "upload.query": handleUploadQuery,
    "upload.cancel": handleUploadCancel,
    "upload.preflight": handleUploadPreflight,
    control: handleControl,
    unknown: async (ctx) => {
      await drain(ctx.req);
      throw new HttpError(404, googleError(404, "Not Found", { reason: "notFound" }));
    },
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const method = req.method ?? "GET";
    const url = new URL(req.url ?? "/", base);
    const route = classify(method, url, req);
    stats.count(route);
    const ctx: Ctx = { req, res, url, route, override: undefined, dropAfter: undefined };
    // A session opened with an Origin answers that origin's CORS requests, faults included.
    if (route.startsWith("upload.") && route !== "upload.create") allowSessionOrigin(ctx);
    try {
      const fault = faults.take(route, method, url.pathname);
      if (fault) {
        if (fault.kind === "expire-session") {
          const id = url.searchParams.get("upload_id");
          if (id) expireSession(id);
        } else if (fault.kind === "drop") {
          if (route === "upload.chunk") ctx.dropAfter = fault.afterBytes;
          else {
            req.socket.destroy();
            return;
          }
        } else if (fault.afterCommit && route === "upload.chunk") {
          ctx.override = fault;
        } else {
          await drain(req);
          const { status, body } = errors.fault(fault);
          return send(ctx, status, body);
        }
      }
      await handlers[route](ctx);
    } catch (error) {
      if (error instanceof HttpError) {
        ctx.override = undefined;
        if (!req.complete) await drain(req);
        return send(ctx, error.status, error.body);
      }
      log("drive", `${method} ${url.pathname}: ${(error as Error).stack ?? String(error)}`);
      ctx.override = undefined;
      send(ctx, 500, errors.fault({ kind: "status", status: 500 }).body);
    }
  };

  const server = createServer((req, res) => {
    void handle(req, res);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  // Clients see a dropped connection, not an error page, when a fault cuts one.
  server.on("clientError", (_error, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });

  const stop = async () => {
    if (!server.listening) return;
    const closing = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    await Promise.race([closing, sleep(1000)]);
    for (const socket of sockets) socket.destroy();
    await closing;
  };

  log("drive", `Google Drive double on ${base}, data in ${opts.dataDir}`);
  return {
    name: "drive",
    url: base,
    env: {
      DRIVE_API_BASE_URL: base,
      GOOGLE_OAUTH_AUTH_URL: `${base}/o/oauth2/v2/auth`,
      GOOGLE_OAUTH_TOKEN_URL: `${base}/token`,
      GOOGLE_OAUTH_REVOKE_URL: `${base}/revoke`,
    },
    urls: [`Google Drive double: ${base} (token endpoint ${base}/token)`],
    stop,
    faults: {
      inject: (rule) => faults.inject(rule),
      clear: () => faults.clear(),
      pending: () => faults.pending(),
      fired: () => faults.fired(),
      expireSession,
      expireAccessTokens,
    },
    stats,
    store,
    mintRefreshToken,
    filesOf,
    contentOf: (fileId) => readFile(store.blobPath(fileId)),
  };
}
