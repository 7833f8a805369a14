// The Drive double's HTTP pieces: Google's error JSON, request reading,
// routing a request to its route, `fields` selections and file resources.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Fault, Route } from "./faults.ts";
import { parseFields, type Selection, selectedNames } from "./query.ts";
import { type FileRecord, FOLDER_MIME } from "./store.ts";

/** Google requires every chunk but the last to be a multiple of this. */
export const CHUNK_GRANULARITY = 256 * 1024;

export const fileFields = new Set([
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
export const listFields = new Set(["kind", "nextPageToken", "incompleteSearch", "files"]);
export const defaultFileFields = "kind,id,name,mimeType";
export const defaultListFields = `kind,nextPageToken,incompleteSearch,files(${defaultFileFields})`;

// ---------------------------------------------------------------------------
// Google's error JSON.

export interface GoogleErrorItem {
  message: string;
  domain: string;
  reason: string;
  location?: string;
  locationType?: string;
}

export const statusNames: Record<number, string> = {
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

export function googleError(code: number, message: string, item: Partial<GoogleErrorItem> = {}) {
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

export const errors = {
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

export class HttpError extends Error {
  readonly status: number;
  readonly body: unknown;
  constructor(status: number, body: unknown) {
    super(`HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

// ---------------------------------------------------------------------------

export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  route: Route;
  /** A fault to answer with instead of the real response (afterCommit faults). */
  override: Fault | undefined;
  /** Cut the connection after this many body bytes (drop faults). */
  dropAfter: number | undefined;
}

export function classify(method: string, url: URL, req: IncomingMessage): Route {
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
      if (method === "OPTIONS") return "upload.preflight";
    } else if (method === "POST") return "upload.create";
  }
  return "unknown";
}

export async function readBody(req: IncomingMessage, limit = 1024 * 1024): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new HttpError(413, googleError(413, "Request Entity Too Large"));
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts);
}

export async function drain(req: IncomingMessage): Promise<void> {
  try {
    for await (const _ of req) {
      // discard
    }
  } catch {
    // the client went away
  }
}

export async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
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

export async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
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

export function parseSelection(
  spec: string | null,
  fallback: string,
  allowed: Set<string>,
  nested?: Set<string>,
) {
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

export function resource(file: FileRecord): Record<string, unknown> {
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

export function parseContentRange(
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
