// Multipart uploads for the local S3 as S3 does them.
//
// Completion: s3rver 3.7.1 ignores the part ETags the client lists and
// re-reads the whole object to give it the MD5 of its bytes as ETag; S3 checks
// each listed ETag (400 InvalidPart), wants parts in ascending order (400
// InvalidPartOrder) and names the object "<MD5 of the parts' MD5s>-<part
// count>" without hashing the bytes again.
//
// Storage: s3rver writes each part to a file of its own and copies them all
// into the object at the end. Here a checked part (s3-sigv4.ts) is written
// into one file per upload, `data`, at (number - 1) × stride, the stride being
// the size of the first part to arrive: clients send every part but the last
// at one size, so completing parts 1..k is a truncate and a rename, with no
// byte copied. A part larger than the stride, or one that came as a stream,
// keeps a file of its own, and an upload with such parts (or gaps) is
// assembled by copying, as before.
//
// Listing and aborting: s3rver has neither ListParts, ListMultipartUploads
// nor AbortMultipartUpload; they work here as on S3. Each upload's initiation
// time is kept in its folder (`initiated`), so a restart lists it unchanged.
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import {
  type FileHandle,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  truncate,
  writeFile,
} from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Readable } from "node:stream";
import type { S3rverContext } from "s3rver";
import AWSAccount from "s3rver/lib/models/account.js";
import S3Error from "s3rver/lib/models/error.js";
import type FilesystemStore from "s3rver/lib/stores/filesystem.js";
import { CheckedBody } from "./s3-sigv4.ts";

interface ListedPart {
  number: number;
  etag: string;
}

/** Where a stored part's bytes are: a range of the upload's `data` file, or a file of its own. */
type PartBytes = { file: string; offset: number; length: number };

// Linux takes at most 1024 buffers in one writev.
const MAX_IOV = 1024;

// Upload folder → stride. Set by the first part to arrive: synchronously, so concurrent parts agree; on disk for a restart.
const strides = new Map<string, number>();

// The last initiation time handed out, in ms: each upload gets a later one than the one before, so two
// uploads of one key started within a millisecond still list in the order they were started.
let lastInitiated = 0;

