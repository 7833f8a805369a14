// The Google Drive calls a browser transfer needs from the edge: an access
// token from the profile's grant, the job's folders found or made the way the
// worker makes them (the oldest of same-named folders wins, so both settle on
// one), a resumable session opened with the web app's Origin (Google then
// answers the tab's CORS requests on it), its status, and a stored file's
// metadata. Plain fetch: googleapis and google-auth-library do not run in
// workerd. Session URIs are capabilities: never logged.
//
// Protocol: https://developers.google.com/drive/api/guides/manage-uploads#resumable
import { contentTypeFor, type DestinationOf, decryptOAuthSecret } from "@torreclou/contracts";
import type { Config } from "../config.ts";
import { ApiError } from "../errors/index.ts";

const TIMEOUT_MS = 15_000;
const FOLDER_MIME = "application/vnd.google-apps.folder";
const uploadedFields = "id,name,mimeType,size,md5Checksum,webViewLink";

/** A Drive answer the call could not use. */
export class DriveCallError extends Error {
  readonly status: number;
  constructor(what: string, status: number) {
    super(`${what}: Google Drive answered ${status}`);
    this.name = "DriveCallError";
    this.status = status;
  }
}

export interface DriveFile {
  id: string;
  name?: string;
  size?: string;
  md5Checksum?: string;
  webViewLink?: string;
  parents?: string[];
  trashed?: boolean;
  createdTime?: string;
}

/** What a session says about itself. */
export type SessionState =
  | { kind: "partial"; committed: number }
  | { kind: "done"; file: DriveFile }
  | { kind: "gone" };

export interface DriveApi {
  base: string;
  token: string;
}

function reconnect(): ApiError {
  return new ApiError(
    409,
    "storage_needs_reconnect",
    "Google Drive access was revoked or has expired: reconnect Google Drive on the Storage page, then try again.",
  );
}

/**
 * An access token for the profile's grant: the stored one while it has a
 * minute left, else a fresh one from the token endpoint (the workers write
 * theirs back; a tab's few calls need not).
 */
export async function driveApi(
  config: Config,
  destination: DestinationOf<"gdrive">,
  client: { clientId: string; clientSecret: string; tokenUrl: string },
): Promise<DriveApi> {
  const base = config.DRIVE_API_BASE_URL.replace(/\/+$/, "");
  if (destination.status === "needs_reconnect") throw reconnect();
  const secret = await decryptOAuthSecret(config.CREDENTIALS_KEYS, destination.sealed, destination.id);
  const expires = secret.accessTokenExpiresAt ? Date.parse(secret.accessTokenExpiresAt) : 0;
  if (secret.accessToken && expires - Date.now() > 60_000) return { base, token: secret.accessToken };
  const response = await fetch(client.tokenUrl, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "refresh_token",
      refresh_token: secret.refreshToken,
      client_id: client.clientId,
      client_secret: client.clientSecret,
    }),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  const body = (await response.json().catch(() => ({}))) as { access_token?: unknown; error?: unknown };
  if (response.ok && typeof body.access_token === "string") return { base, token: body.access_token };
  if (body.error === "invalid_grant") throw reconnect();
  throw new DriveCallError("refresh the access token", response.status);
}

