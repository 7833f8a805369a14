// SigV4 signature checks in front of s3rver, which leaves them unimplemented
// and would accept any secret for a known access key id. Real S3 answers a
// wrong secret with 403 SignatureDoesNotMatch; so does the local one, for
// both signed headers (SDK, aws4fetch) and presigned URLs. A body sent with
// its SHA-256 in x-amz-content-sha256, or with a Content-MD5, is checked
// against it before anything is stored (400 XAmzContentSHA256Mismatch /
// BadDigest, as on S3); aws-chunked chunk signatures are not checked.
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage } from "node:http";
import { Readable } from "node:stream";
import type { S3rverContext } from "s3rver";

const sha256 = (data: string) => createHash("sha256").update(data).digest("hex");
const hmac = (key: Buffer | string, data: string) => createHmac("sha256", key).update(data).digest();

/** RFC 3986 encoding, as SigV4 canonical query strings use it. */
function encode(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

function decode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

interface Signed {
  accessKeyId: string;
  scope: string[];
  signedHeaders: string[];
  signature: string;
  amzDate: string;
  payloadHash: string;
}

/** The signature a request carries, from its Authorization header or its query (presigned). */
function signedParts(headers: IncomingHttpHeaders, query: [string, string][]): Signed | undefined {
  const auth =
    /^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]+)$/.exec(
      String(headers.authorization ?? ""),
    );
  const param = (name: string) => query.find(([k]) => k === name)?.[1];
  const [credential, signedHeaders, signature, amzDate, payloadHash] = auth
    ? [
        auth[1],
        auth[2],
        auth[3],
        String(headers["x-amz-date"] ?? ""),
        String(headers["x-amz-content-sha256"] ?? ""),
      ]
    : param("X-Amz-Algorithm") === "AWS4-HMAC-SHA256"
      ? [
          param("X-Amz-Credential"),
          param("X-Amz-SignedHeaders"),
          param("X-Amz-Signature"),
          param("X-Amz-Date") ?? "",
          "UNSIGNED-PAYLOAD",
        ]
      : [];
  if (!credential || !signedHeaders || !signature || !amzDate || !payloadHash) return undefined;
  const [accessKeyId, ...scope] = credential.split("/");
  if (!accessKeyId || scope.length !== 4) return undefined;
  return { accessKeyId, scope, signedHeaders: signedHeaders.split(";"), signature, amzDate, payloadHash };
}

/**
 * "ok" when the signature matches, "mismatch" when it does not, "unsigned"
 * when the request is anonymous or names a key id we do not know (s3rver
 * answers those itself).
 */
export function verifySigV4(
  method: string,
  rawUrl: string,
  headers: IncomingHttpHeaders,
  secrets: ReadonlyMap<string, string>,
): "ok" | "mismatch" | "unsigned" {
  const at = rawUrl.indexOf("?");
  const path = at === -1 ? rawUrl : rawUrl.slice(0, at);
  const query = (at === -1 ? "" : rawUrl.slice(at + 1))
    .split("&")
    .filter((pair) => pair !== "")
    .map((pair): [string, string] => {
      const eq = pair.indexOf("=");
      return eq === -1 ? [decode(pair), ""] : [decode(pair.slice(0, eq)), decode(pair.slice(eq + 1))];
    });
  const signed = signedParts(headers, query);
  if (!signed) return "unsigned";
  const secret = secrets.get(signed.accessKeyId);
  if (secret === undefined) return "unsigned";

  const canonicalQuery = query
    .filter(([key]) => key !== "X-Amz-Signature")
    .map(([key, value]) => [encode(key), encode(value)] as const)
    .sort(([ak, av], [bk, bv]) => (ak === bk ? (av < bv ? -1 : av > bv ? 1 : 0) : ak < bk ? -1 : 1))
    .map(([key, value]) => `${key}=${value}`)
    .join("&");
  const canonicalHeaders = signed.signedHeaders
    .map((name) => {
      const value = headers[name];
      const text = Array.isArray(value) ? value.join(",") : String(value ?? "");
      return `${name}:${text.trim().replace(/\s+/g, " ")}\n`;
    })
    .join("");
  const canonicalRequest = [
    method,
    path,
    canonicalQuery,
    canonicalHeaders,
    signed.signedHeaders.join(";"),
    signed.payloadHash,
  ].join("\n");
  const scope = signed.scope.join("/");
  const stringToSign = ["AWS4-HMAC-SHA256", signed.amzDate, scope, sha256(canonicalRequest)].join("\n");
  const [date = "", region = "", service = ""] = signed.scope;
  const key = hmac(hmac(hmac(hmac(`AWS4${secret}`, date), region), service), "aws4_request");
  const expected = Buffer.from(hmac(key, stringToSign).toString("hex"));
  const provided = Buffer.from(signed.signature);
  return expected.length === provided.length && timingSafeEqual(expected, provided) ? "ok" : "mismatch";
}