/** Replaces the store's upload initiation, part writes and multipart completion with ones that behave as S3's. */
export function completeAsS3(store: FilesystemStore): void {
  const initiate = store.initiateUpload.bind(store);
  store.initiateUpload = async (bucket, key, uploadId, metadata) => {
    const uploadDir = join(store.getResourcePath(bucket, undefined, "uploads"), uploadId);
    lastInitiated = Math.max(Date.now(), lastInitiated + 1);
    const initiated = new Date(lastInitiated).toISOString();
    await mkdir(uploadDir, { recursive: true });
    // Before `key`, which is what makes the upload exist: no listing sees it without its time.
    await writeFile(join(uploadDir, "initiated"), initiated);
    await initiate(bucket, key, uploadId, metadata);
  };

  const strideOf = async (uploadDir: string, size: number): Promise<number> => {
    const known = strides.get(uploadDir);
    if (known !== undefined) return known;
    const saved = await readFile(join(uploadDir, "stride"), "utf8").then(Number, () => undefined);
    const stride = strides.get(uploadDir) ?? saved ?? Math.max(size, 1);
    if (!strides.has(uploadDir)) {
      strides.set(uploadDir, stride);
      if (saved === undefined) await writeFile(join(uploadDir, "stride"), String(stride));
    }
    return stride;
  };

  const streamedPart = store.putPart.bind(store);
  store.putPart = async (bucket: string, uploadId: string, partNumber: number, content: Readable) => {
    // S3 refuses parts for an upload that is not there (never was, aborted, completed).
    const { uploadDir } = await uploadOf(store, bucket, uploadId);
    const slot = join(uploadDir, `${partNumber}.slot`);
    if (!(content instanceof CheckedBody)) {
      await rm(slot, { force: true });
      return streamedPart(bucket, uploadId, partNumber, content);
    }
    const stride = await strideOf(uploadDir, content.size);
    if (content.size > stride) {
      await rm(slot, { force: true });
      await writeChunks(join(uploadDir, String(partNumber)), content.chunks, "w", 0);
    } else {
      await rm(join(uploadDir, String(partNumber)), { force: true });
      await writeChunks(join(uploadDir, "data"), content.chunks, "r+", (partNumber - 1) * stride);
      await writeFile(slot, String(content.size));
    }
    await writeFile(join(uploadDir, `${partNumber}.md5`), content.md5);
    return { size: content.size, md5: content.md5 };
  };

  store.putObjectMultipart = async (bucket: string, uploadId: string, parts: ListedPart[]) => {
    const { uploadDir, key } = await uploadOf(store, bucket, uploadId);
    const metadata = await readFile(join(uploadDir, "metadata"), "utf8").then(
      (text) => JSON.parse(text) as Record<string, string>,
      () => {
        throw noSuchUpload();
      },
    );
    for (let i = 1; i < parts.length; i++) {
      if ((parts[i]?.number ?? 0) <= (parts[i - 1]?.number ?? 0)) {
        throw new S3Error("InvalidPartOrder", "The list of parts was not in ascending order.");
      }
    }
    const digests: Buffer[] = [];
    for (const part of parts) {
      const md5 = await readFile(join(uploadDir, `${part.number}.md5`), "utf8").catch(() => undefined);
      if (md5 === undefined || md5 !== part.etag) {
        throw new S3Error(
          "InvalidPart",
          "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
        );
      }
      digests.push(Buffer.from(md5, "hex"));
    }
    const etag = `${createHash("md5").update(Buffer.concat(digests)).digest("hex")}-${parts.length}`;

    const stride = await readFile(join(uploadDir, "stride"), "utf8").then(Number, () => 0);
    const located: PartBytes[] = [];
    for (const part of parts) {
      const inSlot = await readFile(join(uploadDir, `${part.number}.slot`), "utf8").then(Number, () => -1);
      if (inSlot >= 0) {
        located.push({ file: join(uploadDir, "data"), offset: (part.number - 1) * stride, length: inSlot });
      } else {
        const file = join(uploadDir, String(part.number));
        located.push({ file, offset: 0, length: (await stat(file)).size });
      }
    }
    // Parts 1..k back to back in `data`: the file is the object once cut to length.
    const inPlace =
      located.length > 0 &&
      located.every(
        (at, i) =>
          at.file === join(uploadDir, "data") &&
          parts[i]?.number === i + 1 &&
          (i === located.length - 1 || at.length === stride),
      );

    // Assembled beside the object, then renamed over it: readers see the old object or the new one.
    const objectPath = store.getResourcePath(bucket, key, "object");
    await mkdir(dirname(objectPath), { recursive: true });
    const assembling = `${objectPath}.${uploadId}.partial`;
    if (inPlace) {
      const last = located[located.length - 1];
      await rename(join(uploadDir, "data"), assembling);
      await truncate(assembling, (last?.offset ?? 0) + (last?.length ?? 0));
    } else {
      await copyRanges(assembling, located);
    }
    await rename(assembling, objectPath);
    await store.putMetadata(bucket, key, metadata, etag);
    strides.delete(uploadDir);
    await rm(uploadDir, { recursive: true, force: true });
    return { md5: etag, size: (await stat(objectPath)).size };
  };
}

/**
 * Koa middleware for s3rver, which answers ListParts (GET with `uploadId`)
 * and AbortMultipartUpload (DELETE with `uploadId`) 405: the parts stored so
 * far, as S3 lists them, `max-parts` at a time from `part-number-marker` on;
 * and an abort that deletes them. Goes just in front of s3rver's router.
 */
