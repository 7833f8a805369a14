import { createReadStream, existsSync, statSync } from "node:fs";
import { open } from "node:fs/promises";
import type { DriveEnv } from "./env.ts";
import {
  type Ctx,
  defaultFileFields,
  defaultListFields,
  drain,
  errors,
  fileFields,
  googleError,
  HttpError,
  listFields,
  parseSelection,
  readJson,
  resource,
} from "./http.ts";
import { applyFields, compileQuery, parseFields, QueryError, type Selection } from "./query.ts";
import { type Account, type DriveStore, type FileRecord, FOLDER_MIME, newId } from "./store.ts";

/** The parents a create names (one; default the account's root), checked as Drive does. */
export function parentsFrom(store: DriveStore, account: Account, meta: Record<string, unknown>): string[] {
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
}

export function fileHandlers(env: DriveEnv) {
  const { store, send, authenticate } = env;
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

  // -- files ------------------------------------------------------------------

  const handleCreate = async (ctx: Ctx) => {
    const account = authenticate(ctx);
    const meta = await readJson(ctx.req);
    const sel = parseSelection(ctx.url.searchParams.get("fields"), defaultFileFields, fileFields);
    const parents = parentsFrom(store, account, meta);
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

  return { handleAbout, handleCreate, handleList, handleGet, handleMedia, handleUpdate, handleDelete };
}
