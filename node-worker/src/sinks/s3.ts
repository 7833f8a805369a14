// Uploads into any S3-compatible bucket (AWS S3, R2, B2, MinIO, ...). Small
// files go up in one PutObject; bigger ones as a multipart upload whose parts
// are sent as soon as their bytes are downloaded, journaled so another attempt
// can resume.
//
// Integrity: over plain HTTP every body is signed with its SHA-256 (SigV4's
// x-amz-content-sha256, which the SDK computes for in-memory bodies), and the
// provider refuses a body that does not match it. Over HTTPS, TLS already
// authenticates every byte in transit, so bodies go as UNSIGNED-PAYLOAD, as S3
// allows, and the worker spares a SHA-256 pass over everything it uploads
// (~0.6 CPU-s per GiB with SHA extensions, several times that without).
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import {
  partSizeFor,
  resumedPartSize,
  type S3Secret,
  s3ObjectKey,
  UnsafeNameError,
} from "@torreclou/contracts";
import type { S3ProfileConfig } from "@torreclou/db";
import type { Logger } from "pino";
import { egressRefusalIn } from "../egress/index.ts";
import type { JournalPart } from "../jobs/store.ts";
import {
  checkReadLength,
  contentTypeFor,
  type PartClaim,
  PermanentJobError,
  type Sink,
  type SinkFile,
  type UploadHooks,
  type UploadResult,
} from "./index.ts";
import { LocalReader } from "./local.ts";
import type { Outage } from "./outage.ts";

const MiB = 1024 * 1024;
/** Part bytes held in memory per upload: the parts in flight, the one being read among them. */
const PART_BUFFER_BYTES = 32 * MiB;

export interface S3SinkOptions {
  config: S3ProfileConfig;
  secret: S3Secret;
  /** Folder under the profile prefix: the job's target folder or its id. */
  folder: string;
  /** Smallest part size (>= 5 MiB). */
  partSize: number;
  /** Parts in flight per upload. */
  concurrency: number;
  log: Logger;
  /** The job's storage outage: transient failures wait within its limit instead of failing the job. */
  outage?: Outage | undefined;
}

// The part layout is the contracts' (contracts/src/parts.ts), shared with the edge's browser uploads.
export { partSizeFor, resumedPartSize } from "@torreclou/contracts";

/** The object key of a torrent file: the profile prefix, then the job folder and the path as names.ts maps them. */
export function objectKey(config: Pick<S3ProfileConfig, "prefix">, folder: string, path: string): string {
  try {
    return s3ObjectKey(config.prefix, folder, path);
  } catch (error) {
    if (error instanceof UnsafeNameError) throw new PermanentJobError(error.message, { cause: error });
    throw error;
  }
}

function statusOf(error: unknown): number | undefined {
  if (error instanceof S3ServiceException) return error.$metadata.httpStatusCode;
  return undefined;
}

function codeOf(error: unknown): string {
  if (error && typeof error === "object") {
    const e = error as { name?: unknown; Code?: unknown; code?: unknown };
    for (const value of [e.Code, e.name, e.code]) if (typeof value === "string") return value;
  }
  return "";
}

/** Network trouble, throttling or a server-side error: worth trying again. */
export function isTransient(error: unknown): boolean {
  // A destination the egress policy refuses stays refused.
  if (error instanceof PermanentJobError || egressRefusalIn(error)) return false;
  const code = codeOf(error);
  if (
    [
      "SlowDown",
      "RequestTimeout",
      "RequestTimeoutException",
      "ThrottlingException",
      "TimeoutError",
      // The body arrived damaged: send it again.
      "XAmzContentSHA256Mismatch",
      "BadDigest",
    ].includes(code)
  ) {
    return true;
  }
  const status = statusOf(error);
  if (status !== undefined) return status >= 500 || status === 429 || status === 408;
  // No HTTP response at all: connection refused/reset, DNS, socket timeout.
  return code !== "AbortError" && !(error instanceof S3ServiceException);
}

