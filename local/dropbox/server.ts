// A Dropbox double: Dropbox's OAuth (consent, token, revoke) and the API v2
// calls TorreClou makes, from Dropbox's documented HTTP protocol
// (https://www.dropbox.com/developers/documentation/http/documentation):
// RPC calls with JSON bodies, content calls with their argument in the
// ASCII-only Dropbox-API-Arg header, upload sessions (start, append_v2,
// finish) that answer a wrong offset with `incorrect_offset` and the
// `correct_offset`, paths compared without case, content_hash, quotas,
// 429 with Retry-After, and fault injection. See README.md.
import { createHash, randomBytes } from "node:crypto";
import { appendFileSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ControlledDouble, controlRoutes } from "../cloud/controls.ts";
import { OAuthError, OAuthServer, type OAuthSnapshot } from "../cloud/oauth.ts";
import { StateFile } from "../cloud/persist.ts";
import {
  type CloudServer,
  type Ctx,
  Faults,
  formOf,
  HttpError,
  type Route,
  startCloudServer,
} from "../cloud/server.ts";
import type { LogSink } from "../process.ts";

export interface DropboxDoubleOptions {
  port: number;
  host?: string;
  dataDir: string;
  log?: LogSink;
  clientId?: string;
  clientSecret?: string;
  quotaBytes?: number;
  accessTokenTtlSeconds?: number;
  sessionTtlMs?: number;
}

interface Entry {
  id: string;
  accountId: string;
  /** As first written, e.g. `/Job/a.bin`. */
  pathDisplay: string;
  folder: boolean;
  size: number;
  contentHash?: string;
  serverModified: string;
}

interface UploadSession {
  id: string;
  accountId: string;
  offset: number;
  expiresAt: number;
  state: "open" | "closed" | "finished" | "expired";
  resent: number;
}

export interface DropboxDouble extends CloudServer {
  oauth: OAuthServer;
  mintRefreshToken(email: string): { refreshToken: string; accountId: string };
  filesOf(email: string): { path: string; id: string; size: number; contentHash: string }[];
  contentOf(id: string): Buffer;
  setQuota(email: string, bytes: number): void;
  expireSession(sessionId: string): void;
  sessionStats(sessionId: string): { offset: number; resent: number } | undefined;
}

/** Dropbox's content hash, straight from its definition: SHA-256 of the SHA-256s of each 4 MiB block. */
export function contentHash(content: Buffer): string {
  const overall = createHash("sha256");
  for (let at = 0; at < content.length; at += 4 * 1024 * 1024) {
    overall.update(
      createHash("sha256")
        .update(content.subarray(at, at + 4 * 1024 * 1024))
        .digest(),
    );
  }
  return overall.digest("hex");
}

/** Dropbox's error shape: `error_summary` ("tag/sub/..") and the tagged union. */
function dbxError(
  summary: string,
  error: Record<string, unknown> = {},
): { error_summary: string; error: Record<string, unknown> } {
  const [tag] = summary.split("/");
  return { error_summary: `${summary}/..`, error: { ".tag": tag, ...error } };
}

const pathError = (tag: string) => dbxError(`path/${tag}`, { path: { ".tag": tag } });

