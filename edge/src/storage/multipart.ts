// The S3 calls a browser transfer needs from the edge (SigV4 with aws4fetch,
// so they run in workerd): open a multipart upload, presign one part for the
// tab, complete the upload from the journaled parts, and store an empty file.
// The tab sends the bytes itself, to the presigned URLs; the edge never sees
// them. Keys and upload ids come from the database, never from a request.
import { AwsClient } from "aws4fetch";
import { objectUrl, type S3Credentials, type S3Target } from "./s3.ts";

/** A provider answer that was not what the call needed: its S3 error code, if it sent one. */
export class S3CallError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(what: string, status: number, code: string) {
    super(`${what}: the storage provider answered ${status}${code ? ` ${code}` : ""}`);
    this.name = "S3CallError";
    this.status = status;
    this.code = code;
  }
}

const TIMEOUT_MS = 15_000;

function clientOf(target: S3Target, credentials: S3Credentials): AwsClient {
  return new AwsClient({ ...credentials, service: "s3", region: target.region, retries: 0 });
}

function xmlTag(xml: string, tag: string): string | undefined {
  return new RegExp(`<${tag}>([^<]*)</${tag}>`).exec(xml)?.[1];
}

function xmlEscape(text: string): string {
  return text
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}

async function send(
  what: string,
  target: S3Target,
  credentials: S3Credentials,
  url: URL,
  init: RequestInit,
): Promise<Response> {
  const signed = await clientOf(target, credentials).sign(url.toString(), {
    ...init,
    redirect: "manual",
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  const response = await fetch(signed);
  if (response.ok) return response;
  const text = await response.text().catch(() => "");
  throw new S3CallError(what, response.status, xmlTag(text, "Code") ?? "");
}

/** CreateMultipartUpload at `key`: the new upload id. */
export async function createMultipartUpload(
  target: S3Target,
  credentials: S3Credentials,
  key: string,
  contentType: string,
): Promise<string> {
  const url = objectUrl(target, key);
  url.searchParams.set("uploads", "");
  const response = await send("CreateMultipartUpload", target, credentials, url, {
    method: "POST",
    headers: { "content-type": contentType },
  });
  const uploadId = xmlTag(await response.text(), "UploadId");
  if (!uploadId) throw new S3CallError("CreateMultipartUpload", response.status, "NoUploadId");
  return uploadId;
}

export interface PresignOptions {
  expiresSeconds: number;
  /** The signing time (tests sign an already expired URL with a past one). */
  now: Date;
}

/** SigV4's timestamp: 20240102T030405Z. */
function amzDate(at: Date): string {
  return at
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}/, "");
}

/**
 * A presigned UploadPart URL for exactly this upload and part number (SigV4
 * query signing, UNSIGNED-PAYLOAD), good for `expiresSeconds` from `now`.
 */
export async function presignUploadPart(
  target: S3Target,
  credentials: S3Credentials,
  key: string,
  uploadId: string,
  partNumber: number,
  options: PresignOptions,
): Promise<string> {
  const url = objectUrl(target, key);
  url.searchParams.set("partNumber", String(partNumber));
  url.searchParams.set("uploadId", uploadId);
  url.searchParams.set("X-Amz-Expires", String(options.expiresSeconds));
  const signed = await clientOf(target, credentials).sign(url.toString(), {
    method: "PUT",
    aws: { signQuery: true, datetime: amzDate(options.now) },
  });
  return signed.url;
}

/** CompleteMultipartUpload from these parts (in order): the object's ETag, unquoted. */
export async function completeMultipartUpload(
  target: S3Target,
  credentials: S3Credentials,
  key: string,
  uploadId: string,
  parts: readonly { partNumber: number; etag: string }[],
): Promise<string> {
  const url = objectUrl(target, key);
  url.searchParams.set("uploadId", uploadId);
  const body = `<CompleteMultipartUpload>${parts
    .map((p) => `<Part><PartNumber>${p.partNumber}</PartNumber><ETag>"${xmlEscape(p.etag)}"</ETag></Part>`)
    .join("")}</CompleteMultipartUpload>`;
  const response = await send("CompleteMultipartUpload", target, credentials, url, {
    method: "POST",
    headers: { "content-type": "application/xml" },
    body,
  });
  // S3 may answer 200 with an error document once it has started streaming the answer.
  const text = await response.text();
  const code = /<Error>/.test(text) ? (xmlTag(text, "Code") ?? "InternalError") : undefined;
  if (code) throw new S3CallError("CompleteMultipartUpload", response.status, code);
  return (xmlTag(text, "ETag") ?? "").replaceAll("&quot;", "").replaceAll('"', "");
}

/** PutObject of an empty body (a zero-byte file needs no multipart upload): its ETag, unquoted. */
export async function putEmptyObject(
  target: S3Target,
  credentials: S3Credentials,
  key: string,
  contentType: string,
): Promise<string> {
  const response = await send("PutObject", target, credentials, objectUrl(target, key), {
    method: "PUT",
    headers: { "content-type": contentType },
    body: "",
  });
  await response.body?.cancel();
  return (response.headers.get("etag") ?? "").replaceAll('"', "");
}

/** The stored object's size (HeadObject), as the worker checks it after an upload. */
export async function objectSize(target: S3Target, credentials: S3Credentials, key: string): Promise<number> {
  const response = await send("HeadObject", target, credentials, objectUrl(target, key), { method: "HEAD" });
  await response.body?.cancel();
  return Number(response.headers.get("content-length") ?? -1);
}
