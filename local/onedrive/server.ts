// A OneDrive double: Microsoft's identity platform (consent, token) and the
// Microsoft Graph calls TorreClou makes, from Graph's documented protocol
// (https://learn.microsoft.com/graph/api/driveitem-createuploadsession),
// offline, with fault injection. Tests start it in process; `npm run dev`
// runs one so "Connect OneDrive" works locally. See README.md.

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
import { type Item, OneDriveStore, type Session } from "./store.ts";

/** Every chunk but the last must be a multiple of this. */
export const GRANULARITY = 320 * 1024;

export interface OneDriveDoubleOptions {
  port: number;
  host?: string;
  dataDir: string;
  log?: LogSink;
  clientId?: string;
  clientSecret?: string;
  /** Bytes each new account may store (default 1 TiB). */
  quotaBytes?: number;
  accessTokenTtlSeconds?: number;
  /** How long an upload session lives (default 7 days). */
  sessionTtlMs?: number;
}

export interface OneDriveDouble extends CloudServer {
  oauth: OAuthServer;
  store: OneDriveStore;
  /** A grant for `email` without the consent screen. */
  mintRefreshToken(email: string): { refreshToken: string; accountId: string };
  /** Files under the account's app folder, by path. */
  filesOf(email: string): { path: string; id: string; size: number; quickXorHash: string }[];
  contentOf(id: string): Buffer;
  setQuota(email: string, bytes: number): void;
  expireSession(uploadUrl: string): void;
  sessionStats(uploadUrl: string): { received: number; resent: number } | undefined;
}

const graphError = (code: string, message: string) => ({
  error: { code, message, innerError: { date: new Date().toISOString(), "request-id": crypto.randomUUID() } },
});

const faultCodes: Record<number, string> = {
  429: "activityLimitReached",
  500: "generalException",
  502: "badGateway",
  503: "serviceNotAvailable",
  504: "gatewayTimeout",
};

