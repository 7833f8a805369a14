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

import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { createReadStream, existsSync, rmSync, statSync } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { type LogSink, prefixedLog, type Service } from "../process.ts";
import {
  type DriveStats,
  type Fault,
  type FaultControl,
  type FaultRule,
  Faults,
  type Route,
  Stats,
  sessionIdOf,
  validateRule,
} from "./faults.ts";
import {
  applyFields,
  compileQuery,
  parseFields,
  QueryError,
  type Selection,
  selectedNames,
} from "./query.ts";
import {
  type AccessToken,
  type Account,
  DriveStore,
  type FileRecord,
  FOLDER_MIME,
  newId,
  type SessionRecord,
} from "./store.ts";

export type { DriveStats, FaultControl, FaultRule, Route } from "./faults.ts";
export { FOLDER_MIME } from "./store.ts";

/** Google requires every chunk but the last to be a multiple of this. */
export const CHUNK_GRANULARITY = 256 * 1024;

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

const fileFields = new Set([
  "kind",
  "id",
  "name",
  "mimeType",
  "parents",
  "trashed",
  "starred",
  "createdTime",
  "modifiedTime",
  "size",
  "md5Checksum",
  "webViewLink",
]);
const listFields = new Set(["kind", "nextPageToken", "incompleteSearch", "files"]);
const defaultFileFields = "kind,id,name,mimeType";
const defaultListFields = `kind,nextPageToken,incompleteSearch,files(${defaultFileFields})`;

// ---------------------------------------------------------------------------
// Google's error JSON.

interface GoogleErrorItem {
  message: string;
  domain: string;
  reason: string;
  location?: string;
  locationType?: string;
}

const statusNames: Record<number, string> = {
  400: "INVALID_ARGUMENT",
  401: "UNAUTHENTICATED",
  403: "PERMISSION_DENIED",
  404: "NOT_FOUND",
  429: "RESOURCE_EXHAUSTED",
  500: "INTERNAL",
  502: "UNAVAILABLE",
  503: "UNAVAILABLE",
  504: "DEADLINE_EXCEEDED",
};

function googleError(code: number, message: string, item: Partial<GoogleErrorItem> = {}) {
  const error: GoogleErrorItem = {
    message: item.message ?? message,
    domain: "global",
    reason: "badRequest",
    ...item,
  };
  return {
    error: { code, message, errors: [error], ...(statusNames[code] ? { status: statusNames[code] } : {}) },
  };
}

const errors = {
  unauthenticated: () =>
    googleError(
      401,
      "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
      {
        message: "Invalid Credentials",
        reason: "authError",
        location: "Authorization",
        locationType: "header",
      },
    ),
  notFound: (id: string) =>
    googleError(404, `File not found: ${id}.`, {
      reason: "notFound",
      location: "fileId",
      locationType: "parameter",
    }),
  sessionNotFound: () => googleError(404, "Not Found", { reason: "notFound" }),
  badRequest: (message: string, location?: string) =>
    googleError(400, message, {
      reason: location ? "invalid" : "badRequest",
      ...(location ? { location, locationType: "parameter" } : {}),
    }),
  fault: (fault: Fault) => {
    if (fault.kind === "rate-limit") {
      const message =
        fault.reason === "userRateLimitExceeded"
          ? "User Rate Limit Exceeded. Rate of requests for user exceed configured project quota."
          : "Rate Limit Exceeded";
      return {
        status: 403,
        body: googleError(403, message, { domain: "usageLimits", reason: fault.reason }),
      };
    }
    const status = fault.kind === "status" ? fault.status : 503;
    const [reason, message] =
      status === 429
        ? ["rateLimitExceeded", "Rate Limit Exceeded"]
        : status === 502
          ? ["badGateway", "Bad Gateway"]
          : status === 503
            ? ["backendError", "Service Unavailable"]
            : status === 504
              ? ["backendError", "Deadline Exceeded"]
              : ["backendError", "Backend Error"];
    return {
      status,
      body: googleError(status, message, { domain: status === 429 ? "usageLimits" : "global", reason }),
    };
  },
};