export async function startDropboxDouble(opts: DropboxDoubleOptions): Promise<DropboxDouble> {
  const dir = opts.dataDir;
  mkdirSync(join(dir, "files"), { recursive: true });
  mkdirSync(join(dir, "sessions"), { recursive: true });
  const faults = new Faults();
  const entries = new Map<string, Entry>();
  const sessions = new Map<string, UploadSession>();
  const quotas = new Map<string, number>();
  /** Temporary download links: key → file id and expiry. */
  const links = new Map<string, { id: string; expiresAt: number }>();
  let base = "";
  const sessionTtl = opts.sessionTtlMs ?? 7 * 24 * 3600 * 1000;
  const state = new StateFile<{
    oauth: OAuthSnapshot;
    entries: Entry[];
    sessions: UploadSession[];
    quotas: [string, number][];
  }>(dir);
  let loaded = false;
  const save = () => {
    if (!loaded) return;
    state.save({
      oauth: oauth.snapshot(),
      entries: [...entries.values()],
      sessions: [...sessions.values()],
      quotas: [...quotas],
    });
  };
  const oauth = new OAuthServer({
    prefix: "sl",
    clientId: opts.clientId,
    clientSecret: opts.clientSecret,
    accessTokenTtlSeconds: opts.accessTokenTtlSeconds ?? 14_400,
    // A refresh token only with token_access_type=offline, as Dropbox does; it never rotates.
    offline: (query) => query.get("token_access_type") === "offline",
    consentEmail: "dropbox-user@example.com",
    onChange: () => save(),
    newAccount: (email) => ({
      id: `dbid:${randomBytes(16).toString("base64url")}`,
      email,
      quota: opts.quotaBytes ?? 2 ** 41,
    }),
  });

  const saved = state.load();
  if (saved) {
    oauth.restore(saved.oauth);
    for (const entry of saved.entries) entries.set(entry.id, entry);
    for (const session of saved.sessions) sessions.set(session.id, session);
    for (const [account, bytes] of saved.quotas) quotas.set(account, bytes);
  }
  loaded = true;

  const lower = (path: string) => path.toLowerCase();
  const entryAt = (accountId: string, path: string) => {
    for (const e of entries.values())
      if (e.accountId === accountId && lower(e.pathDisplay) === lower(path)) return e;
    return undefined;
  };
  const used = (accountId: string) =>
    [...entries.values()].filter((e) => e.accountId === accountId).reduce((s, e) => s + e.size, 0);
  const quotaOf = (accountId: string) => quotas.get(accountId) ?? oauth.accounts.get(accountId)?.quota ?? 0;

  const metadata = (e: Entry) =>
    e.folder
      ? {
          ".tag": "folder",
          id: e.id,
          name: e.pathDisplay.split("/").pop(),
          path_display: e.pathDisplay,
          path_lower: lower(e.pathDisplay),
        }
      : {
          ".tag": "file",
          id: e.id,
          name: e.pathDisplay.split("/").pop(),
          path_display: e.pathDisplay,
          path_lower: lower(e.pathDisplay),
          size: e.size,
          content_hash: e.contentHash,
          server_modified: e.serverModified,
          client_modified: e.serverModified,
          rev: randomBytes(8).toString("hex"),
        };

  const auth = (ctx: Ctx) => {
    const account = oauth.authenticate(ctx.req.headers.authorization);
    if (!account) {
      const tag = oauth.isExpired(ctx.req.headers.authorization)
        ? "expired_access_token"
        : "invalid_access_token";
      throw new HttpError(401, dbxError(tag));
    }
    return account;
  };

  /** The content call's argument, which must be ASCII JSON. */
  const arg = <T>(ctx: Ctx): T => {
    const raw = ctx.req.headers["dropbox-api-arg"];
    const text = typeof raw === "string" ? raw : "";
    if (/[^\x20-\x7e]/.test(text))
      throw new HttpError(
        400,
        'Error in call to API function: HTTP header "Dropbox-API-Arg": could not decode input as JSON',
      );
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new HttpError(
        400,
        'Error in call to API function: HTTP header "Dropbox-API-Arg": could not decode input as JSON',
      );
    }
  };

  /** A path Dropbox accepts for a write: absolute, no empty, `.`, `..` or space-ended names, no backslash. */
  const checkPath = (path: unknown): string => {
    if (typeof path !== "string" || !path.startsWith("/") || path === "/")
      throw new HttpError(409, pathError("malformed_path"));
    for (const name of path.slice(1).split("/")) {
      if (name === "" || name === "." || name === ".." || name.endsWith(" ") || name.includes("\\"))
        throw new HttpError(409, pathError("malformed_path"));
    }
    return path;
  };

  const sessionOf = (ctx: Ctx, id: unknown): UploadSession => {
    const session = sessions.get(typeof id === "string" ? id : "");
    if (session && session.state === "open" && session.expiresAt <= Date.now()) session.state = "expired";
    if (ctx.fault?.kind === "expire-session" && session) session.state = "expired";
    if (!session || session.state === "expired" || session.state === "finished")
      throw new HttpError(409, dbxError("not_found"));
    if (session.accountId !== auth(ctx).id) throw new HttpError(409, dbxError("not_found"));
    return session;
  };

  const appendTo = async (ctx: Ctx, session: UploadSession, offset: unknown): Promise<boolean> => {
    if (typeof offset !== "number" || offset !== session.offset) {
      const { bytes } = await ctx.body();
      if (typeof offset === "number" && offset < session.offset)
        session.resent += Math.min(bytes.length, session.offset - offset);
      throw new HttpError(409, dbxError("incorrect_offset", { correct_offset: session.offset }));
    }
    if (session.state === "closed") {
      await ctx.body();
      throw new HttpError(409, dbxError("closed"));
    }
    const { bytes, dropped } = await ctx.body();
    // A dropped append keeps nothing: the client learns the offset from incorrect_offset.
    if (dropped) return false;
    appendFileSync(join(dir, "sessions", session.id), bytes);
    session.offset += bytes.length;
    return true;
  };

  const ensureFolders = (accountId: string, path: string) => {
    const names = path.split("/").slice(1, -1);
    for (let i = 1; i <= names.length; i++) {
      const at = `/${names.slice(0, i).join("/")}`;
      const found = entryAt(accountId, at);
      if (found && !found.folder)
        throw new HttpError(409, dbxError("path/conflict/file", { path: { ".tag": "conflict" } }));
      if (!found)
        entries.set(`id:${randomBytes(9).toString("base64url")}`, {
          id: "",
          accountId,
          pathDisplay: at,
          folder: true,
          size: 0,
          serverModified: new Date().toISOString(),
        });
    }
    for (const [key, e] of entries) if (!e.id) e.id = key;
  };

  const routes: Route[] = [
    {
      name: "authorize",
      method: "GET",
      path: /^\/oauth2\/authorize$/,
      handle(ctx) {
        const answer = oauth.authorize(ctx.url.searchParams);
        if ("page" in answer) {
          ctx.res
            .writeHead(400, { "Content-Type": "text/html" })
            .end(`<p>Invalid request: ${answer.page}</p>`);
          return;
        }
        ctx.res.writeHead(302, { Location: answer.redirect }).end();
      },
    },
    {
      name: "token",
      method: "POST",
      path: /^\/oauth2\/token$/,
      async handle(ctx) {
        try {
          const answer = oauth.token(await formOf(ctx), ctx.req.headers.authorization);
          const account = oauth.authenticate(`Bearer ${String(answer.access_token)}`);
          ctx.send(200, { ...answer, account_id: account?.id, uid: account?.id.slice(5) });
        } catch (error) {
          if (!(error instanceof OAuthError)) throw error;
          ctx.send(error.status, { error: error.error, error_description: error.description });
        }
      },
    },
    {
      name: "revoke",
      method: "POST",
      path: /^\/2\/auth\/token\/revoke$/,
      handle(ctx) {
        auth(ctx);
        oauth.revoke(/^Bearer\s+(.+)$/i.exec(ctx.req.headers.authorization ?? "")![1]!.trim());
        ctx.send(200, null);
      },
    },
    {
      name: "account",
      method: "POST",
      path: /^\/2\/users\/get_current_account$/,
      handle(ctx) {
        const account = auth(ctx);
        ctx.send(200, {
          account_id: account.id,
          email: account.email,
          email_verified: true,
          name: { display_name: account.email.split("@")[0] },
        });
      },
    },
    {
      name: "space",
      method: "POST",
      path: /^\/2\/users\/get_space_usage$/,
      handle(ctx) {
        const account = auth(ctx);
        ctx.send(200, {
          used: used(account.id),
          allocation: { ".tag": "individual", allocated: quotaOf(account.id) },
        });
      },
    },
    {
      name: "files.get_metadata",
      method: "POST",
      path: /^\/2\/files\/get_metadata$/,
      async handle(ctx) {
        const account = auth(ctx);
        const { path } = await ctx.json<{ path?: string }>();
        const entry =
          typeof path === "string"
            ? path.startsWith("id:")
              ? entries.get(path)
              : entryAt(account.id, path)
            : undefined;
        if (!entry || entry.accountId !== account.id) throw new HttpError(409, pathError("not_found"));
        ctx.send(200, metadata(entry));
      },
    },
    {
      name: "files.delete",
      method: "POST",
      path: /^\/2\/files\/delete_v2$/,
      async handle(ctx) {
        const account = auth(ctx);
        const { path } = await ctx.json<{ path?: string }>();
        const entry =
          typeof path === "string"
            ? path.startsWith("id:")
              ? entries.get(path)
              : entryAt(account.id, path)
            : undefined;
        if (!entry || entry.accountId !== account.id)
          throw new HttpError(409, dbxError("path_lookup/not_found"));
        for (const [key, e] of entries)
          if (
            e.accountId === account.id &&
            (key === entry.id || lower(e.pathDisplay).startsWith(`${lower(entry.pathDisplay)}/`))
          ) {
            entries.delete(key);
            if (!e.folder) rmSync(join(dir, "files", key.slice(3)), { force: true });
          }
        ctx.send(200, { metadata: metadata(entry) });
      },
    },
    {
      name: "files.get_temporary_link",
      method: "POST",
      path: /^\/2\/files\/get_temporary_link$/,
      async handle(ctx) {
        const account = auth(ctx);
        const { path } = await ctx.json<{ path?: string }>();
        const entry =
          typeof path === "string"
            ? path.startsWith("id:")
              ? entries.get(path)
              : entryAt(account.id, path)
            : undefined;
        if (!entry || entry.accountId !== account.id || entry.folder)
          throw new HttpError(409, pathError("not_found"));
        // A link that works without a token for four hours, as Dropbox's do.
        const key = randomBytes(18).toString("base64url");
        links.set(key, { id: entry.id, expiresAt: Date.now() + 4 * 3600_000 });
        ctx.send(200, { metadata: metadata(entry), link: `${base}/temporary/${key}` });
      },
    },
    {
      name: "temporary",
      method: "GET",
      path: /^\/temporary\/([\w-]+)$/,
      handle(ctx) {
        const link = links.get(ctx.params[0] ?? "");
        if (!link || link.expiresAt <= Date.now() || !entries.has(link.id)) {
          ctx.res.writeHead(410, { "Content-Type": "text/plain" }).end("This link has expired.");
          return;
        }
        const content = readFileSync(join(dir, "files", link.id.slice(3)));
        ctx.res
          .writeHead(200, {
            "Content-Type": "application/octet-stream",
            "Content-Length": String(content.length),
          })
          .end(content);
      },
    },
    {
      name: "upload.start",
      method: "POST",
      path: /^\/2\/files\/upload_session\/start$/,
      async handle(ctx) {
        const account = auth(ctx);
        const { close } = arg<{ close?: boolean }>(ctx);
        const { bytes, dropped } = await ctx.body();
        if (dropped) return;
        const session: UploadSession = {
          id: `AAAAA${randomBytes(18).toString("base64url")}`,
          accountId: account.id,
          offset: bytes.length,
          expiresAt: Date.now() + sessionTtl,
          state: close ? "closed" : "open",
          resent: 0,
        };
        writeFileSync(join(dir, "sessions", session.id), bytes);
        sessions.set(session.id, session);
        ctx.send(200, { session_id: session.id });
      },
    },
    {
      name: "upload.append",
      method: "POST",
      path: /^\/2\/files\/upload_session\/append_v2$/,
      async handle(ctx) {
        const { cursor, close } = arg<{ cursor?: { session_id?: string; offset?: number }; close?: boolean }>(
          ctx,
        );
        const session = sessionOf(ctx, cursor?.session_id);
        if (!(await appendTo(ctx, session, cursor?.offset))) return;
        if (close) session.state = "closed";
        ctx.send(200, null);
      },
    },
    {
      name: "upload.finish",
      method: "POST",
      path: /^\/2\/files\/upload_session\/finish$/,
      async handle(ctx) {
        const { cursor, commit } = arg<{
          cursor?: { session_id?: string; offset?: number };
          commit?: { path?: string; mode?: string | { ".tag": string }; autorename?: boolean };
        }>(ctx);
        let session: UploadSession;
        try {
          session = sessionOf(ctx, cursor?.session_id);
        } catch (error) {
          if (error instanceof HttpError && error.status === 409)
            throw new HttpError(409, dbxError("lookup_failed/not_found"));
          throw error;
        }
        try {
          if (!(await appendTo(ctx, session, cursor?.offset))) return;
        } catch (error) {
          if (error instanceof HttpError && error.status === 409)
            throw new HttpError(
              409,
              dbxError("lookup_failed/incorrect_offset", {
                lookup_failed: { ".tag": "incorrect_offset", correct_offset: session.offset },
              }),
            );
          throw error;
        }
        const account = auth(ctx);
        let path: string;
        try {
          path = checkPath(commit?.path);
        } catch (error) {
          if (error instanceof HttpError)
            throw new HttpError(409, dbxError("path/malformed_path", { path: { ".tag": "malformed_path" } }));
          throw error;
        }
        const mode = typeof commit?.mode === "string" ? commit.mode : (commit?.mode?.[".tag"] ?? "add");
        const existing = entryAt(account.id, path);
        if (existing?.folder)
          throw new HttpError(409, dbxError("path/conflict/folder", { path: { ".tag": "conflict" } }));
        if (existing && mode !== "overwrite")
          throw new HttpError(409, dbxError("path/conflict/file", { path: { ".tag": "conflict" } }));
        const replaced = existing?.size ?? 0;
        if (used(account.id) - replaced + session.offset > quotaOf(account.id))
          throw new HttpError(409, pathError("insufficient_space"));
        ensureFolders(account.id, path);
        const content = readFileSync(join(dir, "sessions", session.id));
        if (ctx.fault?.kind === "corrupt" && content.length > 0) {
          content[0] = content[0]! ^ 0xff;
          writeFileSync(join(dir, "sessions", session.id), content);
        }
        if (existing) {
          entries.delete(existing.id);
          rmSync(join(dir, "files", existing.id.slice(3)), { force: true });
        }
        const id = `id:${randomBytes(9).toString("base64url")}`;
        renameSync(join(dir, "sessions", session.id), join(dir, "files", id.slice(3)));
        const entry: Entry = {
          id,
          accountId: account.id,
          pathDisplay: existing?.pathDisplay ?? path,
          folder: false,
          size: content.length,
          contentHash: contentHash(content),
          serverModified: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
        };
        entries.set(id, entry);
        session.state = "finished";
        ctx.send(200, metadata(entry));
      },
    },
  ];

  const double: Partial<DropboxDouble> = {
    oauth,
    mintRefreshToken(email) {
      const { refreshToken, account } = oauth.mint(
        email,
        "files.content.write files.content.read files.metadata.read account_info.read",
      );
      return { refreshToken, accountId: account.id };
    },
    filesOf(email) {
      const account = oauth.accountByEmail(email);
      return [...entries.values()]
        .filter((e) => e.accountId === account.id && !e.folder)
        .map((e) => ({ path: e.pathDisplay, id: e.id, size: e.size, contentHash: e.contentHash ?? "" }));
    },
    contentOf: (id) => readFileSync(join(dir, "files", id.slice(3))),
    setQuota(email, bytes) {
      quotas.set(oauth.accountByEmail(email).id, bytes);
      save();
    },
    expireSession(id) {
      const session = sessions.get(id);
      if (session) session.state = "expired";
    },
    sessionStats(id) {
      const session = sessions.get(id);
      return session ? { offset: session.offset, resent: session.resent } : undefined;
    },
  };

  const controls = controlRoutes(double as ControlledDouble, oauth);

  const server = await startCloudServer({
    name: "dropbox",
    port: opts.port,
    host: opts.host,
    log: opts.log,
    routes,
    controls,
    faults,
    afterRequest: save,
    faultBody: (status) =>
      status === 429
        ? {
            error_summary: "too_many_requests/..",
            error: { reason: { ".tag": "too_many_requests" }, retry_after: 1 },
          }
        : `Injected HTTP ${status}`,
    env: (url) => ({
      DROPBOX_API_BASE_URL: url,
      DROPBOX_CONTENT_BASE_URL: url,
      DROPBOX_OAUTH_AUTH_URL: `${url}/oauth2/authorize`,
      DROPBOX_OAUTH_TOKEN_URL: `${url}/oauth2/token`,
    }),
  });
  base = server.url;
  return Object.assign(server, double) as DropboxDouble;
}