function answer(ctx: S3rverContext, status: number, code: string, message: string): void {
  ctx.status = status;
  ctx.set("Content-Type", "application/xml");
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
}

/**
 * Whether a presigned URL's time is up: `X-Amz-Date` plus `X-Amz-Expires`
 * seconds is before `now` (ms). False for a request signed in its headers.
 */
export function presignedExpired(rawUrl: string, now: number): boolean {
  const query = new URLSearchParams(rawUrl.includes("?") ? rawUrl.slice(rawUrl.indexOf("?") + 1) : "");
  const date = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(query.get("X-Amz-Date") ?? "");
  const expires = Number(query.get("X-Amz-Expires"));
  if (query.get("X-Amz-Algorithm") !== "AWS4-HMAC-SHA256" || !date || !Number.isFinite(expires)) return false;
  const [, y, mo, d, h, mi, s] = date.map(Number) as number[];
  const signedAt = Date.UTC(y!, mo! - 1, d!, h!, mi!, s!);
  return signedAt + expires * 1000 < now;
}

/**
 * Koa middleware for s3rver: a wrong signature gets S3's own 403 answer, and
 * so does a presigned URL past its time. A CORS preflight carries no
 * credentials (the browser sends it without), so it is not checked.
 */
export function checkSignatures(secrets: ReadonlyMap<string, string>, now: () => number = Date.now) {
  return async (ctx: S3rverContext, next: () => Promise<void>): Promise<void> => {
    const raw = (ctx.req as IncomingMessage).url ?? "/";
    if (ctx.method === "OPTIONS") {
      await next();
      return;
    }
    if (presignedExpired(raw, now())) {
      answer(ctx, 403, "AccessDenied", "Request has expired");
      return;
    }
    if (verifySigV4(ctx.method, raw, ctx.request.headers, secrets) === "mismatch") {
      answer(
        ctx,
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
      );
      return;
    }
    await next();
  };
}

/** The largest unsigned body held whole (a part of up to 64 MiB); longer ones stream through s3rver. */
const UNSIGNED_HELD_BYTES = 64 * 1024 * 1024;

/**
 * A request body held whole in memory, checked against any hash the client
 * stated: its chunks as they arrived, with their size and MD5 (the ETag S3
 * gives it), so the store writes them without hashing or copying them again.
 * Still a stream for whoever reads it as one.
 */
export class CheckedBody extends Readable {
  readonly chunks: readonly Buffer[];
  readonly size: number;
  readonly md5: string;
  #next = 0;

  constructor(chunks: Buffer[], md5: string) {
    super();
    this.chunks = chunks;
    this.size = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
    this.md5 = md5;
  }

  override _read(): void {
    this.push(this.chunks[this.#next++] ?? null);
  }
}

/**
 * Koa middleware for s3rver: a body whose SHA-256 (x-amz-content-sha256) or
 * MD5 (Content-MD5) the client stated must match it, or nothing is stored.
 * Such bodies were whole in the client's memory to be hashed, so they are
 * held whole here too until checked, then handed on as a CheckedBody. So is
 * an unsigned body (UNSIGNED-PAYLOAD, as sent over HTTPS) of a stated length
 * up to UNSIGNED_HELD_BYTES, so that its part goes into the store the same
 * way: s3rver's own streaming path copies every part again on completion.
 */
export async function checkPayload(ctx: S3rverContext, next: () => Promise<void>): Promise<void> {
  const headers = ctx.request.headers;
  const sha = String(headers["x-amz-content-sha256"] ?? "").toLowerCase();
  const md5 = headers["content-md5"];
  const checkSha = /^[0-9a-f]{64}$/.test(sha);
  const length = Number(headers["content-length"] ?? Number.NaN);
  const unsignedHeld =
    sha === "unsigned-payload" &&
    headers["content-encoding"] === undefined &&
    Number.isSafeInteger(length) &&
    length <= UNSIGNED_HELD_BYTES;
  if (!checkSha && typeof md5 !== "string" && !unsignedHeld) {
    await next();
    return;
  }
  // Hashed as it arrives, while each chunk is in the CPU cache, and kept in the chunks it came in.
  const chunks: Buffer[] = [];
  const shaOf = createHash("sha256");
  const md5Of = createHash("md5");
  for await (const chunk of ctx.req as IncomingMessage) {
    chunks.push(chunk as Buffer);
    if (checkSha) shaOf.update(chunk as Buffer);
    md5Of.update(chunk as Buffer);
  }
  if (checkSha && shaOf.digest("hex") !== sha) {
    answer(
      ctx,
      400,
      "XAmzContentSHA256Mismatch",
      "The provided 'x-amz-content-sha256' header does not match what was computed.",
    );
    return;
  }
  const digest = md5Of.digest();
  if (typeof md5 === "string" && digest.toString("base64") !== md5) {
    answer(ctx, 400, "BadDigest", "The Content-MD5 you specified did not match what we received.");
    return;
  }
  ctx.req = new CheckedBody(chunks, digest.toString("hex"));
  await next();
}