class HttpError extends Error {
  readonly status: number;
  readonly body: unknown;
  constructor(status: number, body: unknown) {
    super(`HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

// ---------------------------------------------------------------------------

interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  route: Route;
  /** A fault to answer with instead of the real response (afterCommit faults). */
  override: Fault | undefined;
  /** Cut the connection after this many body bytes (drop faults). */
  dropAfter: number | undefined;
}

function classify(method: string, url: URL, req: IncomingMessage): Route {
  const path = url.pathname;
  if (path.startsWith("/__")) return "control";
  if (path === "/o/oauth2/v2/auth" && method === "GET") return "authorize";
  if (path === "/token" && method === "POST") return "token";
  if (path === "/drive/v3/about" && method === "GET") return "about";
  if (path === "/revoke" && method === "POST") return "revoke";
  if (path === "/drive/v3/files") {
    if (method === "GET") return "files.list";
    if (method === "POST") return "files.create";
  }
  if (path.startsWith("/drive/v3/files/") && path.split("/").length === 5) {
    if (method === "GET") return url.searchParams.get("alt") === "media" ? "files.media" : "files.get";
    if (method === "PATCH") return "files.update";
    if (method === "DELETE") return "files.delete";
  }
  if (path === "/upload/drive/v3/files") {
    if (url.searchParams.has("upload_id")) {
      if (method === "PUT" || method === "POST") {
        const range = String(req.headers["content-range"] ?? "");
        const length = Number(req.headers["content-length"] ?? "0");
        if (
          range.startsWith("bytes */") ||
          (range === "" && length === 0 && !req.headers["transfer-encoding"])
        )
          return "upload.query";
        return "upload.chunk";
      }
      if (method === "DELETE") return "upload.cancel";
    } else if (method === "POST") return "upload.create";
  }
  return "unknown";
}

async function readBody(req: IncomingMessage, limit = 1024 * 1024): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new HttpError(413, googleError(413, "Request Entity Too Large"));
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts);
}

async function drain(req: IncomingMessage): Promise<void> {
  try {
    for await (const _ of req) {
      // discard
    }
  } catch {
    // the client went away
  }
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const body = await readBody(req);
  if (body.length === 0) return {};
  try {
    const value = JSON.parse(body.toString("utf8")) as unknown;
    if (value && typeof value === "object" && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new HttpError(400, errors.badRequest("Invalid JSON payload received."));
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const body = (await readBody(req)).toString("utf8");
  const type = String(req.headers["content-type"] ?? "");
  if (type.includes("application/json")) {
    const params = new URLSearchParams();
    try {
      for (const [k, v] of Object.entries(JSON.parse(body || "{}") as Record<string, unknown>))
        params.set(k, String(v));
    } catch {
      // an empty form
    }
    return params;
  }
  return new URLSearchParams(body);
}

function parseSelection(spec: string | null, fallback: string, allowed: Set<string>, nested?: Set<string>) {
  let sel: Selection;
  try {
    sel = parseFields(spec ?? fallback);
  } catch (error) {
    throw new HttpError(400, errors.badRequest((error as Error).message, "fields"));
  }
  for (const name of selectedNames(sel)) {
    if (!allowed.has(name))
      throw new HttpError(400, errors.badRequest(`Invalid field selection ${name}`, "fields"));
    const sub = sel === true ? true : sel.get(name);
    if (nested && name === "files" && sub !== undefined && sub !== true) {
      for (const inner of selectedNames(sub))
        if (!nested.has(inner))
          throw new HttpError(400, errors.badRequest(`Invalid field selection ${inner}`, "fields"));
    }
  }
  return sel;
}

function resource(file: FileRecord): Record<string, unknown> {
  const folder = file.mimeType === FOLDER_MIME;
  return {
    kind: "drive#file",
    id: file.id,
    name: file.name,
    mimeType: file.mimeType,
    parents: file.parents,
    trashed: file.trashed,
    starred: file.starred,
    createdTime: file.createdTime,
    modifiedTime: file.modifiedTime,
    // int64 values are strings in Google's JSON.
    ...(folder || file.size === undefined ? {} : { size: String(file.size) }),
    ...(folder || file.md5 === undefined ? {} : { md5Checksum: file.md5 }),
    webViewLink: folder
      ? `https://drive.google.com/drive/folders/${file.id}`
      : `https://drive.google.com/file/d/${file.id}/view?usp=drivesdk`,
  };
}

type ContentRange =
  | { kind: "query"; total: number | null }
  | { kind: "chunk"; start: number; end: number; total: number | null };

function parseContentRange(
  header: string | undefined,
  contentLength: number | null,
): ContentRange | undefined {
  if (!header) {
    // A whole upload in one request carries no Content-Range.
    if (contentLength === null || contentLength === 0) return { kind: "query", total: null };
    return { kind: "chunk", start: 0, end: contentLength - 1, total: contentLength };
  }
  const query = /^bytes \*\/(\d+|\*)$/.exec(header.trim());
  if (query) return { kind: "query", total: query[1] === "*" ? null : Number(query[1]) };
  const chunk = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header.trim());
  if (!chunk) return undefined;
  const start = Number(chunk[1]);
  const end = Number(chunk[2]);
  const total = chunk[3] === "*" ? null : Number(chunk[3]);
  if (end < start || (total !== null && end >= total)) return undefined;
  return { kind: "chunk", start, end, total };
}

// ---------------------------------------------------------------------------

