// The local S3: s3rver in this process, objects on disk under dataDir (they
// survive a restart), reached with the same AWS SDK calls as real S3.
//
// s3rver 3.7.1 accepts only access key ids registered in its account registry
// (just "S3RVER" out of the box), so the configured key id is registered. What
// it leaves out, middleware in front of it does as S3 does: SigV4 signatures
// and the body's stated SHA-256 or MD5 are checked (s3-sigv4.ts), and
// `aws-chunked` bodies, which s3rver would store verbatim with chunk headers
// and trailers, are decoded; multipart uploads are listed, list their parts,
// abort and complete as on S3 (s3-multipart.ts).

import { mkdir } from "node:fs/promises";
import type { IncomingMessage } from "node:http";
import { join } from "node:path";
import { pipeline, Transform, type TransformCallback } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import {
  HeadBucketCommand,
  ListMultipartUploadsCommand,
  type ListMultipartUploadsCommandInput,
  type ListMultipartUploadsCommandOutput,
  type MultipartUpload,
  S3Client,
} from "@aws-sdk/client-s3";
import S3rver, { type S3rverContext } from "s3rver";
import AWSAccount from "s3rver/lib/models/account.js";
import { type LogSink, prefixedLog, type Service, spawnService } from "./process.ts";
import { completeAsS3, listUploads, uploadRequests } from "./s3-multipart.ts";
import { checkPayload, checkSignatures } from "./s3-sigv4.ts";

export interface S3Options {
  port: number;
  host?: string;
  dataDir: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  log?: LogSink;
  /**
   * Web origins allowed to send CORS requests to the bucket (a browser
   * transfer's presigned part uploads), with ETag exposed: the rule the
   * storage check asks users to add to their own bucket.
   */
  corsOrigins?: string[] | undefined;
}

/** The bucket CORS rule for these origins, as S3's XML (the same rule edge/src/storage/cors.ts shows users as JSON). */
export function corsXml(origins: readonly string[]): string {
  const allowed = origins.map((origin) => `<AllowedOrigin>${origin}</AllowedOrigin>`).join("");
  return `<CORSConfiguration><CORSRule>${allowed}<AllowedMethod>PUT</AllowedMethod><AllowedMethod>GET</AllowedMethod><AllowedHeader>*</AllowedHeader><ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>3600</MaxAgeSeconds></CORSRule></CORSConfiguration>`;
}

/** The S3_* variables `startS3` publishes; `process.env` fits too. */
export type S3Env = Record<string, string | undefined>;

/**
 * An S3 client for the local server: path-style URLs, and checksums only where
 * an operation requires them. With the SDK's default ("when supported") a
 * streamed PutObject is sent `aws-chunked` with a trailing checksum, which
 * unpatched s3rver stores corrupted.
 */