export function uploadRequests(store: FilesystemStore) {
  return async (ctx: S3rverContext, next: () => Promise<void>): Promise<void> => {
    const uploadId = ctx.query.uploadId;
    if ((ctx.method !== "GET" && ctx.method !== "DELETE") || typeof uploadId !== "string") return next();
    const [bucket = "", ...keyPath] = ctx.path.slice(1).split("/").map(decodeURIComponent);
    const key = keyPath.join("/");
    const upload = await uploadOf(store, bucket, uploadId);
    // S3 names the key as well as the upload id; another key is another upload.
    if (upload.key !== key) throw noSuchUpload();
    const { uploadDir } = upload;
    if (ctx.method === "DELETE") {
      strides.delete(uploadDir);
      await rm(uploadDir, { recursive: true, force: true });
      ctx.status = 204;
      return;
    }
    const marker = Number(ctx.query["part-number-marker"] ?? 0) || 0;
    const maxParts = Math.min(1000, Math.max(1, Number(ctx.query["max-parts"] ?? 1000) || 1000));
    const numbers = (await readdir(uploadDir))
      .map((name) => /^(\d+)\.md5$/.exec(name)?.[1])
      .filter((n): n is string => n !== undefined)
      .map(Number)
      .filter((n) => n > marker)
      .sort((a, b) => a - b);
    const page = numbers.slice(0, maxParts);
    const parts = [];
    for (const number of page) {
      const md5Path = join(uploadDir, `${number}.md5`);
      const [etag, written, inSlot] = await Promise.all([
        readFile(md5Path, "utf8"),
        stat(md5Path),
        readFile(join(uploadDir, `${number}.slot`), "utf8").then(Number, () => undefined),
      ]);
      const size = inSlot ?? (await stat(join(uploadDir, String(number)))).size;
      parts.push({
        PartNumber: number,
        LastModified: written.mtime.toISOString(),
        ETag: `"${etag}"`,
        Size: size,
      });
    }
    // A plain object: s3rver writes it out as XML.
    ctx.body = {
      ListPartsResult: {
        "@": { xmlns: "http://s3.amazonaws.com/doc/2006-03-01/" },
        Bucket: bucket,
        Key: key,
        UploadId: uploadId,
        PartNumberMarker: marker,
        NextPartNumberMarker: page.at(-1) ?? marker,
        MaxParts: maxParts,
        IsTruncated: numbers.length > page.length,
        Part: parts,
      },
    };
  };
}

/** An upload not yet completed or aborted, as ListMultipartUploads shows it. */
interface OpenUpload {
  key: string;
  uploadId: string;
  initiated: Date;
  storageClass: string;
}

/** What a ListMultipartUploads request asks for. */
interface UploadsQuery {
  prefix: string;
  delimiter: string;
  keyMarker: string;
  /** Only with keyMarker (S3 ignores it otherwise). */
  uploadIdMarker: string;
  maxUploads: number;
}

/** One line of a listing: an upload, or the common prefix standing for all those under it. */
type Listed = { upload: OpenUpload } | { prefix: string };

/**
 * Koa middleware for s3rver, which answers ListMultipartUploads (GET on a
 * bucket with `uploads`) 501: the bucket's unfinished uploads as S3 lists
 * them, by key and then by initiation, `max-uploads` (at most 1000) at a time
 * after `key-marker` / `upload-id-marker`, with `prefix`, and with
 * `delimiter` rolling keys up into common prefixes. Goes just in front of
 * s3rver's router.
 */
export function listUploads(store: FilesystemStore) {
  return async (ctx: S3rverContext, next: () => Promise<void>): Promise<void> => {
    if (ctx.method !== "GET" || !("uploads" in ctx.query) || "uploadId" in ctx.query) return next();
    const [rawBucket = "", ...keyPath] = ctx.path.slice(1).split("/");
    // On an object it is not this request; s3rver's router answers it.
    if (keyPath.join("/") !== "") return next();
    const bucket = decodeURIComponent(rawBucket);
    // Bucket names are never paths: "." and ".." are no buckets.
    if (!/^[a-z0-9][\w.-]*$/i.test(bucket) || !(await store.getBucket(bucket))) {
      throw new S3Error("NoSuchBucket", "The specified bucket does not exist", { BucketName: bucket });
    }
    const param = (name: string): string => {
      const value = ctx.query[name];
      return (Array.isArray(value) ? value[0] : value) ?? "";
    };
    const encodingType = param("encoding-type");
    if (encodingType !== "" && encodingType !== "url") {
      throw new S3Error("InvalidArgument", "Invalid Encoding Method specified in Request", {
        ArgumentName: "encoding-type",
        ArgumentValue: encodingType,
      });
    }
    const query: UploadsQuery = {
      prefix: param("prefix"),
      delimiter: param("delimiter"),
      keyMarker: param("key-marker"),
      uploadIdMarker: param("key-marker") === "" ? "" : param("upload-id-marker"),
      maxUploads: maxUploadsOf(ctx.query["max-uploads"]),
    };
    const { listed, truncated } = pageOf(await openUploads(store, bucket), query);
    // With encoding-type=url, S3 URL-encodes every key and prefix it answers with.
    const out = (text: string) => (encodingType === "url" ? encodeURIComponent(text) : text);
    const last = listed.at(-1);
    const owner = { ID: AWSAccount.DUMMY_ACCOUNT.id, DisplayName: AWSAccount.DUMMY_ACCOUNT.displayName };
    // A plain object, undefined members left out: s3rver writes it out as XML.
    ctx.body = {
      ListMultipartUploadsResult: {
        "@": { xmlns: "http://s3.amazonaws.com/doc/2006-03-01/" },
        Bucket: bucket,
        KeyMarker: out(query.keyMarker),
        UploadIdMarker: query.uploadIdMarker,
        NextKeyMarker: last ? out("upload" in last ? last.upload.key : last.prefix) : undefined,
        Prefix: query.prefix === "" ? undefined : out(query.prefix),
        Delimiter: query.delimiter === "" ? undefined : out(query.delimiter),
        NextUploadIdMarker: last && "upload" in last ? last.upload.uploadId : undefined,
        MaxUploads: query.maxUploads,
        IsTruncated: truncated,
        Upload: listed.flatMap((entry) =>
          "upload" in entry
            ? [
                {
                  Key: out(entry.upload.key),
                  UploadId: entry.upload.uploadId,
                  Initiator: owner,
                  Owner: owner,
                  StorageClass: entry.upload.storageClass,
                  Initiated: entry.upload.initiated.toISOString(),
                },
              ]
            : [],
        ),
        CommonPrefixes: listed.flatMap((entry) => ("prefix" in entry ? [{ Prefix: out(entry.prefix) }] : [])),
        EncodingType: encodingType === "" ? undefined : encodingType,
      },
    };
  };
}