export async function startDriveDouble(opts: DriveDoubleOptions): Promise<DriveDouble> {
  const host = opts.host ?? "127.0.0.1";
  const log = opts.log ?? prefixedLog;
  const accessTtl = opts.accessTokenTtlSeconds ?? 3599;
  const sessionTtl = opts.sessionTtlMs ?? 7 * 24 * 3600 * 1000;
  const now = opts.now ?? Date.now;
  const store = new DriveStore(opts.dataDir);
  const faults = new Faults();
  const stats = new Stats();
  const base = `http://${host.includes(":") ? `[${host}]` : host}:${opts.port}`;
  /** One chunk at a time per session. */
  const locks = new Map<string, Promise<void>>();
  const sockets = new Set<Socket>();

  const send = (ctx: Ctx, status: number, body?: unknown, headers: Record<string, string> = {}) => {
    if (ctx.override) {
      const fault = errors.fault(ctx.override);
      ctx.override = undefined;
      send(ctx, fault.status, fault.body);
      return;
    }
    if (ctx.res.headersSent || ctx.res.destroyed) return;
    const payload = body === undefined ? "" : JSON.stringify(body);
    ctx.res.writeHead(status, {
      ...(body === undefined ? {} : { "Content-Type": "application/json; charset=UTF-8" }),
      "Content-Length": String(Buffer.byteLength(payload)),
      ...headers,
    });
    ctx.res.end(payload);
  };

  const authenticate = (ctx: Ctx): Account => {
    const header = String(ctx.req.headers.authorization ?? "");
    const match = /^Bearer\s+(.+)$/i.exec(header);
    const token: AccessToken | undefined = match ? store.accessTokens.get(match[1]!.trim()) : undefined;
    const account = token ? store.accounts.get(token.accountId) : undefined;
    if (!token || !account || token.revoked || token.expiresAt <= now()) {
      throw new HttpError(401, errors.unauthenticated());
    }
    return account;
  };

  const sessionFor = (ctx: Ctx): SessionRecord => {
    const id = ctx.url.searchParams.get("upload_id") ?? "";
    const session = store.sessions.get(id);
    if (!session) throw new HttpError(404, errors.sessionNotFound());
    if (!session.expired && session.fileId === null && session.expiresAt <= now()) {
      session.expired = true;
      store.save();
    }
    if (session.expired) throw new HttpError(404, errors.sessionNotFound());
    return session;
  };

  const parentsFrom = (account: Account, meta: Record<string, unknown>): string[] => {
    const parents = meta.parents;
    if (parents === undefined) return [account.rootId];
    if (!Array.isArray(parents) || parents.some((p) => typeof p !== "string"))
      throw new HttpError(400, errors.badRequest("Invalid value for parents", "parents"));
    if (parents.length > 1)
      throw new HttpError(
        403,
        googleError(403, "Increasing the number of parents is not allowed.", { reason: "cannotAddParent" }),
      );
    if (parents.length === 0) return [account.rootId];
    const parent = store.fileOf(account.id, parents[0] as string);
    if (!parent) throw new HttpError(404, errors.notFound(parents[0] as string));
    if (parent.mimeType !== FOLDER_MIME)
      throw new HttpError(400, errors.badRequest("The specified parent is not a folder.", "parents"));
    return [parent.id];
  };

  const rangeHeader = (session: SessionRecord): Record<string, string> =>
    session.committed > 0 ? { Range: `bytes=0-${session.committed - 1}` } : {};

  /** 200 with the finished file, or 404 if it has been deleted since. */
  const sendCompleted = (ctx: Ctx, session: SessionRecord) => {
    const file = session.fileId ? store.files.get(session.fileId) : undefined;
    if (!file) throw new HttpError(404, errors.sessionNotFound());
    const sel = parseSelection(session.fields, defaultFileFields, fileFields);
    send(ctx, 200, applyFields(resource(file), sel));
  };

  const finishIfComplete = async (ctx: Ctx, session: SessionRecord): Promise<boolean> => {
    if (session.total === null || session.committed !== session.total) return false;
    if (session.declaredLength !== null && session.declaredLength !== session.total)
      throw new HttpError(400, errors.badRequest("Upload length does not match X-Upload-Content-Length."));
    await store.completeSession(session);
    stats.of(session.id).bytesCommitted = session.committed;
    sendCompleted(ctx, session);
    return true;
  };

  const setTotal = (session: SessionRecord, total: number | null) => {
    if (total === null) return;
    if (session.total !== null && session.total !== total)
      throw new HttpError(400, errors.badRequest("Content-Range total does not match earlier requests."));
    if (session.declaredLength !== null && session.declaredLength !== total)
      throw new HttpError(
        400,
        errors.badRequest(
          `Content-Range total ${total} does not match X-Upload-Content-Length ${session.declaredLength}.`,
        ),
      );
    if (total < session.committed)
      throw new HttpError(
        400,
        errors.badRequest("Content-Range total is smaller than the bytes already uploaded."),
      );
    session.total = total;
  };

  // -- OAuth ------------------------------------------------------------------

  // -- OAuth ------------------------------------------------------------------

  /** Authorization codes the consent screen handed out (single use, ten minutes). */
  const codes = new Map<
    string,
    {
      accountId: string;
      clientId: string;
      redirectUri: string;
      scope: string;
      offline: boolean;
      challenge: { method: "S256" | "plain"; value: string } | undefined;
      expiresAt: number;
    }
  >();

  /**
   * Google's consent screen, already answered "Allow" by a local account:
   * checks the request as Google does, then sends the browser straight back
   * to `redirect_uri` with a code and the state. Problems Google shows on its
   * own error page (unknown client, no redirect URI) are a 400 page here.
   */
  const handleAuthorize = async (ctx: Ctx) => {
    await drain(ctx.req);
    const p = ctx.url.searchParams;
    const page = (message: string) => {
      const html = `<!doctype html><title>Error 400: invalid_request</title><h1>Access blocked: Authorization Error</h1><p>${message.replace(/[<>&"]/g, "")}</p>`;
      ctx.res.writeHead(400, {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Length": Buffer.byteLength(html),
      });
      ctx.res.end(html);
    };
    const clientId = p.get("client_id") ?? "";
    if (!clientId) return page("Missing required parameter: client_id");
    if (opts.clientId !== undefined && clientId !== opts.clientId)
      return page("The OAuth client was not found. Error 401: invalid_client");
    const redirectUri = p.get("redirect_uri") ?? "";
    let target: URL;
    try {
      target = new URL(redirectUri);
      if (target.protocol !== "http:" && target.protocol !== "https:") throw new Error("scheme");
    } catch {
      return page(`Invalid parameter value for redirect_uri: ${redirectUri || "(missing)"}`);
    }
    const back = (params: Record<string, string>) => {
      for (const [k, v] of Object.entries(params)) target.searchParams.set(k, v);
      ctx.res.writeHead(302, { Location: target.toString(), "Content-Length": "0" });
      ctx.res.end();
    };
    const state = p.get("state");
    const withState = (params: Record<string, string>) => (state === null ? params : { ...params, state });
    if (p.get("response_type") !== "code") return back(withState({ error: "unsupported_response_type" }));
    const scope = (p.get("scope") ?? "").trim();
    if (!scope)
      return back(
        withState({ error: "invalid_request", error_description: "Missing required parameter: scope" }),
      );
    const method = p.get("code_challenge_method") ?? (p.get("code_challenge") ? "plain" : null);
    const challengeValue = p.get("code_challenge");
    if (method !== null && (!challengeValue || (method !== "S256" && method !== "plain")))
      return back(
        withState({ error: "invalid_request", error_description: "Invalid code_challenge_method" }),
      );
    const hint = p.get("login_hint") ?? "";
    const email = /^[^@\s]+@[^@\s]+$/.test(hint) ? hint : (opts.consentEmail ?? "drive-user@example.com");
    const account = store.createAccount(email);
    const code = `4/0A${randomBytes(24).toString("base64url")}`;
    codes.set(code, {
      accountId: account.id,
      clientId,
      redirectUri,
      scope,
      offline: p.get("access_type") === "offline",
      challenge:
        method && challengeValue ? { method: method as "S256" | "plain", value: challengeValue } : undefined,
      expiresAt: now() + 10 * 60_000,
    });
    back(withState({ code, scope }));
  };

  /** The client's id and secret: HTTP Basic (as arctic sends them) or form fields. */
  const clientOf = (ctx: Ctx, form: URLSearchParams): { id: string; secret: string } => {
    const basic = /^Basic\s+(.+)$/i.exec(String(ctx.req.headers.authorization ?? ""))?.[1];
    if (basic) {
      const decoded = Buffer.from(basic, "base64").toString("utf8");
      const at = decoded.indexOf(":");
      // RFC 6749 form-encodes both before Basic; many clients (arctic) do not.
      const formDecode = (text: string) => {
        try {
          return decodeURIComponent(text.replace(/\+/g, " "));
        } catch {
          return text;
        }
      };
      return { id: formDecode(decoded.slice(0, Math.max(at, 0))), secret: formDecode(decoded.slice(at + 1)) };
    }
    return { id: form.get("client_id") ?? "", secret: form.get("client_secret") ?? "" };
  };

  const verifierMatches = (challenge: { method: "S256" | "plain"; value: string }, verifier: string) => {
    const expected =
      challenge.method === "S256" ? createHash("sha256").update(verifier).digest("base64url") : verifier;
    const a = Buffer.from(expected);
    const b = Buffer.from(challenge.value);
    return a.length === b.length && timingSafeEqual(a, b);
  };

  const handleToken = async (ctx: Ctx) => {
    const form = await readForm(ctx.req);
    const oauthError = (status: number, error: string, description: string) =>
      send(ctx, status, { error, error_description: description }, { "Cache-Control": "no-store" });
    const client = clientOf(ctx, form);
    if (
      (opts.clientId !== undefined && client.id !== opts.clientId) ||
      (opts.clientSecret !== undefined && client.secret !== opts.clientSecret)
    )
      return oauthError(401, "invalid_client", "Unauthorized");
    const grant = form.get("grant_type");
    if (grant === "authorization_code") {
      const code = form.get("code") ?? "";
      const issued = codes.get(code);
      // Single use, even when the rest of the request is wrong.
      codes.delete(code);
      if (!issued || issued.expiresAt <= now() || (client.id && client.id !== issued.clientId))
        return oauthError(400, "invalid_grant", "Malformed auth code.");
      if (form.get("redirect_uri") !== issued.redirectUri)
        return oauthError(400, "redirect_uri_mismatch", "Bad Request");
      const verifier = form.get("code_verifier");
      if (issued.challenge && (!verifier || !verifierMatches(issued.challenge, verifier)))
        return oauthError(400, "invalid_grant", "Invalid code verifier.");
      if (!issued.challenge && verifier) return oauthError(400, "invalid_grant", "Invalid code verifier.");
      const refresh = store.mintRefreshToken(issued.accountId);
      const access = store.mintAccessToken(refresh, accessTtl);
      // As at Google: a refresh token only for offline access.
      if (!issued.offline) store.refreshTokens.delete(refresh.token);
      return send(
        ctx,
        200,
        {
          access_token: access.token,
          expires_in: accessTtl,
          ...(issued.offline ? { refresh_token: refresh.token } : {}),
          scope: issued.scope,
          token_type: "Bearer",
        },
        { "Cache-Control": "no-store" },
      );
    }
    if (grant !== "refresh_token")
      return oauthError(400, "unsupported_grant_type", `Invalid grant_type: ${grant ?? ""}`);
    const token = form.get("refresh_token");
    if (!token) return oauthError(400, "invalid_request", "Missing required parameter: refresh_token");
    const refresh = store.refreshTokens.get(token);
    if (!refresh || refresh.revoked)
      return oauthError(400, "invalid_grant", "Token has been expired or revoked.");
    const access = store.mintAccessToken(refresh, accessTtl);
    send(
      ctx,
      200,
      {
        access_token: access.token,
        expires_in: accessTtl,
        scope: "https://www.googleapis.com/auth/drive.file",
        token_type: "Bearer",
      },
      { "Cache-Control": "no-store" },
    );
  };

  /** `about.get`: Google requires `fields`; `user` is what clients ask for. */
  const handleAbout = async (ctx: Ctx) => {
    await drain(ctx.req);
    const account = authenticate(ctx);
    const spec = ctx.url.searchParams.get("fields");
    if (!spec)
      throw new HttpError(
        400,
        errors.badRequest("The 'fields' parameter is required for this method.", "fields"),
      );
    const sel = parseSelection(spec, spec, new Set(["kind", "user"]));
    const about = {
      kind: "drive#about",
      user: {
        kind: "drive#user",
        displayName: account.email.split("@")[0],
        me: true,
        permissionId: account.id.replace(/\D/g, "").padEnd(20, "0").slice(0, 20),
        emailAddress: account.email,
      },
    };
    send(ctx, 200, applyFields(about, sel));
  };

  const handleRevoke = async (ctx: Ctx) => {
    const form = await readForm(ctx.req);
    const token = ctx.url.searchParams.get("token") ?? form.get("token") ?? "";
    const refresh = store.refreshTokens.get(token);
    const access = store.accessTokens.get(token);
    // Revoking an access token revokes its refresh token too, and the other way round.
    const grant = refresh ?? (access ? store.refreshTokens.get(access.refreshToken) : undefined);
    if (!grant || grant.revoked || access?.revoked)
      return send(ctx, 400, { error: "invalid_token", error_description: "Token expired or revoked" });
    store.revokeGrant(grant.token);
    send(ctx, 200, {});
  };

  // -- files ------------------------------------------------------------------

  const handleCreate = async (ctx: Ctx) => {
    const account = authenticate(ctx);
    const meta = await readJson(ctx.req);
    const sel = parseSelection(ctx.url.searchParams.get("fields"), defaultFileFields, fileFields);
    const parents = parentsFrom(account, meta);
    const mimeType = typeof meta.mimeType === "string" ? meta.mimeType : "application/octet-stream";
    const now = new Date().toISOString();
    const id = newId();
    const folder = mimeType === FOLDER_MIME;
    const file = store.addFile({
      id,
      accountId: account.id,
      name: typeof meta.name === "string" && meta.name !== "" ? meta.name : "Untitled",
      mimeType,
      parents,
      trashed: false,
      starred: meta.starred === true,
      createdTime: now,
      modifiedTime: now,
      ...(folder ? {} : { size: 0, md5: "d41d8cd98f00b204e9800998ecf8427e" }),
    });
    if (!folder) (await open(store.blobPath(id), "w")).close();
    send(ctx, 200, applyFields(resource(file), sel));
  };

  const handleList = (ctx: Ctx) => {
    const account = authenticate(ctx);
    const params = ctx.url.searchParams;
    const sel = parseSelection(params.get("fields"), defaultListFields, listFields, fileFields);
    // `files` alone selects the default file fields, as at Google.
    let effective: Selection = sel;
    if (sel !== true && sel.get("files") === true) {
      effective = new Map(sel);
      effective.set("files", parseFields(defaultFileFields));
    }
    const q = params.get("q") ?? "";
    let predicate: ReturnType<typeof compileQuery>;
    try {
      // 'root' in parents names the account's root.
      predicate = compileQuery(q.replace(/'root'\s+in\s+parents/g, `'${account.rootId}' in parents`));
    } catch (error) {
      if (error instanceof QueryError) throw new HttpError(400, errors.badRequest("Invalid Value", "q"));
      throw error;
    }
    const pageSizeRaw = params.get("pageSize");
    const pageSize = pageSizeRaw === null ? 100 : Number(pageSizeRaw);
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1000)
      throw new HttpError(
        400,
        errors.badRequest(
          `Invalid value '${pageSizeRaw}'. Values must be within the range: [1, 1000]`,
          "pageSize",
        ),
      );
    let offset = 0;
    const pageToken = params.get("pageToken");
    if (pageToken) {
      const [at, forQuery] = Buffer.from(pageToken, "base64url").toString("utf8").split("\n");
      if (forQuery !== q || !/^\d+$/.test(at ?? ""))
        throw new HttpError(400, errors.badRequest("Invalid Value", "pageToken"));
      offset = Number(at);
    }
    const all = [...store.files.values()]
      .filter((f) => f.accountId === account.id && f.id !== account.rootId && predicate(f))
      .sort((a, b) => a.seq - b.seq);
    const page = all.slice(offset, offset + pageSize);
    const next =
      offset + pageSize < all.length
        ? Buffer.from(`${offset + pageSize}\n${q}`).toString("base64url")
        : undefined;
    const body = {
      kind: "drive#fileList",
      ...(next ? { nextPageToken: next } : {}),
      incompleteSearch: false,
      files: page.map(resource),
    };
    send(ctx, 200, applyFields(body, effective));
  };

  const fileFromPath = (ctx: Ctx, account: Account): FileRecord => {
    const id = decodeURIComponent(ctx.url.pathname.split("/")[4] ?? "");
    const file = store.fileOf(account.id, id);
    if (!file) throw new HttpError(404, errors.notFound(id));
    return file;
  };

  const handleGet = (ctx: Ctx) => {
    const account = authenticate(ctx);
    const file = fileFromPath(ctx, account);
    const sel = parseSelection(ctx.url.searchParams.get("fields"), defaultFileFields, fileFields);
    send(ctx, 200, applyFields(resource(file), sel));
  };

  const handleMedia = async (ctx: Ctx) => {
    const account = authenticate(ctx);
    const file = fileFromPath(ctx, account);
    if (file.mimeType === FOLDER_MIME || !existsSync(store.blobPath(file.id)))
      throw new HttpError(
        403,
        googleError(
          403,
          "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
          {
            reason: "fileNotDownloadable",
            location: "alt",
            locationType: "parameter",
          },
        ),
      );
    const size = statSync(store.blobPath(file.id)).size;
    const range = String(ctx.req.headers.range ?? "");
    let start = 0;
    let end = size - 1;
    let status = 200;
    if (range) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
      if (m && (m[1] !== "" || m[2] !== "")) {
        if (m[1] === "") {
          start = Math.max(0, size - Number(m[2]));
        } else {
          start = Number(m[1]);
          if (m[2] !== "") end = Math.min(size - 1, Number(m[2]));
        }
        if (start >= size || start > end) {
          ctx.res.writeHead(416, { "Content-Range": `bytes */${size}` });
          ctx.res.end();
          return;
        }
        status = 206;
      }
    }
    const length = size === 0 ? 0 : end - start + 1;
    ctx.res.writeHead(status, {
      "Content-Type": file.mimeType,
      "Content-Length": String(length),
      "Accept-Ranges": "bytes",
      ...(status === 206 ? { "Content-Range": `bytes ${start}-${end}/${size}` } : {}),
    });
    if (length === 0) {
      ctx.res.end();
      return;
    }
    await new Promise<void>((resolve) => {
      const stream = createReadStream(store.blobPath(file.id), { start, end });
      stream.on("error", () => {
        ctx.res.destroy();
        resolve();
      });
      ctx.res.on("close", () => {
        stream.destroy();
        resolve();
      });
      stream.pipe(ctx.res);
    });
  };

  const handleUpdate = async (ctx: Ctx) => {
    const account = authenticate(ctx);
    const file = fileFromPath(ctx, account);
    const meta = await readJson(ctx.req);
    const sel = parseSelection(ctx.url.searchParams.get("fields"), defaultFileFields, fileFields);
    if (typeof meta.name === "string" && meta.name !== "") file.name = meta.name;
    if (typeof meta.trashed === "boolean") file.trashed = meta.trashed;
    if (typeof meta.starred === "boolean") file.starred = meta.starred;
    file.modifiedTime = new Date().toISOString();
    store.save();
    send(ctx, 200, applyFields(resource(file), sel));
  };

  const handleDelete = (ctx: Ctx) => {
    const account = authenticate(ctx);
    const file = fileFromPath(ctx, account);
    if (file.id === account.rootId)
      throw new HttpError(
        403,
        googleError(403, "The user does not have sufficient permissions for this file.", {
          reason: "insufficientFilePermissions",
        }),
      );
    store.deleteTree(file.id);
    ctx.res.writeHead(204);
    ctx.res.end();
  };

  // -- resumable uploads ------------------------------------------------------

  const handleUploadCreate = async (ctx: Ctx) => {
    const account = authenticate(ctx);
    const uploadType = ctx.url.searchParams.get("uploadType");
    if (uploadType !== "resumable") {
      await drain(ctx.req);
      throw new HttpError(
        400,
        errors.badRequest(
          `The Drive double implements uploadType=resumable only (got ${uploadType ?? "none"}).`,
          "uploadType",
        ),
      );
    }
    const meta = await readJson(ctx.req);
    const fields = ctx.url.searchParams.get("fields");
    parseSelection(fields, defaultFileFields, fileFields);
    const parents = parentsFrom(account, meta);
    const lengthHeader = ctx.req.headers["x-upload-content-length"];
    let declaredLength: number | null = null;
    if (lengthHeader !== undefined) {
      declaredLength = Number(lengthHeader);
      if (!Number.isSafeInteger(declaredLength) || declaredLength < 0)
        throw new HttpError(400, errors.badRequest("Invalid X-Upload-Content-Length header."));
    }
    const contentType = String(ctx.req.headers["x-upload-content-type"] ?? "");
    const mimeType =
      typeof meta.mimeType === "string" && meta.mimeType !== ""
        ? meta.mimeType
        : contentType !== ""
          ? contentType
          : "application/octet-stream";
    if (mimeType === FOLDER_MIME)
      throw new HttpError(400, errors.badRequest("A folder has no content to upload."));
    const session: SessionRecord = {
      id: `AU${newId("x")}${newId("y")}`.replace(/[^A-Za-z0-9_-]/g, ""),
      accountId: account.id,
      name: typeof meta.name === "string" && meta.name !== "" ? meta.name : "Untitled",
      mimeType,
      parents,
      fields,
      declaredLength,
      total: null,
      committed: 0,
      createdAt: now(),
      expiresAt: now() + sessionTtl,
      expired: false,
      fileId: null,
    };
    store.sessions.set(session.id, session);
    store.save();
    stats.of(session.id);
    const location = `${base}/upload/drive/v3/files?uploadType=resumable&upload_id=${session.id}`;
    send(ctx, 200, undefined, { Location: location, "X-GUploader-UploadID": session.id });
  };

  const withSessionLock = async (id: string, work: () => Promise<void>) => {
    const before = locks.get(id) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const chained = before.then(() => mine);
    locks.set(id, chained);
    await before;
    try {
      await work();
    } finally {
      release();
      if (locks.get(id) === chained) locks.delete(id);
    }
  };

  const handleUploadQuery = async (ctx: Ctx) => {
    await drain(ctx.req);
    const session = sessionFor(ctx);
    stats.of(session.id).queries++;
    if (session.fileId !== null) return sendCompleted(ctx, session);
    const range = parseContentRange(ctx.req.headers["content-range"], 0);
    if (range?.kind !== "query")
      throw new HttpError(400, errors.badRequest("Failed to parse Content-Range header."));
    await withSessionLock(session.id, async () => {
      setTotal(session, range.total);
      if (await finishIfComplete(ctx, session)) return;
      send(ctx, 308, undefined, rangeHeader(session));
    });
  };

  const handleUploadChunk = async (ctx: Ctx) => {
    let session: SessionRecord;
    try {
      session = sessionFor(ctx);
    } catch (error) {
      await drain(ctx.req);
      throw error;
    }
    const counters = stats.of(session.id);
    counters.chunks++;
    const lengthHeader = ctx.req.headers["content-length"];
    const contentLength = lengthHeader === undefined ? null : Number(lengthHeader);
    const range = parseContentRange(ctx.req.headers["content-range"], contentLength);
    const reject = async (message: string) => {
      await drain(ctx.req);
      throw new HttpError(400, errors.badRequest(message));
    };
    if (range?.kind !== "chunk") return reject("Failed to parse Content-Range header.");
    const length = range.end - range.start + 1;
    if (contentLength !== null && contentLength !== length)
      return reject(`Content-Range covers ${length} bytes but Content-Length is ${contentLength}.`);

    await withSessionLock(session.id, async () => {
      if (session.fileId !== null) {
        await drain(ctx.req);
        return sendCompleted(ctx, session);
      }
      try {
        setTotal(session, range.total);
      } catch (error) {
        await drain(ctx.req);
        throw error;
      }
      const final = session.total !== null && range.end + 1 === session.total;
      if (!final && length % CHUNK_GRANULARITY !== 0)
        return reject(
          `Invalid request. The number of bytes uploaded is required to be equal or greater than ${CHUNK_GRANULARITY}, except for the final request (it's recommended to be the exact multiple of ${CHUNK_GRANULARITY}). The received request contained ${length} bytes, which does not meet this requirement.`,
        );
      if (range.start > session.committed)
        return reject(
          `Invalid request. According to the Content-Range header, the upload offset is ${range.start} byte(s), which exceeds already uploaded size of ${session.committed} byte(s).`,
        );

      // Bytes below `committed` are already stored: Google ignores them.
      const path = store.sessionPath(session.id);
      const handle = await open(path, existsSync(path) ? "r+" : "w+");
      let received = 0;
      let stored = session.committed;
      let complete = false;
      try {
        for await (const piece of ctx.req) {
          let buf = piece as Buffer;
          let cut = false;
          if (ctx.dropAfter !== undefined && received + buf.length >= ctx.dropAfter) {
            buf = buf.subarray(0, Math.max(0, ctx.dropAfter - received));
            cut = true;
          }
          if (received + buf.length > length) buf = buf.subarray(0, length - received);
          const at = range.start + received;
          received += buf.length;
          counters.bytesReceived += buf.length;
          const skip = Math.max(0, stored - at);
          counters.bytesResent += Math.min(skip, buf.length);
          if (skip < buf.length) {
            const fresh = buf.subarray(skip);
            await handle.write(fresh, 0, fresh.length, at + skip);
            stored = at + buf.length;
          }
          if (cut) {
            ctx.req.socket.destroy();
            break;
          }
        }
        complete = received === length;
      } catch {
        // the client went away mid-chunk
      } finally {
        await handle.close();
      }
      if (!complete) {
        // What arrived is kept in whole 256 KiB units; the client learns how much from a status query.
        const kept = Math.max(session.committed, Math.floor(stored / CHUNK_GRANULARITY) * CHUNK_GRANULARITY);
        session.committed = Math.min(kept, stored);
        counters.bytesCommitted = session.committed;
        store.save();
        if (!ctx.res.destroyed && !ctx.req.socket.destroyed)
          throw new HttpError(400, errors.badRequest("The request body was shorter than its Content-Range."));
        return;
      }
      session.committed = Math.max(session.committed, range.end + 1);
      counters.bytesCommitted = session.committed;
      store.save();
      if (await finishIfComplete(ctx, session)) return;
      send(ctx, 308, undefined, rangeHeader(session));
    });
  };

  const handleUploadCancel = async (ctx: Ctx) => {
    await drain(ctx.req);
    const session = sessionFor(ctx);
    store.sessions.delete(session.id);
    rmSync(store.sessionPath(session.id), { force: true });
    store.save();
    send(ctx, 499);
  };

  // -- test controls ----------------------------------------------------------

  const expireSession = (sessionOrUri: string) => {
    const session = store.sessions.get(sessionIdOf(sessionOrUri));
    if (!session) return;
    session.expired = true;
    rmSync(store.sessionPath(session.id), { force: true });
    store.save();
  };

  const expireAccessTokens = () => {
    for (const t of store.accessTokens.values()) t.expiresAt = Math.min(t.expiresAt, now() - 1);
    store.save();
  };

  const mintRefreshToken = (email = "user@example.com"): MintedGrant => {
    const account = store.createAccount(email);
    const refresh = store.mintRefreshToken(account.id);
    return { accountId: account.id, email, rootFolderId: account.rootId, refreshToken: refresh.token };
  };

  const filesOf = (accountId: string) =>
    [...store.files.values()]
      .filter((f) => f.accountId === accountId && f.parents.length > 0)
      .sort((a, b) => a.seq - b.seq);

  const handleControl = async (ctx: Ctx) => {
    const path = ctx.url.pathname;
    const method = ctx.req.method ?? "GET";
    if (path === "/__faults") {
      if (method === "POST") {
        const body = JSON.parse((await readBody(ctx.req)).toString("utf8") || "null") as unknown;
        const rules = Array.isArray(body) ? body : [body];
        try {
          for (const rule of rules) validateRule(rule);
        } catch (error) {
          return send(ctx, 400, { error: (error as Error).message });
        }
        for (const rule of rules as FaultRule[]) faults.inject(rule);
        return send(ctx, 204);
      }
      if (method === "DELETE") {
        faults.clear();
        return send(ctx, 204);
      }
      if (method === "GET") return send(ctx, 200, { pending: faults.pending(), fired: faults.fired() });
    }
    if (path === "/__stats") {
      if (method === "GET") return send(ctx, 200, stats.toJSON());
      if (method === "DELETE") {
        stats.reset();
        return send(ctx, 204);
      }
    }
    if (path === "/__accounts" && method === "POST") {
      const body = await readJson(ctx.req);
      return send(ctx, 200, mintRefreshToken(typeof body.email === "string" ? body.email : undefined));
    }
    if (path === "/__files" && method === "GET") {
      const account = ctx.url.searchParams.get("account") ?? "";
      return send(ctx, 200, { files: filesOf(account).map(resource) });
    }
    if (path === "/__sessions/expire" && method === "POST") {
      const body = await readJson(ctx.req);
      expireSession(String(body.session ?? ""));
      return send(ctx, 204);
    }
    if (path === "/__tokens/expire" && method === "POST") {
      await drain(ctx.req);
      expireAccessTokens();
      return send(ctx, 204);
    }
    await drain(ctx.req);
    send(ctx, 404, { error: "no such control" });
  };

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