async function call(api: DriveApi, url: string, init: RequestInit = {}): Promise<Response> {
  const response = await fetch(url, {
    ...init,
    headers: { authorization: `Bearer ${api.token}`, ...init.headers },
    redirect: "manual",
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  if (response.status === 401) throw reconnect();
  return response;
}

async function json<T>(api: DriveApi, what: string, url: string, init: RequestInit = {}): Promise<T> {
  const response = await call(api, url, init);
  if (!response.ok) {
    await response.body?.cancel();
    throw new DriveCallError(what, response.status);
  }
  return (await response.json()) as T;
}

/** A string literal for Drive's `q` language. */
function quote(value: string): string {
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}

async function foldersNamed(api: DriveApi, name: string, parent: string): Promise<DriveFile[]> {
  const q = `name = ${quote(name)} and ${quote(parent)} in parents and mimeType = '${FOLDER_MIME}' and trashed = false`;
  const found: DriveFile[] = [];
  let pageToken: string | undefined;
  do {
    const params = new URLSearchParams({
      q,
      fields: "nextPageToken,files(id,name,createdTime)",
      pageSize: "100",
    });
    if (pageToken) params.set("pageToken", pageToken);
    const page = await json<{ files?: DriveFile[]; nextPageToken?: string }>(
      api,
      "files.list",
      `${api.base}/drive/v3/files?${params}`,
    );
    found.push(...(page.files ?? []));
    pageToken = page.nextPageToken;
  } while (pageToken);
  return found;
}

/** The oldest of same-named folders: the worker settles on the same one. */
function oldest(files: DriveFile[]): DriveFile | undefined {
  return [...files].sort(
    (a, b) => (a.createdTime ?? "").localeCompare(b.createdTime ?? "") || a.id.localeCompare(b.id),
  )[0];
}

async function findOrCreateFolder(api: DriveApi, name: string, parent: string): Promise<string> {
  const existing = oldest(await foldersNamed(api, name, parent));
  if (existing) return existing.id;
  const created = await json<DriveFile>(
    api,
    "files.create",
    `${api.base}/drive/v3/files?fields=id,createdTime`,
    {
      method: "POST",
      headers: { "content-type": "application/json; charset=UTF-8" },
      body: JSON.stringify({ name, mimeType: FOLDER_MIME, parents: [parent] }),
    },
  );
  // Made at the same moment elsewhere: keep the oldest, drop ours if it lost.
  const winner = oldest(await foldersNamed(api, name, parent)) ?? created;
  if (winner.id !== created.id) {
    await call(api, `${api.base}/drive/v3/files/${encodeURIComponent(created.id)}`, {
      method: "DELETE",
    })
      .then((r) => r.body?.cancel())
      .catch(() => undefined);
  }
  return winner.id;
}

/** The id of the folder at these names under `root`, made as needed. */
export async function driveFolder(api: DriveApi, root: string, names: readonly string[]): Promise<string> {
  let parent = root;
  for (const name of names) parent = await findOrCreateFolder(api, name, parent);
  return parent;
}

/**
 * Opens a resumable session for a file of `size` bytes named `name` in
 * `parent`, with the web app's Origin so the session answers its CORS
 * requests. Returns the session URI.
 */
export async function startDriveSession(
  api: DriveApi,
  file: { name: string; parent: string; size: number },
  origin: string,
): Promise<string> {
  const type = contentTypeFor(file.name);
  const params = new URLSearchParams({ uploadType: "resumable", fields: uploadedFields });
  const response = await call(api, `${api.base}/upload/drive/v3/files?${params}`, {
    method: "POST",
    headers: {
      "content-type": "application/json; charset=UTF-8",
      "x-upload-content-type": type,
      "x-upload-content-length": String(file.size),
      origin,
    },
    body: JSON.stringify({ name: file.name, parents: [file.parent], mimeType: type }),
  });
  await response.body?.cancel();
  const location = response.headers.get("location");
  if (!response.ok || !location) throw new DriveCallError("start a resumable upload", response.status);
  return location;
}

/** Asks a session how much it holds: an empty PUT with `Content-Range: bytes *\/size`. */
export async function driveSessionState(session: string, size: number): Promise<SessionState> {
  const response = await fetch(session, {
    method: "PUT",
    headers: { "content-range": `bytes */${size}`, "content-length": "0" },
    redirect: "manual",
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  if (response.status === 200 || response.status === 201)
    return { kind: "done", file: (await response.json()) as DriveFile };
  await response.body?.cancel();
  if (response.status === 308) {
    const range = /^bytes=0-(\d+)$/.exec(response.headers.get("range") ?? "");
    return { kind: "partial", committed: range ? Number(range[1]) + 1 : 0 };
  }
  if (response.status === 404 || response.status === 410) return { kind: "gone" };
  throw new DriveCallError("upload status", response.status);
}

/** A file's metadata, or undefined when Drive has no such file. */
export async function driveFile(api: DriveApi, id: string): Promise<DriveFile | undefined> {
  const params = new URLSearchParams({ fields: `${uploadedFields},parents,trashed` });
  const response = await call(api, `${api.base}/drive/v3/files/${encodeURIComponent(id)}?${params}`);
  if (response.status === 404) {
    await response.body?.cancel();
    return undefined;
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw new DriveCallError("files.get", response.status);
  }
  return (await response.json()) as DriveFile;
}