/** `max-uploads` as S3 reads it: 1000 when absent, at most 1000, and 400 InvalidArgument unless a whole number. */
function maxUploadsOf(value: string | string[] | undefined): number {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined) return 1000;
  if (!/^\d+$/.test(text) || Number(text) > 2 ** 31 - 1) {
    throw new S3Error("InvalidArgument", "Provided max-uploads not an integer or within integer range", {
      ArgumentName: "max-uploads",
      ArgumentValue: text,
    });
  }
  return Math.min(Number(text), 1000);
}

/**
 * The page `query` asks for out of `uploads` (sorted as S3 lists them): the
 * uploads and common prefixes after the markers, each prefix once and counted
 * as one, and whether more follow.
 */
function pageOf(uploads: OpenUpload[], query: UploadsQuery): { listed: Listed[]; truncated: boolean } {
  const { prefix, delimiter, keyMarker, uploadIdMarker, maxUploads } = query;
  // Where the marker upload stands among its key's uploads, if it is still there; otherwise
  // S3's documented rule applies: that key's uploads with a lexicographically greater id.
  const marker = uploadIdMarker
    ? uploads.find((upload) => upload.key === keyMarker && upload.uploadId === uploadIdMarker)
    : undefined;
  const isAfterMarker = (upload: OpenUpload): boolean => {
    const byKey = compareKeys(upload.key, keyMarker);
    if (byKey !== 0 || uploadIdMarker === "") return byKey > 0;
    return marker ? compareUploads(upload, marker) > 0 : upload.uploadId > uploadIdMarker;
  };
  const listed: Listed[] = [];
  if (maxUploads === 0) return { listed, truncated: false };
  for (const upload of uploads) {
    if (!upload.key.startsWith(prefix) || !isAfterMarker(upload)) continue;
    const cut = delimiter === "" ? -1 : upload.key.indexOf(delimiter, prefix.length);
    let entry: Listed = { upload };
    if (cut >= 0) {
      const common = upload.key.slice(0, cut + delimiter.length);
      const previous = listed.at(-1);
      // Keys under one prefix are next to each other; a prefix at or before the marker was on an earlier page.
      if (
        (previous && "prefix" in previous && previous.prefix === common) ||
        compareKeys(common, keyMarker) <= 0
      )
        continue;
      entry = { prefix: common };
    }
    if (listed.length === maxUploads) return { listed, truncated: true };
    listed.push(entry);
  }
  return { listed, truncated: false };
}

/** S3 orders keys by their UTF-8 bytes, which is not JavaScript's (UTF-16) string order. */
function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

/** S3's listing order: by key, then by initiation (and by id, should two share a time). */
function compareUploads(a: OpenUpload, b: OpenUpload): number {
  return (
    compareKeys(a.key, b.key) ||
    a.initiated.getTime() - b.initiated.getTime() ||
    (a.uploadId < b.uploadId ? -1 : a.uploadId > b.uploadId ? 1 : 0)
  );
}