export function s3ClientFor(env: S3Env): S3Client {
  const need = (key: string): string => {
    const value = env[key];
    if (!value) throw new Error(`${key} is not set`);
    return value;
  };
  return new S3Client({
    endpoint: need("S3_ENDPOINT"),
    region: env.S3_REGION || "us-east-1",
    forcePathStyle: env.S3_FORCE_PATH_STYLE !== "false",
    credentials: { accessKeyId: need("S3_ACCESS_KEY_ID"), secretAccessKey: need("S3_SECRET_ACCESS_KEY") },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
}

/**
 * Every page of ListMultipartUploads from `input` on, in the shape of the
 * SDK's paginators, which have none for it (it pages by two markers):
 * NextKeyMarker and NextUploadIdMarker become the next request's markers
 * while IsTruncated.
 */
export async function* paginateListMultipartUploads(
  config: { client: S3Client; pageSize?: number },
  input: ListMultipartUploadsCommandInput,
): AsyncGenerator<ListMultipartUploadsCommandOutput> {
  let markers = { KeyMarker: input.KeyMarker, UploadIdMarker: input.UploadIdMarker };
  for (;;) {
    const page = await config.client.send(
      new ListMultipartUploadsCommand({
        ...input,
        ...markers,
        MaxUploads: config.pageSize ?? input.MaxUploads,
      }),
    );
    yield page;
    if (!page.IsTruncated) return;
    const next = { KeyMarker: page.NextKeyMarker, UploadIdMarker: page.NextUploadIdMarker };
    // A server that does not move its markers on would be asked the same page for ever.
    if (
      !next.KeyMarker ||
      (next.KeyMarker === markers.KeyMarker && next.UploadIdMarker === markers.UploadIdMarker)
    )
      throw new Error(`ListMultipartUploads on ${input.Bucket} is truncated but names no later marker`);
    markers = next;
  }
}

/**
 * The multipart uploads in `bucket` (under `prefix`) that were started and
 * neither completed nor aborted, as an operator would list them; `[]` when a
 * job left none behind.
 */
export async function unfinishedUploads(
  client: S3Client,
  bucket: string,
  prefix?: string,
): Promise<MultipartUpload[]> {
  const uploads: MultipartUpload[] = [];
  for await (const page of paginateListMultipartUploads({ client }, { Bucket: bucket, Prefix: prefix }))
    uploads.push(...(page.Uploads ?? []));
  return uploads;
}

type Middleware = Parameters<S3Client["middlewareStack"]["addRelativeTo"]>[0];
interface FinalizeArgs {
  input: object;
  request: unknown;
}

/**
 * Test tooling: flips one byte of each request body `pick` chooses after the
 * client has hashed and signed it, as damage in transit would.
 */
export function damageInTransit(client: S3Client, pick: (input: Record<string, unknown>) => boolean): void {
  const damage = (next: (args: FinalizeArgs) => Promise<unknown>) => async (args: FinalizeArgs) => {
    const request = args.request as { body?: unknown };
    const body = request.body;
    if (Buffer.isBuffer(body) && body.length > 0 && pick(args.input as Record<string, unknown>)) {
      const copy = Buffer.from(body);
      const at = copy.length >> 1;
      copy[at] = (copy[at] ?? 0) ^ 0xff;
      request.body = copy;
    }
    return next(args);
  };
  // A finalizeRequest-step middleware; the union type of addRelativeTo's parameter cannot infer it.
  client.middlewareStack.addRelativeTo(damage as unknown as Middleware, {
    relation: "after",
    toMiddleware: "httpSigningMiddleware",
    name: "damageInTransit",
  });
}

const CRLF = Buffer.from("\r\n");
const MAX_LINE = 8 * 1024;

/**
 * Decodes an `aws-chunked` body (SigV4 streaming, signed or unsigned, with or
 * without trailers): `hex-size[;chunk-signature=..]\r\n data \r\n ... 0\r\n
 * [trailer: value\r\n]* \r\n`. Signatures and trailers are not checked.
 */
export class AwsChunkedDecoder extends Transform {
  #state: "size" | "data" | "data-end" | "trailers" | "done" = "size";
  #left = 0;
  #line: Buffer = Buffer.alloc(0);

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    done(this.#consume(chunk));
  }

  #consume(chunk: Buffer): Error | undefined {
    let at = 0;
    while (at < chunk.length) {
      if (this.#state === "done") return new Error("aws-chunked: data after the final chunk");
      if (this.#state === "data") {
        const take = Math.min(this.#left, chunk.length - at);
        this.push(chunk.subarray(at, at + take));
        at += take;
        this.#left -= take;
        if (this.#left === 0) this.#state = "data-end";
        continue;
      }
      // The other states read one CRLF-terminated line, which may span chunks.
      const joined =
        this.#line.length > 0 ? Buffer.concat([this.#line, chunk.subarray(at)]) : chunk.subarray(at);
      const eol = joined.indexOf(CRLF);
      if (eol < 0) {
        if (joined.length > MAX_LINE) return new Error("aws-chunked: header line too long");
        this.#line = Buffer.from(joined);
        return undefined;
      }
      at += eol + 2 - this.#line.length;
      const line = joined.toString("latin1", 0, eol);
      this.#line = Buffer.alloc(0);
      const error = this.#onLine(line);
      if (error) return error;
    }
    return undefined;
  }

  #onLine(line: string): Error | undefined {
    switch (this.#state) {
      case "data-end":
        if (line !== "") return new Error("aws-chunked: chunk longer than declared");
        this.#state = "size";
        return undefined;
      case "size": {
        const size = Number.parseInt(line.split(";")[0] ?? "", 16);
        if (!Number.isSafeInteger(size) || size < 0)
          return new Error(`aws-chunked: bad chunk header "${line}"`);
        this.#left = size;
        this.#state = size === 0 ? "trailers" : "data";
        return undefined;
      }
      case "trailers":
        if (line === "") this.#state = "done";
        return undefined;
      default:
        return new Error("aws-chunked: unexpected state");
    }
  }

  override _flush(done: TransformCallback): void {
    done(this.#state === "done" ? undefined : new Error("aws-chunked: body ended early"));
  }
}

/** Koa middleware: swaps an `aws-chunked` request body for its decoded bytes before s3rver reads it. */
async function decodeAwsChunked(ctx: S3rverContext, next: () => Promise<void>): Promise<void> {
  const headers = ctx.request.headers;
  const sha = String(headers["x-amz-content-sha256"] ?? "");
  const encodings = String(headers["content-encoding"] ?? "")
    .split(",")
    .map((part) => part.trim())
    .filter((part) => part !== "");
  if (sha.startsWith("STREAMING-") || encodings.includes("aws-chunked")) {
    // S3 stores neither the transfer encoding nor the encoded length as object metadata.
    const rest = encodings.filter((part) => part !== "aws-chunked");
    if (rest.length > 0) headers["content-encoding"] = rest.join(", ");
    else delete headers["content-encoding"];
    const decodedLength = headers["x-amz-decoded-content-length"];
    if (typeof decodedLength === "string") headers["content-length"] = decodedLength;
    const original = ctx.req as IncomingMessage;
    const decoded = new AwsChunkedDecoder();
    // s3rver does not watch its body stream for errors: fail the connection so the client sees it.
    pipeline(original, decoded, (error) => {
      if (error) original.socket?.destroy(error);
    });
    ctx.req = decoded;
  }
  await next();
}

export async function startS3(opts: S3Options): Promise<Service> {
  const host = opts.host ?? "127.0.0.1";
  const log = opts.log ?? prefixedLog;
  await mkdir(opts.dataDir, { recursive: true });
  // The registry is process-wide: every s3rver in this process accepts these keys.
  AWSAccount.DUMMY_ACCOUNT.createKeyPair(opts.accessKeyId, opts.secretAccessKey);

  const server = new S3rver({
    address: host,
    port: opts.port,
    directory: opts.dataDir,
    silent: true,
    // Path-style only: never read a bucket name out of the Host header.
    vhostBuckets: false,
    configureBuckets: [
      {
        name: opts.bucket,
        configs: opts.corsOrigins && opts.corsOrigins.length > 0 ? [corsXml(opts.corsOrigins)] : [],
      },
    ],
  });
  completeAsS3(server.store);
  // Just in front of s3rver's router, which is last, so s3rver answers its errors and writes its XML.
  server.middleware.splice(
    server.middleware.length - 1,
    0,
    uploadRequests(server.store),
    listUploads(server.store),
  );
  server.middleware.unshift(decodeAwsChunked);
  server.middleware.unshift(checkPayload);
  // First of all: s3rver itself does not check SigV4 signatures.
  server.middleware.unshift(checkSignatures(new Map([[opts.accessKeyId, opts.secretAccessKey]])));
  // Having a listener also stops Koa printing every 4xx to stderr; client errors are the caller's to see.
  server.on("error", (error: Error & { status?: number }, ctx?: S3rverContext) => {
    if ((error.status ?? 500) >= 500)
      log("s3", `${ctx?.method ?? "?"} ${ctx?.path ?? "?"}: ${error.stack ?? error.message}`);
  });
  await server.run();

  const env = envOf(opts);
  const endpoint = env.S3_ENDPOINT;

  const stop = async () => {
    const http = server.httpServer;
    if (!http?.listening) return;
    const closing = server.close();
    http.closeIdleConnections();
    // Give in-flight requests a moment, then cut whatever is left.
    await Promise.race([closing, sleep(2000)]);
    http.closeAllConnections();
    await closing;
  };

  try {
    await waitForBucket(env, 10_000);
  } catch (error) {
    await stop();
    throw error;
  }

  log("s3", `listening on ${endpoint}, bucket "${opts.bucket}", data in ${opts.dataDir}`);
  return {
    name: "s3",
    env,
    urls: [`S3: ${endpoint} (bucket ${opts.bucket}, path-style)`],
    stop,
  };
}

/** The S3_* variables that reach a server started with `opts`. */
function envOf(opts: S3Options): Record<string, string> {
  const host = opts.host ?? "127.0.0.1";
  return {
    S3_ENDPOINT: `http://${host.includes(":") ? `[${host}]` : host}:${opts.port}`,
    S3_REGION: "us-east-1",
    S3_BUCKET: opts.bucket,
    S3_ACCESS_KEY_ID: opts.accessKeyId,
    S3_SECRET_ACCESS_KEY: opts.secretAccessKey,
    S3_FORCE_PATH_STYLE: "true",
  };
}

/** Waits until a real SDK client, configured as the app's will be, sees the bucket. */
async function waitForBucket(env: Record<string, string>, timeoutMs: number): Promise<void> {
  const client = s3ClientFor(env);
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await client.send(new HeadBucketCommand({ Bucket: env.S3_BUCKET }));
        return;
      } catch (error) {
        if (Date.now() > deadline)
          throw new Error(`local S3 on ${env.S3_ENDPOINT} is not answering: ${String(error)}`);
        await sleep(100);
      }
    }
  } finally {
    client.destroy();
  }
}

/**
 * The same server in a process of its own (local/s3-main.ts), as a real one
 * would be: its CPU and its garbage collector are then its own, not shared
 * with whoever started it.
 */
export async function startS3Process(opts: S3Options): Promise<Service & { pid: number }> {
  const { log, ...options } = opts;
  const spawned = await spawnService("s3", process.execPath, {
    // Bodies pass through as buffers outside the V8 heap, and with a heap this
    // small V8 runs a full collection every few tens of MiB of them; a larger
    // starting heap makes those about 4× rarer.
    args: [
      "--initial-heap-size=512",
      "--max-semi-space-size=32",
      join(import.meta.dirname, "s3-main.ts"),
      JSON.stringify(options),
    ],
    log: log ?? prefixedLog,
  });
  const env = envOf(opts);
  const endpoint = env.S3_ENDPOINT;
  try {
    await Promise.race([
      waitForBucket(env, 30_000),
      spawned.exited.then((code) => {
        throw new Error(`the local S3 process exited with ${code} before it was ready`);
      }),
    ]);
  } catch (error) {
    await spawned.stop();
    throw error;
  }
  return {
    name: "s3",
    env,
    urls: [`S3: ${endpoint} (bucket ${opts.bucket}, path-style)`],
    stop: spawned.stop,
    pid: spawned.child.pid ?? 0,
  };
}