/** A sentence for the user about a permanent storage error. */
export function describeS3Error(error: unknown, bucket: string): string {
  const code = codeOf(error);
  const status = statusOf(error);
  switch (code) {
    case "InvalidAccessKeyId":
      return "The storage provider rejected the access key: it does not know this access key id. Check the storage profile's credentials.";
    case "SignatureDoesNotMatch":
      return "The storage provider rejected the access key: the secret access key does not match. Check the storage profile's credentials.";
    case "ExpiredToken":
    case "InvalidToken":
      return "The storage provider rejected the access key as expired or invalid. Update the storage profile's credentials.";
    case "NoSuchBucket":
      return `The bucket "${bucket}" does not exist at the storage provider. Create it or fix the storage profile.`;
    case "AccessDenied":
    case "AllAccessDisabled":
      return `The storage provider denied access to the bucket "${bucket}". The access key needs permission to write objects there.`;
    case "EntityTooLarge":
      return "The storage provider refused a file as too large.";
    case "NoSuchUpload":
      return "The storage provider dropped the multipart upload while it was under way (aborted, or expired by a bucket lifecycle rule).";
    case "QuotaExceeded":
    case "StorageQuotaExceeded":
      return "The storage provider refused the upload: the account's storage quota is exhausted.";
  }
  if (status === 404)
    return `The bucket "${bucket}" does not exist at the storage provider. Create it or fix the storage profile.`;
  if (status === 403) {
    return `The storage provider denied access to the bucket "${bucket}". Check the storage profile's credentials and permissions.`;
  }
  const message = error instanceof Error ? error.message : String(error);
  return `The storage provider refused the upload (${code || status || "error"}): ${message}`;
}

export interface RetryOptions {
  signal: AbortSignal;
  attempts?: number;
  log?: Logger;
  what?: string;
  /**
   * With an outage, transient failures are retried for as long as the
   * outage's limit allows (not a number of attempts), and it records them.
   */
  outage?: Outage | undefined;
  /** The provider, for the outage's message. */
  where?: string;
}

/** Runs `fn`, retrying transient failures with exponential backoff and jitter. */
export async function withRetry<T>(fn: () => Promise<T>, opts: RetryOptions): Promise<T> {
  const attempts = opts.attempts ?? 7;
  for (let attempt = 1; ; attempt++) {
    opts.signal.throwIfAborted();
    try {
      const result = await fn();
      opts.outage?.ok();
      return result;
    } catch (error) {
      if (opts.signal.aborted) throw opts.signal.reason ?? error;
      if (!isTransient(error)) throw error;
      if (opts.outage) opts.outage.failed(error, opts.where ?? "the storage provider");
      else if (attempt >= attempts) throw error;
      // Backoff tops out at 10 s, so a provider that is back is used again within seconds.
      const delay = Math.min(10_000, 250 * 2 ** Math.min(attempt, 10)) * (0.5 + Math.random() / 2);
      opts.log?.warn(
        { err: error, attempt, delayMs: Math.round(delay), what: opts.what },
        "transient storage error, retrying",
      );
      await sleep(delay, undefined, { signal: opts.signal });
    }
  }
}