/** A bucket's unfinished uploads in S3's listing order, read from disk. */
async function openUploads(store: FilesystemStore, bucket: string): Promise<OpenUpload[]> {
  const uploadsDir = store.getResourcePath(bucket, undefined, "uploads");
  const ids = await readdir(uploadsDir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return [];
    throw error;
  });
  const found = await Promise.all(ids.map((uploadId) => openUpload(join(uploadsDir, uploadId), uploadId)));
  return found.filter((upload): upload is OpenUpload => upload !== undefined).sort(compareUploads);
}

/** The upload in `uploadDir`, or undefined if it is gone (completed or aborted while being read). */
async function openUpload(uploadDir: string, uploadId: string): Promise<OpenUpload | undefined> {
  try {
    const key = await readFile(join(uploadDir, "key"), "utf8");
    // Being initiated this very moment: s3rver is still writing it.
    if (key === "") return undefined;
    const initiated = await readFile(join(uploadDir, "initiated"), "utf8").then(
      (text) => new Date(text),
      // Started before initiation times were kept: the key was written when it began.
      async () => (await stat(join(uploadDir, "key"))).mtime,
    );
    // The request headers it was initiated with; written alongside `key`, so perhaps not yet.
    const headers = await readFile(join(uploadDir, "metadata"), "utf8").then(
      jsonObject,
      (): Record<string, unknown> => ({}),
    );
    const storageClass = headers["x-amz-storage-class"];
    return {
      key,
      uploadId,
      initiated,
      storageClass: typeof storageClass === "string" && storageClass !== "" ? storageClass : "STANDARD",
    };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/** `text` as a JSON object, or an empty one if it is not one (yet). */
function jsonObject(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** An upload's folder and object key, or NoSuchUpload if there is no such upload (ids are never paths). */
async function uploadOf(
  store: FilesystemStore,
  bucket: string,
  uploadId: string,
): Promise<{ uploadDir: string; key: string }> {
  if (!/^[\w-]+$/.test(uploadId)) throw noSuchUpload();
  const uploadDir = join(store.getResourcePath(bucket, undefined, "uploads"), uploadId);
  const key = await readFile(join(uploadDir, "key"), "utf8").catch(() => undefined);
  if (key === undefined) throw noSuchUpload();
  return { uploadDir, key };
}

function noSuchUpload(): S3Error {
  return new S3Error(
    "NoSuchUpload",
    "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
  );
}

/** Writes `chunks` at `position` with as few system calls as Linux allows (writev). */
async function writeChunks(
  path: string,
  chunks: readonly Buffer[],
  mode: "w" | "r+",
  position: number,
): Promise<void> {
  const flags = mode === "w" ? "w" : constants.O_RDWR | constants.O_CREAT;
  const file = await open(path, flags);
  try {
    let at = position;
    for (let i = 0; i < chunks.length; i += MAX_IOV) {
      let batch = chunks.slice(i, i + MAX_IOV);
      let left = batch.reduce((sum, chunk) => sum + chunk.length, 0);
      while (left > 0) {
        const { bytesWritten } = await file.writev(batch, at);
        at += bytesWritten;
        left -= bytesWritten;
        batch = dropBytes(batch, bytesWritten);
      }
    }
  } finally {
    await file.close();
  }
}

/** What is left of `chunks` after its first `count` bytes (a short write). */
function dropBytes(chunks: Buffer[], count: number): Buffer[] {
  let skip = count;
  let i = 0;
  while (i < chunks.length && skip >= (chunks[i]?.length ?? 0)) skip -= chunks[i++]?.length ?? 0;
  const rest = chunks.slice(i);
  if (skip > 0 && rest[0]) rest[0] = rest[0].subarray(skip);
  return rest;
}

/**
 * Writes the byte ranges one after another into `target` through one small
 * buffer: a step that stays in the CPU cache copies several times faster than
 * megabyte-sized ones.
 */
async function copyRanges(target: string, ranges: PartBytes[]): Promise<void> {
  const out = await open(target, "w");
  const step = Buffer.allocUnsafe(256 * 1024);
  try {
    for (const range of ranges) {
      const input: FileHandle = await open(range.file, "r");
      try {
        for (let done = 0; done < range.length; ) {
          const want = Math.min(step.length, range.length - done);
          const { bytesRead } = await input.read(step, 0, want, range.offset + done);
          if (bytesRead === 0) throw new Error(`${range.file} ended before its part did`);
          for (let at = 0; at < bytesRead; ) at += (await out.write(step, at, bytesRead - at)).bytesWritten;
          done += bytesRead;
        }
      } finally {
        await input.close();
      }
    }
  } finally {
    await out.close();
  }
}
