// The Drive double's resumable uploads: start a session, chunks with
// Content-Range, status queries, cancel; Google's documented semantics.

import { existsSync, rmSync } from "node:fs";
import { open } from "node:fs/promises";
import type { DriveEnv } from "./env.ts";
import { parentsFrom } from "./files.ts";
import {
  CHUNK_GRANULARITY,
  type Ctx,
  defaultFileFields,
  drain,
  errors,
  fileFields,
  googleError,
  HttpError,
  parseContentRange,
  parseSelection,
  readJson,
  resource,
} from "./http.ts";
import { applyFields } from "./query.ts";
import { FOLDER_MIME, newId, type SessionRecord } from "./store.ts";

export function uploadHandlers(env: DriveEnv) {
  const { store, stats, base, sessionTtl, locks, send, authenticate, now } = env;
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
    const parents = parentsFrom(store, account, meta);
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
      ...(typeof ctx.req.headers.origin === "string" ? { origin: ctx.req.headers.origin } : {}),
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

  /**
   * CORS on a session URI, as Google answers it for a session started with an
   * `Origin`: that origin (only) may send chunks and status queries from a
   * page, and read `Range` and the upload id. Set before any handler (or
   * fault) writes its answer, so errors carry it too.
   */
  const allowSessionOrigin = (ctx: Ctx): boolean => {
    const origin = ctx.req.headers.origin;
    const id = ctx.url.searchParams.get("upload_id") ?? "";
    const session = store.sessions.get(id);
    if (typeof origin !== "string" || !session?.origin || session.origin !== origin) return false;
    ctx.res.setHeader("Access-Control-Allow-Origin", origin);
    ctx.res.setHeader("Access-Control-Expose-Headers", "Range, X-GUploader-UploadID, Location");
    ctx.res.setHeader("Vary", "Origin");
    return true;
  };

  /** The preflight of a page's PUT to a session URI. */
  const handleUploadPreflight = async (ctx: Ctx) => {
    await drain(ctx.req);
    if (!allowSessionOrigin(ctx))
      throw new HttpError(403, googleError(403, "Forbidden", { reason: "forbidden" }));
    send(ctx, 200, undefined, {
      "Access-Control-Allow-Methods": "PUT, POST, DELETE",
      "Access-Control-Allow-Headers": String(
        ctx.req.headers["access-control-request-headers"] ?? "content-range, content-type",
      ),
      "Access-Control-Max-Age": "3600",
    });
  };

  return {
    handleUploadCreate,
    handleUploadQuery,
    handleUploadChunk,
    handleUploadCancel,
    handleUploadPreflight,
    allowSessionOrigin,
  };
}