function unquote(etag: string | undefined): string {
  return (etag ?? "").replace(/"/g, "");
}

/**
 * The object's ETag as its checksum: the MD5 of a single PUT, or S3's
 * MD5-of-part-MD5s with a "-<parts>" suffix for a multipart upload (on
 * providers that follow S3; others put their own opaque tag there).
 */
function etagChecksum(etag: string | undefined): string {
  return `etag:${unquote(etag)}`;
}

/** Bytes of a body handed to a TLS socket at a time. */
const BODY_SLICE = 1024 * 1024;

/** Commands whose bodies go unhashed over HTTPS. */
const UNSIGNED_BODIES = new Set(["UploadPartCommand", "PutObjectCommand"]);

/** Whether requests to `endpoint` (none: AWS S3 itself) travel over TLS. */
export function overTls(endpoint: string | undefined): boolean {
  if (endpoint === undefined || endpoint === "") return true;
  return URL.parse(endpoint)?.protocol === "https:";
}

export class S3Sink implements Sink {
  readonly client: S3Client;
  readonly #opts: S3SinkOptions;
  readonly #bucket: string;
  /** Requests travel over TLS: bodies go unhashed, and in slices (bodyOf). */
  readonly #overTls: boolean;
  /** Parts in flight across this sink's (a job's) uploads. */
  readonly #slots: PartSlots;
  /** The uploads taking parts where the download is (UploadHooks.frontier), with where it is in their file. */
  readonly #following = new Map<object, { frontier: () => number; size: number }>();
  /** Parts in flight of files already on disk, sent while another upload follows the download. */
  #behind = 0;
  /** Uploads waiting for such a part to be done. */
  #behindWaiters: (() => void)[] = [];
  /** Part buffers no part holds now, by size: reused by the job's next parts. */
  readonly #spare = new Map<number, Buffer[]>();
  /** Uploads here claim the parts the download is filling (see nextPart): the runner lets one follow it. */
  readonly followsDownload = true;

  constructor(opts: S3SinkOptions) {
    this.#opts = opts;
    this.#bucket = opts.config.bucket;
    this.#overTls = overTls(opts.config.endpoint);
    this.#slots = new PartSlots(2 * Math.max(1, opts.concurrency));
    this.client = new S3Client({
      endpoint: opts.config.endpoint,
      region: opts.config.region || "us-east-1",
      forcePathStyle: opts.config.forcePathStyle ?? false,
      credentials: { accessKeyId: opts.secret.accessKeyId, secretAccessKey: opts.secret.secretAccessKey },
      // Checksums only where an operation requires them; we send Content-MD5
      // ourselves, which every S3-compatible server understands.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      // Our own retry loop (withRetry) backs off for longer than the SDK's.
      maxAttempts: 2,
      // No "Expect: 100-continue" before a body: it costs a round trip per
      // part, and over HTTPS, Node then writes the body from within the TLS
      // socket's read callback, which measured ~5 more CPU-s per GiB
      // (node-worker/bench/e2e.ts, upload-only over HTTPS). A body refused on
      // sight (a wrong key) is sent once for nothing, at most a part.
      expectContinueHeader: false,
      // The SDK's own notes (e.g. that it does not retry a sliced body: withRetry does) go to our log.
      logger: {
        trace: () => {},
        debug: () => {},
        info: () => {},
        warn: (...args: unknown[]) => opts.log.debug({ sdk: args }, "S3 client note"),
        error: (...args: unknown[]) => opts.log.debug({ sdk: args }, "S3 client note"),
      },
    });
    if (this.#overTls) {
      // Before signing: a request that names its payload hash is signed with that name, unhashed.
      this.client.middlewareStack.add(
        (next, context) => async (args) => {
          const request = args.request as { headers?: Record<string, string> };
          if (UNSIGNED_BODIES.has(context.commandName ?? "") && request.headers) {
            request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD";
          }
          return next(args);
        },
        { step: "build", name: "unsignedPayloadOverTls" },
      );
    }
  }

  /**
   * A request body. Over TLS a Buffer would be encrypted whole into the
   * socket's buffer on the first write, a second copy of every part in
   * flight; slices of 1 MiB are encrypted as the socket takes them. Over
   * plain HTTP the SDK needs the whole buffer to sign its SHA-256.
   */
  #bodyOf(body: Buffer): Buffer | Readable {
    if (!this.#overTls || body.length <= BODY_SLICE) return body;
    const slices: Buffer[] = [];
    for (let at = 0; at < body.length; at += BODY_SLICE) slices.push(body.subarray(at, at + BODY_SLICE));
    return Readable.from(slices, { objectMode: false, highWaterMark: BODY_SLICE });
  }

  /** The provider as the user configured it, for messages. */
  get #where(): string {
    return this.#opts.config.endpoint ?? `AWS S3 (${this.#opts.config.region || "us-east-1"})`;
  }

  keyFor(path: string): string {
    return objectKey(this.#opts.config, this.#opts.folder, path);
  }

  #permanent(error: unknown): never {
    if (error instanceof PermanentJobError) throw error;
    if (isTransient(error)) throw error;
    const name = codeOf(error);
    if (name === "AbortError") throw error;
    throw new PermanentJobError(describeS3Error(error, this.#bucket), { cause: error });
  }

  async preflight(signal: AbortSignal): Promise<void> {
    try {
      await withRetry(
        () => this.client.send(new HeadBucketCommand({ Bucket: this.#bucket }), { abortSignal: signal }),
        {
          signal,
          log: this.#opts.log,
          outage: this.#opts.outage,
          where: this.#where,
          what: "HeadBucket",
          attempts: 4,
        },
      );
    } catch (error) {
      if (statusOf(error) === 403 && codeOf(error) !== "AccessDenied") {
        // HEAD responses carry no error body: ask again with a GET to learn why.
        await this.#explainForbidden(signal);
      }
      if (isTransient(error) && !signal.aborted) {
        const message = error instanceof Error ? error.message : String(error);
        throw new PermanentJobError(
          `Could not reach the storage provider at ${this.#opts.config.endpoint ?? "AWS S3"}: ${message}`,
          {
            cause: error,
          },
        );
      }
      this.#permanent(error);
    }
  }

  async #explainForbidden(signal: AbortSignal): Promise<void> {
    try {
      await this.client.send(new ListObjectsV2Command({ Bucket: this.#bucket, MaxKeys: 1 }), {
        abortSignal: signal,
      });
    } catch (error) {
      const code = codeOf(error);
      if (
        [
          "InvalidAccessKeyId",
          "SignatureDoesNotMatch",
          "ExpiredToken",
          "InvalidToken",
          "NoSuchBucket",
        ].includes(code)
      ) {
        throw new PermanentJobError(describeS3Error(error, this.#bucket), { cause: error });
      }
    }
    throw new PermanentJobError(
      `The storage provider rejected the access key or denied it access to the bucket "${this.#bucket}". Check the storage profile's credentials and permissions.`,
    );
  }

  /** One ranged GetObject (seeding from storage). */
  async read(cloudId: string, start: number, end: number, signal: AbortSignal): Promise<Uint8Array> {
    const what = `GetObject ${cloudId}`;
    const answer = await withRetry(
      async () => {
        const got = await this.client.send(
          new GetObjectCommand({ Bucket: this.#bucket, Key: cloudId, Range: `bytes=${start}-${end - 1}` }),
          { abortSignal: signal },
        );
        if (!got.Body) throw new Error(`${what}: no body`);
        return got.Body.transformToByteArray();
      },
      { signal, log: this.#opts.log, outage: this.#opts.outage, where: this.#where, what },
    ).catch((error: unknown) => this.#permanent(error));
    return checkReadLength(answer, start, end, what);
  }

  partSize(size: number): number {
    return partSizeFor(size, this.#opts.partSize);
  }

  async upload(file: SinkFile, hooks: UploadHooks): Promise<UploadResult> {
    try {
      // A resumed upload keeps the part size its journal was written with,
      // whatever this worker is configured with now.
      const journaled = file.uploadSession ? await hooks.journal() : [];
      const partSize = resumedPartSize(journaled, file.size, partSizeFor(file.size, this.#opts.partSize));
      // An upload another attempt (or a browser tab) opened is resumed even for a one-part file.
      return file.size <= partSize && !file.uploadSession
        ? await this.#putSingle(file, hooks)
        : await this.#putMultipart(file, partSize, hooks);
    } catch (error) {
      this.#permanent(error);
    }
  }

  async #putSingle(file: SinkFile, hooks: UploadHooks): Promise<UploadResult> {
    const key = this.keyFor(file.path);
    const body = Buffer.allocUnsafe(file.size);
    let handle: LocalReader | undefined;
    try {
      const claim = file.size > 0 ? hooks.claim?.(0, body) : undefined;
      await receive(hooks, { start: 0, body, claim }, async () => (handle ??= await LocalReader.open(file)));
    } finally {
      await handle?.close();
    }
    const put = await withRetry(
      () =>
        this.client.send(
          new PutObjectCommand({
            Bucket: this.#bucket,
            Key: key,
            Body: this.#bodyOf(body),
            ContentLength: body.length,
            ContentType: contentTypeFor(file.path),
          }),
          { abortSignal: hooks.signal },
        ),
      {
        signal: hooks.signal,
        log: this.#opts.log,
        outage: this.#opts.outage,
        where: this.#where,
        what: `PutObject ${key}`,
      },
    );
    hooks.onSent?.(body.length);
    hooks.onBytes(body.length);
    await this.#checkStored(key, file.size, hooks.signal);
    return { cloudId: key, checksum: etagChecksum(put.ETag) };
  }

  async #putMultipart(
    file: SinkFile,
    partSize: number,
    caller: UploadHooks,
    restarted = false,
  ): Promise<UploadResult> {
    const key = this.keyFor(file.path);
    // Bytes reported so far, so that starting over does not count them twice.
    let counted = 0;
    const hooks: UploadHooks = {
      ...caller,
      onBytes: (bytes) => {
        counted += bytes;
        caller.onBytes(bytes);
      },
    };
    const count = Math.ceil(file.size / partSize);
    const lengthOf = (n: number) => Math.min(partSize, file.size - (n - 1) * partSize);
    const stored = new Map<number, JournalPart>();
    let uploadId = file.uploadSession;
    if (uploadId) {
      const known = await this.#resumeParts(key, uploadId, hooks);
      if (known) {
        for (const part of known)
          if (part.size === lengthOf(part.partNumber)) stored.set(part.partNumber, part);
        // Parts the provider holds but the journal lacks (an attempt died between storing a
        // part and journaling it) are journaled now: should this attempt die right after
        // completing the upload, the next one recognises the object by the journal's ETags.
        const journaled = new Map((await hooks.journal()).map((p) => [p.partNumber, p.etag]));
        for (const part of stored.values())
          if (journaled.get(part.partNumber) !== part.etag) await hooks.onPart(part);
      } else {
        // Gone: aborted, or completed by an attempt that died before it could say so.
        const done = await this.#completedBefore(key, file.size, await hooks.journal(), hooks.signal);
        if (done) {
          hooks.onBytes(file.size);
          return done;
        }
        uploadId = null;
        await hooks.clearSession();
      }
    }
    if (!uploadId) {
      const created = await withRetry(
        () =>
          this.client.send(
            new CreateMultipartUploadCommand({
              Bucket: this.#bucket,
              Key: key,
              ContentType: contentTypeFor(file.path),
            }),
            { abortSignal: hooks.signal },
          ),
        {
          signal: hooks.signal,
          log: this.#opts.log,
          outage: this.#opts.outage,
          where: this.#where,
          what: `CreateMultipartUpload ${key}`,
        },
      );
      if (!created.UploadId) throw new Error("the storage provider returned no upload id");
      uploadId = created.UploadId;
      await hooks.onSession(uploadId);
    }
    const id = uploadId;
    this.#opts.log.debug({ key, uploadId: id, parts: count, resumed: stored.size }, "multipart upload");

    // Part buffers are reused across the job's uploads: no more exist than
    // the job has slots (a part waits for its bytes only once it holds one),
    // so memory stays flat instead of waiting for the GC to free each part.
    const maxInFlight = Math.max(
      1,
      Math.min(this.#opts.concurrency, Math.floor(PART_BUFFER_BYTES / partSize)),
    );
    const inFlight = new Set<Promise<void>>();
    const spare = this.#spare.get(partSize) ?? [];
    this.#spare.set(partSize, spare);
    // Parts not started yet, in order, and how many claimed parts wait for the download
    // (see nextPart): all this upload's slots but one, which is left for parts on disk
    // should the download stall.
    const unsent = Array.from({ length: count }, (_, i) => i + 1);
    const endOf = (n: number) => Math.min(n * partSize, file.size);
    let waiting = 0;
    // Freeing the local copy is housekeeping: a failure keeps the bytes, not the job from going on.
    const freeLocal = async (part: number, start: number, length: number) =>
      hooks
        .onStored?.(start, start + length)
        .catch((error: unknown) =>
          this.#opts.log.warn({ err: error, key, part }, "could not free a stored part's local bytes"),
        );
    // Stored by an earlier attempt: its bytes need not even be read. The job's
    // disk window hears of it too: it may have read the journal before that
    // attempt's last part was in it.
    const storedBefore = async (n: number) => {
      hooks.onBytes(lengthOf(n));
      await freeLocal(n, (n - 1) * partSize, lengthOf(n));
    };
    let failure: unknown;
    // Opened once a part must be read from disk: the torrent creates the file as data arrives.
    let handle: Promise<LocalReader> | undefined;
    const opened = () => (handle ??= LocalReader.open(file));
    const me = {};
    const frontierOf = hooks.frontier;
    if (frontierOf) this.#following.set(me, { frontier: frontierOf, size: file.size });
    // Where the download runs ahead on its own (frontierOf), how many parts
    // this upload may have in flight depends on where the download is:
    // - in this file: all the job's slots but one, so claims reach far enough
    //   ahead of the download to take its pieces in memory while the parts
    //   sent before them are on their way;
    // - not there yet: one part, claimed where the file starts;
    // - past its end: while another upload follows the download, one part at
    //   a time across all such uploads, so the parts that can still go over in
    //   memory come first.
    const following = Math.max(maxInFlight, Math.min(this.#slots.size, 2 * maxInFlight) - 1);
    const limit = () => {
      if (!frontierOf) return maxInFlight;
      const at = frontierOf();
      if (at >= file.size) {
        if (!this.#followed(me)) return maxInFlight;
        return inFlight.size > 0 || this.#behind === 0 ? 1 : 0;
      }
      return at > 0 ? following : 1;
    };
    // A part whose bytes are all in may mean the download has reached the
    // file: the loop then looks at its limit again without waiting for a send.
    let nudge = () => {};
    const nudged = () => new Promise<void>((resolve) => (nudge = resolve));
    try {
      while (unsent.length > 0 && failure === undefined) {
        if (stored.has(unsent[0]!)) {
          await storedBefore(unsent.shift()!);
          continue;
        }
        // A slot first, then the claim: the part's buffer takes its pieces for
        // as long as the upload waits for them.
        while (inFlight.size >= limit()) {
          // With none of its own in flight, it waits for another upload's part from disk.
          await Promise.race(inFlight.size > 0 ? [...inFlight, nudged()] : [this.#behindDone()]);
        }
        if (failure !== undefined) break;
        await this.#slots.take(frontierOf !== undefined && frontierOf() < file.size);
        const frontier = frontierOf?.();
        const mayWait = waiting < Math.max(1, limit() - 1);
        const at = frontier === undefined ? 0 : nextPart(unsent, endOf, frontier, mayWait);
        // Enough claims wait for the download and nothing is left on disk: the
        // slot stays free for the job's other uploads (should the download
        // stall, their parts on disk still go), until a claim is filled.
        if (frontier !== undefined && !mayWait && inFlight.size > 0 && endOf(unsent[at]!) > frontier) {
          this.#slots.give();
          await Promise.race([...inFlight, nudged()]);
          continue;
        }
        const [n] = unsent.splice(at, 1);
        if (n === undefined || stored.has(n)) {
          this.#slots.give();
          if (n === undefined) break;
          await storedBefore(n);
          continue;
        }
        const behind = frontier !== undefined && frontier >= file.size && this.#followed(me);
        if (behind) this.#behind++;
        const done = () => {
          this.#slots.give();
          if (behind) {
            this.#behind--;
            for (const wake of this.#behindWaiters.splice(0)) wake();
          }
        };
        const buffer = spare.pop() ?? Buffer.allocUnsafe(partSize);
        const start = (n - 1) * partSize;
        const body = buffer.subarray(0, lengthOf(n));
        let received: Promise<void>;
        try {
          const incoming = { start, body, claim: hooks.claim?.(start, body) };
          if (frontier === undefined) {
            // In order, one at a time: a disk window reserves the parts' bytes in turn.
            await receive(hooks, incoming, opened);
            received = Promise.resolve();
          } else {
            waiting++;
            received = receive(hooks, incoming, opened).finally(() => {
              waiting--;
              nudge();
            });
          }
        } catch (error) {
          done();
          throw error;
        }
        const task = received
          .then(() => this.#sendPart(key, id, n, body, hooks))
          .then(
            async (sent) => {
              stored.set(sent.partNumber, sent);
              inFlight.delete(task);
              done();
              spare.push(buffer);
              await freeLocal(n, start, body.length);
            },
            (error: unknown) => {
              inFlight.delete(task);
              done();
              failure ??= error;
            },
          );
        inFlight.add(task);
      }
      await Promise.all(inFlight);
    } finally {
      this.#following.delete(me);
      await Promise.allSettled(inFlight);
      await (await handle?.catch(() => undefined))?.close();
    }
    if (failure !== undefined) {
      if (codeOf(failure) === "NoSuchUpload" && !restarted)
        return this.#startOver(file, partSize, caller, counted);
      throw failure;
    }

    const parts = [...stored.values()].sort((a, b) => a.partNumber - b.partNumber);
    if (parts.length !== count) throw new Error(`expected ${count} parts for ${key}, have ${parts.length}`);
    let completed: { ETag?: string | undefined };
    try {
      completed = await withRetry(
        () =>
          this.client.send(
            new CompleteMultipartUploadCommand({
              Bucket: this.#bucket,
              Key: key,
              UploadId: id,
              MultipartUpload: {
                Parts: parts.map((p) => ({ PartNumber: p.partNumber, ETag: `"${p.etag}"` })),
              },
            }),
            { abortSignal: hooks.signal },
          ),
        {
          signal: hooks.signal,
          log: this.#opts.log,
          outage: this.#opts.outage,
          where: this.#where,
          what: `CompleteMultipartUpload ${key}`,
        },
      );
    } catch (error) {
      if (codeOf(error) !== "NoSuchUpload") throw error;
      // Gone because it was completed: by our own Complete whose answer was lost (the retry
      // then finds no upload), or, for a resumed upload, by the attempt that journaled it.
      const done = await this.#completedBefore(key, file.size, parts, hooks.signal);
      if (done) return done;
      if (restarted) throw error;
      return this.#startOver(file, partSize, caller, counted);
    }
    await this.#checkStored(key, file.size, hooks.signal);
    return { cloudId: key, checksum: etagChecksum(completed.ETag) };
  }

  /** Resolves once a part of a file already on disk, sent while another upload follows the download, is done. */
  #behindDone(): Promise<void> {
    return new Promise((resolve) => this.#behindWaiters.push(resolve));
  }

  /** Whether an upload of this job other than `me` follows the download inside its file. */
  #followed(me: object): boolean {
    for (const [upload, { frontier, size }] of this.#following) {
      if (upload === me) continue;
      const at = frontier();
      if (at > 0 && at < size) return true;
    }
    return false;
  }

  /**
   * The multipart upload is gone (aborted, or expired by a bucket lifecycle
   * rule): the file is sent again in a new one, once.
   */
  async #startOver(
    file: SinkFile,
    partSize: number,
    hooks: UploadHooks,
    counted: number,
  ): Promise<UploadResult> {
    this.#opts.log.warn({ key: this.keyFor(file.path) }, "multipart upload is gone; sending the file again");
    await hooks.clearSession();
    let credit = counted;
    return this.#putMultipart(
      { ...file, uploadSession: null },
      partSize,
      {
        ...hooks,
        onBytes: (bytes) => {
          const skip = Math.min(credit, bytes);
          credit -= skip;
          if (bytes > skip) hooks.onBytes(bytes - skip);
        },
      },
      true,
    );
  }

  /**
   * The object an earlier attempt completed from exactly these parts, if it is
   * there: its size, and the ETag S3 gives a multipart object (the MD5 of the
   * parts' MD5s, then their count). Providers whose ETags differ never match,
   * and the file is uploaded again.
   */
  async #completedBefore(
    key: string,
    size: number,
    parts: JournalPart[],
    signal: AbortSignal,
  ): Promise<UploadResult | undefined> {
    const expected = multipartEtag(parts);
    if (!expected) return undefined;
    let head: { ContentLength?: number | undefined; ETag?: string | undefined };
    try {
      head = await withRetry(
        () =>
          this.client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key }), {
            abortSignal: signal,
          }),
        {
          signal,
          log: this.#opts.log,
          outage: this.#opts.outage,
          where: this.#where,
          what: `HeadObject ${key}`,
        },
      );
    } catch (error) {
      if (codeOf(error) === "NotFound" || codeOf(error) === "NoSuchKey") return undefined;
      throw error;
    }
    if (head.ContentLength !== size || unquote(head.ETag) !== expected) return undefined;
    this.#opts.log.info({ key }, "already stored by an earlier attempt");
    return { cloudId: key, checksum: etagChecksum(head.ETag) };
  }

  async #sendPart(
    key: string,
    uploadId: string,
    partNumber: number,
    body: Buffer,
    hooks: UploadHooks,
  ): Promise<JournalPart> {
    const result = await withRetry(
      () =>
        this.client.send(
          new UploadPartCommand({
            Bucket: this.#bucket,
            Key: key,
            UploadId: uploadId,
            PartNumber: partNumber,
            Body: this.#bodyOf(body),
            ContentLength: body.length,
          }),
          { abortSignal: hooks.signal },
        ),
      {
        signal: hooks.signal,
        log: this.#opts.log,
        outage: this.#opts.outage,
        where: this.#where,
        what: `UploadPart ${key} #${partNumber}`,
      },
    );
    hooks.onSent?.(body.length);
    const etag = unquote(result.ETag);
    if (!etag) throw new Error(`the storage provider returned no ETag for part ${partNumber} of ${key}`);
    const part = { partNumber, etag, size: body.length };
    await hooks.onPart(part);
    hooks.onBytes(body.length);
    return part;
  }

  /**
   * Parts already stored for an upload an earlier attempt started: the
   * provider's own list where it has ListParts, else our journal. Undefined
   * when the upload no longer exists.
   */
  async #resumeParts(key: string, uploadId: string, hooks: UploadHooks): Promise<JournalPart[] | undefined> {
    const listed: JournalPart[] = [];
    try {
      let marker: string | undefined;
      for (;;) {
        const page = await withRetry(
          () =>
            this.client.send(
              new ListPartsCommand({
                Bucket: this.#bucket,
                Key: key,
                UploadId: uploadId,
                PartNumberMarker: marker,
              }),
              { abortSignal: hooks.signal },
            ),
          {
            signal: hooks.signal,
            log: this.#opts.log,
            outage: this.#opts.outage,
            where: this.#where,
            what: `ListParts ${key}`,
          },
        );
        for (const part of page.Parts ?? []) {
          if (part.PartNumber && part.ETag && part.Size !== undefined) {
            listed.push({ partNumber: part.PartNumber, etag: unquote(part.ETag), size: part.Size });
          }
        }
        if (!page.IsTruncated || !page.NextPartNumberMarker) break;
        marker = page.NextPartNumberMarker;
      }
      return listed;
    } catch (error) {
      const code = codeOf(error);
      if (code === "NoSuchUpload") return undefined;
      if (hooks.signal.aborted || isTransient(error)) throw error;
      // Servers without ListParts (MethodNotAllowed, NotImplemented, ...): trust the journal.
      this.#opts.log.debug({ code }, "ListParts unavailable, resuming from the journal");
      return hooks.journal();
    }
  }

  async #checkStored(key: string, size: number, signal: AbortSignal): Promise<void> {
    const head = await withRetry(
      () =>
        this.client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key }), { abortSignal: signal }),
      {
        signal,
        log: this.#opts.log,
        outage: this.#opts.outage,
        where: this.#where,
        what: `HeadObject ${key}`,
      },
    );
    if (head.ContentLength !== size) {
      throw new PermanentJobError(
        `The storage provider stored "${key}" with ${head.ContentLength ?? "unknown"} bytes instead of ${size}.`,
      );
    }
  }

  async abort(file: Pick<SinkFile, "path" | "uploadSession">): Promise<boolean> {
    if (!file.uploadSession) return true;
    return this.#abortUpload(this.keyFor(file.path), file.uploadSession);
  }

  async #abortUpload(key: string, uploadId: string): Promise<boolean> {
    try {
      await this.client.send(
        new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key: key, UploadId: uploadId }),
        {
          abortSignal: AbortSignal.timeout(10_000),
        },
      );
      return true;
    } catch (error) {
      // NoSuchUpload: already gone. Servers without Abort leave the parts to their own expiry.
      if (codeOf(error) === "NoSuchUpload") return true;
      this.#opts.log.warn({ err: error, key }, "could not abort a multipart upload");
      return !isTransient(error) && codeOf(error) !== "TimeoutError";
    }
  }

  async sweep(paths: string[], before: Date): Promise<boolean> {
    let clean = true;
    for (const path of paths) {
      const key = this.keyFor(path);
      let keyMarker: string | undefined;
      let uploadIdMarker: string | undefined;
      try {
        for (;;) {
          const page = await this.client.send(
            new ListMultipartUploadsCommand({
              Bucket: this.#bucket,
              Prefix: key,
              KeyMarker: keyMarker,
              UploadIdMarker: uploadIdMarker,
            }),
            { abortSignal: AbortSignal.timeout(10_000) },
          );
          for (const upload of page.Uploads ?? []) {
            // Exactly this file's key (the prefix also matches longer keys), started before the job ended.
            if (upload.Key !== key || !upload.UploadId || (upload.Initiated && upload.Initiated >= before))
              continue;
            if (!(await this.#abortUpload(key, upload.UploadId))) clean = false;
          }
          if (!page.IsTruncated) break;
          keyMarker = page.NextKeyMarker;
          uploadIdMarker = page.NextUploadIdMarker;
        }
      } catch (error) {
        // A provider without ListMultipartUploads: only recorded sessions can be aborted.
        if (isTransient(error) || codeOf(error) === "TimeoutError") clean = false;
        else this.#opts.log.debug({ code: codeOf(error) }, "ListMultipartUploads unavailable");
      }
    }
    return clean;
  }

  close(): void {
    this.client.destroy();
  }
}

/** S3's ETag for an object completed from `parts` (in order), or undefined if a part's ETag is not an MD5. */
function multipartEtag(parts: JournalPart[]): string | undefined {
  if (parts.length === 0 || !parts.every((part) => /^[0-9a-f]{32}$/i.test(part.etag))) return undefined;
  const md5 = createHash("md5");
  for (const part of [...parts].sort((a, b) => a.partNumber - b.partNumber))
    md5.update(Buffer.from(part.etag, "hex"));
  return `${md5.digest("hex")}-${parts.length}`;
}

/**
 * Where in `unsent` (parts not started, ascending) a free slot goes, given the
 * first byte the download has not verified. Parts wholly behind that byte are
 * on disk and can go at any time; the first part past it is the one the
 * download fills next, and claimed now it takes its pieces in memory instead
 * of scratch and back. So that one goes first while claimed parts may still
 * wait for the download (`mayWait`); otherwise a part from disk keeps the
 * connection busy meanwhile (the download, running ahead, left them behind,
 * and a download that stalls must not hold them back too).
 */
export function nextPart(
  unsent: readonly number[],
  endOf: (part: number) => number,
  frontier: number,
  mayWait: boolean,
): number {
  const ahead = unsent.findIndex((n) => endOf(n) > frontier);
  return ahead > 0 && mayWait ? ahead : 0;
}

/**
 * The parts a job's uploads have in flight, and their buffers, are bounded
 * together: a third upload following the download (the runner's) adds no
 * memory. A slot that frees goes to an upload whose file is still
 * downloading before one that only reads parts back from disk.
 */
export class PartSlots {
  readonly #size: number;
  #taken = 0;
  readonly #waiting: { following: boolean; go: () => void }[] = [];

  constructor(size: number) {
    this.#size = size;
  }

  get size(): number {
    return this.#size;
  }

  /** Resolves once a slot is this caller's; `following`: its file is still downloading. */
  take(following: boolean): Promise<void> {
    if (this.#taken < this.#size && this.#waiting.length === 0) {
      this.#taken++;
      return Promise.resolve();
    }
    return new Promise((go) => this.#waiting.push({ following, go }));
  }

  /** Hands a slot back: to the first waiter following the download, else the first waiter. */
  give(): void {
    const first = this.#waiting.findIndex((w) => w.following);
    const [next] = this.#waiting.splice(Math.max(first, 0), 1);
    if (next) next.go();
    else this.#taken--;
  }
}

/** A part's buffer and where it starts in the file, claimed (UploadHooks.claim) before its bytes are ready. */
interface Incoming {
  start: number;
  body: Buffer;
  claim: PartClaim | undefined;
}

/**
 * Fills the part's body once its bytes are verified: the pieces verified
 * after the claim were copied in as they arrived, the rest is read from disk
 * (`file` opens it on first use).
 */
async function receive(hooks: UploadHooks, part: Incoming, file: () => Promise<LocalReader>): Promise<void> {
  const { start, body, claim } = part;
  try {
    await hooks.ready(start, start + body.length);
  } finally {
    claim?.release();
  }
  for (const [a, b] of claim?.missing() ?? [[0, body.length]])
    if (b > a) await (await file()).read(body.subarray(a, b), start + a);
}