/** Characters and forms OneDrive refuses in a name. */
function badName(name: string): boolean {
  return (
    name === "" ||
    /["*:<>?/\\|]/.test(name) ||
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it refuses
    /[\u0000-\u001f]/.test(name) ||
    name !== name.trim() ||
    name.endsWith(".") ||
    name.startsWith("~$") ||
    /^(con|prn|aux|nul|com\d|lpt\d|\.lock|desktop\.ini)$/i.test(name)
  );
}

export async function startOneDriveDouble(opts: OneDriveDoubleOptions): Promise<OneDriveDouble> {
  const store = new OneDriveStore(opts.dataDir);
  const faults = new Faults();
  const quotas = new Map<string, number>();
  const state = new StateFile<{
    oauth: OAuthSnapshot;
    items: Item[];
    sessions: Session[];
    appRoots: [string, string][];
    quotas: [string, number][];
    accounts: number;
  }>(opts.dataDir);
  let loaded = false;
  const save = () => {
    if (!loaded) return;
    state.save({
      oauth: oauth.snapshot(),
      items: [...store.items.values()],
      sessions: [...store.sessions.values()],
      appRoots: [...store.appRoots],
      quotas: [...quotas],
      accounts,
    });
  };
  const sessionTtl = opts.sessionTtlMs ?? 7 * 24 * 3600 * 1000;
  let base = "";
  let accounts = 0;
  const oauth = new OAuthServer({
    prefix: "ms",
    clientId: opts.clientId,
    clientSecret: opts.clientSecret,
    accessTokenTtlSeconds: opts.accessTokenTtlSeconds,
    rotateRefreshTokens: true,
    // A refresh token only with offline_access, as Microsoft does.
    offline: (query) => (query.get("scope") ?? "").split(" ").includes("offline_access"),
    consentEmail: "onedrive-user@example.com",
    onChange: () => save(),
    newAccount: (email) => ({
      id: `${(++accounts).toString(16).padStart(16, "0")}`,
      email,
      quota: opts.quotaBytes ?? 2 ** 40,
    }),
  });

  const saved = state.load();
  if (saved) {
    oauth.restore(saved.oauth);
    for (const item of saved.items) store.items.set(item.id, item);
    for (const session of saved.sessions) store.sessions.set(session.id, session);
    for (const [account, id] of saved.appRoots) store.appRoots.set(account, id);
    for (const [account, bytes] of saved.quotas) quotas.set(account, bytes);
    accounts = saved.accounts;
  }
  loaded = true;

  const me = (ctx: Ctx) => {
    const account = oauth.authenticate(ctx.req.headers.authorization);
    if (!account)
      throw new HttpError(
        401,
        graphError(
          "InvalidAuthenticationToken",
          oauth.isExpired(ctx.req.headers.authorization)
            ? "Access token has expired or is not yet valid."
            : "Access token is empty or invalid.",
        ),
      );
    return account;
  };

  const view = (item: Item) => ({
    id: item.id,
    name: item.name,
    size: item.size,
    createdDateTime: item.createdDateTime,
    webUrl: `${base}/view/${item.id}`,
    parentReference: item.parentId ? { id: item.parentId } : undefined,
    ...(item.folder
      ? { folder: { childCount: [...store.items.values()].filter((i) => i.parentId === item.id).length } }
      : { file: { mimeType: "application/octet-stream", hashes: { quickXorHash: item.quickXorHash } } }),
  });

  const pathNames = (raw: string): string[] =>
    raw
      .split("/")
      .filter((n) => n !== "")
      .map((n) => decodeURIComponent(n));

  const sessionOf = (ctx: Ctx): Session => {
    const session = store.sessions.get(ctx.params[0] ?? "");
    if (session && session.state === "open" && session.expiresAt <= Date.now()) session.state = "expired";
    if (session?.state !== "open")
      throw new HttpError(404, graphError("itemNotFound", "The upload session was not found."));
    return session;
  };

  const sessionView = (session: Session) => ({
    expirationDateTime: new Date(session.expiresAt).toISOString(),
    nextExpectedRanges: [`${session.received}-${session.size !== undefined ? session.size - 1 : ""}`],
  });

  const routes: Route[] = [
    {
      name: "authorize",
      method: "GET",
      path: /^\/common\/oauth2\/v2\.0\/authorize$/,
      handle(ctx) {
        const answer = oauth.authorize(ctx.url.searchParams);
        if ("page" in answer) {
          ctx.res.writeHead(400, { "Content-Type": "text/html" }).end(`<p>AADSTS900144: ${answer.page}</p>`);
          return;
        }
        ctx.res.writeHead(302, { Location: answer.redirect }).end();
      },
    },
    {
      name: "token",
      method: "POST",
      path: /^\/common\/oauth2\/v2\.0\/token$/,
      async handle(ctx) {
        const form = await formOf(ctx);
        try {
          ctx.send(200, oauth.token(form, ctx.req.headers.authorization));
        } catch (error) {
          if (!(error instanceof OAuthError)) throw error;
          ctx.send(error.status, {
            error: error.error,
            error_description: `AADSTS70000: ${error.description}`,
          });
        }
      },
    },
    {
      name: "me",
      method: "GET",
      path: /^\/v1\.0\/me$/,
      handle(ctx) {
        const account = me(ctx);
        ctx.send(200, {
          id: account.id,
          mail: account.email,
          userPrincipalName: account.email,
          displayName: account.email.split("@")[0],
        });
      },
    },
    {
      name: "drive",
      method: "GET",
      path: /^\/v1\.0\/me\/drive$/,
      handle(ctx) {
        const account = me(ctx);
        const total = quotas.get(account.id) ?? account.quota;
        const used = store.used(account.id);
        ctx.send(200, {
          id: account.id,
          driveType: "personal",
          quota: {
            total,
            used,
            remaining: Math.max(0, total - used),
            state: used >= total ? "exceeded" : "normal",
          },
        });
      },
    },
    {
      name: "approot",
      method: "GET",
      path: /^\/v1\.0\/me\/drive\/special\/approot$/,
      handle(ctx) {
        ctx.send(200, view(store.appRoot(me(ctx).id)));
      },
    },
    {
      name: "items.byPath",
      method: "GET",
      path: /^\/v1\.0\/me\/drive\/special\/approot:\/(.+):$/,
      handle(ctx) {
        const item = store.lookup(me(ctx).id, pathNames(ctx.params[0] ?? ""));
        if (!item) throw new HttpError(404, graphError("itemNotFound", "The resource could not be found."));
        ctx.send(200, view(item));
      },
    },
    {
      name: "upload.create",
      method: "POST",
      path: /^\/v1\.0\/me\/drive\/special\/approot:\/(.+):\/createUploadSession$/,
      async handle(ctx) {
        const account = me(ctx);
        const body = await ctx.json<{
          item?: { name?: unknown; fileSize?: unknown; "@microsoft.graph.conflictBehavior"?: unknown };
        }>();
        const names = pathNames(ctx.params[0] ?? "");
        const name = names.pop()!;
        for (const n of [...names, name])
          if (badName(n))
            throw new HttpError(
              400,
              graphError("invalidRequest", `The provided name "${n}" contains invalid characters.`),
            );
        const behavior = body.item?.["@microsoft.graph.conflictBehavior"] ?? "fail";
        const parent = store.lookup(account.id, names);
        if (parent && !parent.folder)
          throw new HttpError(
            409,
            graphError("nameAlreadyExists", "A file stands where a folder is needed."),
          );
        const existing = parent ? store.child(parent.id, name) : undefined;
        if (existing && (behavior === "fail" || existing.folder))
          throw new HttpError(
            409,
            graphError("nameAlreadyExists", "The specified item name already exists."),
          );
        const session = store.openSession({
          accountId: account.id,
          parentNames: names,
          name,
          size: typeof body.item?.fileSize === "number" ? body.item.fileSize : undefined,
          expiresAt: Date.now() + sessionTtl,
        });
        ctx.send(200, { uploadUrl: `${base}/upload/sessions/${session.id}`, ...sessionView(session) });
      },
    },
    {
      // Simple upload (small files, the empty file included): the body is the content.
      name: "items.put",
      method: "PUT",
      path: /^\/v1\.0\/me\/drive\/special\/approot:\/(.+):\/content$/,
      async handle(ctx) {
        const account = me(ctx);
        const names = pathNames(ctx.params[0] ?? "");
        for (const n of names)
          if (badName(n))
            throw new HttpError(
              400,
              graphError("invalidRequest", `The provided name "${n}" contains invalid characters.`),
            );
        const { bytes } = await ctx.body();
        if (bytes.length > 250 * 1024 * 1024)
          throw new HttpError(
            413,
            graphError("requestTooLarge", "Use an upload session for files over 250 MB."),
          );
        const name = names.pop()!;
        const parent = store.folder(account.id, names);
        if (!parent)
          throw new HttpError(
            409,
            graphError("nameAlreadyExists", "A file stands where a folder is needed."),
          );
        const existing = store.child(parent.id, name);
        if (existing?.folder)
          throw new HttpError(
            409,
            graphError("nameAlreadyExists", "The specified item name already exists."),
          );
        const session = store.openSession({
          accountId: account.id,
          parentNames: names,
          name,
          size: bytes.length,
          expiresAt: Date.now(),
        });
        store.append(session, bytes);
        ctx.send(existing ? 200 : 201, view(store.commit(session, parent.id)));
      },
    },
    {
      name: "upload.chunk",
      method: "PUT",
      path: /^\/upload\/sessions\/([\w-]+)$/,
      async handle(ctx) {
        // The upload URL is the credential; Graph answers 401 to a request that also sends a token.
        if (ctx.req.headers.authorization)
          throw new HttpError(
            401,
            graphError("unauthenticated", "Do not send an Authorization header to an upload URL."),
          );
        const session = sessionOf(ctx);
        if (ctx.fault?.kind === "expire-session") {
          session.state = "expired";
          throw new HttpError(404, graphError("itemNotFound", "The upload session was not found."));
        }
        if (ctx.fault?.kind === "corrupt") session.corrupt = true;
        const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(ctx.req.headers["content-range"] ?? ""));
        if (!range)
          throw new HttpError(400, graphError("invalidRequest", "Content-Range is missing or malformed."));
        const [start, end, total] = [Number(range[1]), Number(range[2]), Number(range[3])];
        const length = end - start + 1;
        if (session.size !== undefined && total !== session.size)
          throw new HttpError(
            400,
            graphError("invalidRequest", "The declared file size does not match the session's."),
          );
        session.size = total;
        if (start !== session.received) {
          if (start < session.received) session.resent += Math.min(length, session.received - start);
          await ctx.body();
          throw new HttpError(
            416,
            graphError("invalidRange", `The server expects the fragment at ${session.received}.`),
            {},
          );
        }
        if (end + 1 < total && length % GRANULARITY !== 0)
          throw new HttpError(
            400,
            graphError("invalidRequest", "Fragments other than the last must be a multiple of 320 KiB."),
          );
        const account = oauth.accounts.get(session.accountId)!;
        const quota = quotas.get(account.id) ?? account.quota;
        if (store.used(account.id) + total > quota) {
          await ctx.body();
          throw new HttpError(507, graphError("quotaLimitReached", "Insufficient Space Available"));
        }
        const { bytes, dropped } = await ctx.body();
        if (dropped) {
          // Keep what arrived in whole 320 KiB units, as a real service may keep any part.
          store.append(session, bytes.subarray(0, Math.floor(bytes.length / GRANULARITY) * GRANULARITY));
          return;
        }
        if (bytes.length !== length) {
          store.append(session, bytes.subarray(0, Math.floor(bytes.length / GRANULARITY) * GRANULARITY));
          throw new HttpError(
            400,
            graphError("invalidRequest", "The body is shorter than its Content-Range."),
          );
        }
        store.append(session, bytes);
        if (session.received < total) {
          ctx.send(202, sessionView(session));
          return;
        }
        const parent = store.folder(session.accountId, session.parentNames);
        if (!parent)
          throw new HttpError(
            409,
            graphError("nameAlreadyExists", "A file stands where a folder is needed."),
          );
        const item = store.commit(session, parent.id);
        ctx.send(201, view(item));
      },
    },
    {
      name: "upload.query",
      method: "GET",
      path: /^\/upload\/sessions\/([\w-]+)$/,
      handle(ctx) {
        const session = sessionOf(ctx);
        if (ctx.fault?.kind === "expire-session") {
          session.state = "expired";
          throw new HttpError(404, graphError("itemNotFound", "The upload session was not found."));
        }
        ctx.send(200, sessionView(session));
      },
    },
    {
      name: "upload.cancel",
      method: "DELETE",
      path: /^\/upload\/sessions\/([\w-]+)$/,
      handle(ctx) {
        const session = sessionOf(ctx);
        session.state = "cancelled";
        ctx.send(204);
      },
    },
    {
      name: "items.get",
      method: "GET",
      path: /^\/v1\.0\/me\/drive\/items\/([\w]+)$/,
      handle(ctx) {
        const account = me(ctx);
        const item = store.items.get(ctx.params[0] ?? "");
        if (!item || item.accountId !== account.id)
          throw new HttpError(404, graphError("itemNotFound", "The resource could not be found."));
        ctx.send(200, view(item));
      },
    },
    {
      name: "items.delete",
      method: "DELETE",
      path: /^\/v1\.0\/me\/drive\/items\/([\w]+)$/,
      handle(ctx) {
        const account = me(ctx);
        const item = store.items.get(ctx.params[0] ?? "");
        if (!item || item.accountId !== account.id)
          throw new HttpError(404, graphError("itemNotFound", "The resource could not be found."));
        store.remove(item.id);
        ctx.send(204);
      },
    },
    {
      // The item's webUrl: OneDrive's web view; the double serves the bytes.
      name: "view",
      method: "GET",
      path: /^\/view\/([\w]+)$/,
      handle(ctx) {
        const item = store.items.get(ctx.params[0] ?? "");
        if (!item || item.folder)
          throw new HttpError(404, graphError("itemNotFound", "The resource could not be found."));
        const content = store.content(item.id);
        ctx.res
          .writeHead(200, {
            "Content-Type": "application/octet-stream",
            "Content-Length": String(content.length),
          })
          .end(content);
      },
    },
    {
      name: "items.content",
      method: "GET",
      path: /^\/v1\.0\/me\/drive\/items\/([\w]+)\/content$/,
      handle(ctx) {
        const account = me(ctx);
        const item = store.items.get(ctx.params[0] ?? "");
        if (!item || item.folder || item.accountId !== account.id)
          throw new HttpError(404, graphError("itemNotFound", "The resource could not be found."));
        const content = store.content(item.id);
        ctx.res
          .writeHead(200, {
            "Content-Type": "application/octet-stream",
            "Content-Length": String(content.length),
          })
          .end(content);
      },
    },
  ];

  const double: Partial<OneDriveDouble> = {
    oauth,
    store,
    mintRefreshToken(email) {
      const { refreshToken, account } = oauth.mint(
        email,
        "offline_access Files.ReadWrite.AppFolder User.Read",
      );
      return { refreshToken, accountId: account.id };
    },
    filesOf(email) {
      const account = oauth.accountByEmail(email);
      return [...store.items.values()]
        .filter((i) => i.accountId === account.id && !i.folder)
        .map((i) => ({ path: store.pathOf(i), id: i.id, size: i.size, quickXorHash: i.quickXorHash ?? "" }));
    },
    contentOf: (id) => store.content(id),
    setQuota(email, bytes) {
      quotas.set(oauth.accountByEmail(email).id, bytes);
      save();
    },
    expireSession(uploadUrl) {
      const session = store.sessions.get(uploadUrl.split("/").pop() ?? "");
      if (session) session.state = "expired";
    },
    sessionStats(uploadUrl) {
      const session = store.sessions.get(uploadUrl.split("/").pop() ?? "");
      return session ? { received: session.received, resent: session.resent } : undefined;
    },
  };

  const controls = controlRoutes(double as ControlledDouble, oauth);

  const server = await startCloudServer({
    name: "onedrive",
    port: opts.port,
    host: opts.host,
    log: opts.log,
    routes,
    controls,
    faults,
    afterRequest: save,
    faultBody: (status) => graphError(faultCodes[status] ?? "generalException", `Injected HTTP ${status}.`),
    env: (url) => ({
      GRAPH_API_BASE_URL: url,
      MICROSOFT_OAUTH_AUTH_URL: `${url}/common/oauth2/v2.0/authorize`,
      MICROSOFT_OAUTH_TOKEN_URL: `${url}/common/oauth2/v2.0/token`,
    }),
  });
  base = server.url;
  return Object.assign(server, double) as OneDriveDouble;
}
