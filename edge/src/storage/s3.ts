// Checks an S3-compatible destination before its profile is saved, with real
// SigV4-signed requests (aws4fetch, so it runs in workerd):
//
//   1. ListObjectsV2 (max-keys=1) under the prefix: the credentials are valid,
//      the bucket exists and may be listed (the worker's HeadBucket needs the
//      same s3:ListBucket permission).
//   2. PutObject of a small marker under the prefix: objects may be written.
//   3. DeleteObject of that marker: nothing is left behind. A refused delete
//      does not fail the check (uploads do not need it); it becomes a warning.
//
// URLs are built the way the worker's AWS SDK client builds them from the same
// profile (virtual-hosted unless forcePathStyle, or a dotted bucket over TLS),
// so a profile that passes here is addressed identically when files upload.
import { AwsClient } from "aws4fetch";

export interface S3Target {
  /** Origin of a custom endpoint (R2, B2, MinIO, ...); undefined means AWS S3 in `region`. */
  endpoint?: string | undefined;
  region: string;
  bucket: string;
  /** Key prefix without leading or trailing slashes; "" for the bucket root. */
  prefix: string;
  forcePathStyle: boolean;
}

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

export type S3CheckStep = "list" | "write" | "delete";

export interface S3CheckFailure {
  step: S3CheckStep;
  /** A sentence for the user, with the provider's own code and message when there is one. */
  message: string;
  /** The provider's error code (e.g. NoSuchBucket), "NetworkError" or "Timeout". */
  code: string;
  providerMessage?: string | undefined;
  status?: number | undefined;
}

export type S3CheckResult = { ok: true; warnings: string[] } | { ok: false; failure: S3CheckFailure };

export interface S3CheckOptions {
  /** Per request; the whole check makes three. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const MARKER_BODY = "TorreClou wrote this object to check write access and deletes it right away.\n";

/** The endpoint's origin, or AWS's regional one. */
export function endpointOf(target: Pick<S3Target, "endpoint" | "region">): string {
  return target.endpoint ?? `https://s3.${target.region}.amazonaws.com`;
}

/** The AWS SDK's rule: a bucket goes in the host name unless path style is forced or the name cannot. */
function virtualHosted(target: S3Target, endpoint: URL): boolean {
  if (target.forcePathStyle) return false;
  const dnsCompatible =
    /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(target.bucket) &&
    !target.bucket.includes("..") &&
    !/^\d+\.\d+\.\d+\.\d+$/.test(target.bucket);
  if (!dnsCompatible) return false;
  return !(endpoint.protocol === "https:" && target.bucket.includes("."));
}

/** URL of `key` in the bucket (or of the bucket itself when key is ""). */
export function objectUrl(target: S3Target, key: string): URL {
  const endpoint = new URL(endpointOf(target));
  const encodedKey = key.split("/").map(encodeURIComponent).join("/");
  if (virtualHosted(target, endpoint)) {
    endpoint.hostname = `${target.bucket}.${endpoint.hostname}`;
    endpoint.pathname = `/${encodedKey}`;
  } else {
    endpoint.pathname = `/${encodeURIComponent(target.bucket)}/${encodedKey}`;
  }
  return endpoint;
}

function joinKey(prefix: string, name: string): string {
  return prefix === "" ? name : `${prefix}/${name}`;
}

const entities: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

function xmlText(xml: string, tag: string): string | undefined {
  const match = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(xml);
  if (!match) return undefined;
  return match[1]!
    .replace(/&(amp|lt|gt|quot|apos);/g, (_, name: string) => entities[name]!)
    .replace(/&#(\d+);/g, (_, code: string) => String.fromCodePoint(Number(code)))
    .trim();
}

/** A short, single-line excerpt of provider text: it ends up in an API response. */
function excerpt(text: string, max = 300): string {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > max ? `${line.slice(0, max)}…` : line;
}

const stepAction: Record<S3CheckStep, string> = {
  list: "list the bucket",
  write: "write a test object",
  delete: "delete the test object",
};

/** A sentence about a provider error, for someone fixing their storage profile. */
function describe(
  target: S3Target,
  step: S3CheckStep,
  status: number,
  code: string,
  headers: Headers,
  xml: string,
): string {
  const bucket = `"${target.bucket}"`;
  switch (code) {
    case "InvalidAccessKeyId":
      return "The storage provider does not know this access key id. Check the access key id, and that the endpoint belongs to the provider that issued it.";
    case "SignatureDoesNotMatch":
      return "The storage provider rejected the secret access key: it does not match the access key id.";
    case "InvalidToken":
    case "ExpiredToken":
    case "TokenRefreshRequired":
      return "The storage provider rejected the access key as expired or invalid.";
    case "NoSuchBucket":
      return `The bucket ${bucket} does not exist at ${endpointOf(target)}. Create it, or fix the bucket name or endpoint.`;
    case "AccessDenied":
    case "AllAccessDisabled":
      return `The access key may not ${stepAction[step]} in the bucket ${bucket}. TorreClou needs to list the bucket and write objects under the prefix.`;
    case "PermanentRedirect":
    case "AuthorizationHeaderMalformed":
    case "IllegalLocationConstraintException": {
      const region = headers.get("x-amz-bucket-region") ?? xmlText(xml, "Region");
      return region && region !== target.region
        ? `The bucket ${bucket} is in the region "${region}", not "${target.region}". Set the region to "${region}".`
        : `The bucket ${bucket} must be reached through another endpoint or region.`;
    }
    case "InvalidBucketName":
      return `The storage provider does not accept ${bucket} as a bucket name.`;
    case "RequestTimeTooSkewed":
      return "The storage provider rejected the request's clock time.";
    case "SlowDown":
    case "ServiceUnavailable":
    case "InternalError":
      return "The storage provider is busy or failing right now. Try again in a moment.";
  }
  if (status === 404) return `The bucket ${bucket} was not found at ${endpointOf(target)}.`;
  if (status === 403) return `The storage provider refused to ${stepAction[step]} in the bucket ${bucket}.`;
  if (status >= 300 && status < 400)
    return `The storage provider redirected the request (HTTP ${status}); check the endpoint and region.`;
  return `The storage provider could not ${stepAction[step]} in the bucket ${bucket} (HTTP ${status}).`;
}

async function failureOf(target: S3Target, step: S3CheckStep, response: Response): Promise<S3CheckFailure> {
  const text = await response.text().catch(() => "");
  const providerCode = xmlText(text, "Code");
  const providerMessage = xmlText(text, "Message");
  if (!providerCode && step !== "delete" && response.status < 500 && !/^\s*</.test(text)) {
    // Not an S3 error document at all: probably not an S3 endpoint.
    return {
      step,
      code: `HTTP${response.status}`,
      status: response.status,
      providerMessage: text ? excerpt(text, 200) : undefined,
      message: `${endpointOf(target)} answered HTTP ${response.status} without an S3 error; is it an S3-compatible endpoint?`,
    };
  }
  const code = providerCode ?? `HTTP${response.status}`;
  const sentence = describe(target, step, response.status, code, response.headers, text);
  const said = providerMessage ? `${code}: ${excerpt(providerMessage)}` : code;
  return {
    step,
    code,
    status: response.status,
    providerMessage: providerMessage ? excerpt(providerMessage) : undefined,
    message: `${sentence} The provider said: ${said}`,
  };
}

function networkFailure(
  target: S3Target,
  step: S3CheckStep,
  error: unknown,
  timeoutMs: number,
): S3CheckFailure {
  const endpoint = endpointOf(target);
  const name = error instanceof Error ? error.name : "";
  if (name === "TimeoutError" || name === "AbortError") {
    return {
      step,
      code: "Timeout",
      message: `${endpoint} did not answer within ${Math.round(timeoutMs / 1000)} s. Check the endpoint, and that it is reachable from the internet.`,
    };
  }
  const detail = error instanceof Error ? error.message : String(error);
  return {
    step,
    code: "NetworkError",
    providerMessage: excerpt(detail),
    message: `Could not connect to ${endpoint}: ${excerpt(detail)}. Check the endpoint address.`,
  };
}

/** Runs the three-step check. Never throws for provider or network trouble: it returns a failure. */
export async function checkS3(
  target: S3Target,
  credentials: S3Credentials,
  options: S3CheckOptions = {},
): Promise<S3CheckResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const client = new AwsClient({
    accessKeyId: credentials.accessKeyId,
    secretAccessKey: credentials.secretAccessKey,
    service: "s3",
    region: target.region,
    retries: 0,
  });
  const send = async (step: S3CheckStep, url: URL, init: RequestInit): Promise<Response | S3CheckFailure> => {
    try {
      const request = await client.sign(url.toString(), {
        ...init,
        // A 301 from S3 names the right region; following it would lose that.
        redirect: "manual",
        signal: AbortSignal.timeout(timeoutMs),
      });
      return await fetch(request);
    } catch (error) {
      return networkFailure(target, step, error, timeoutMs);
    }
  };

  const list = objectUrl(target, "");
  list.searchParams.set("list-type", "2");
  list.searchParams.set("max-keys", "1");
  if (target.prefix !== "") list.searchParams.set("prefix", `${target.prefix}/`);
  const listed = await send("list", list, { method: "GET" });
  if (!(listed instanceof Response)) return { ok: false, failure: listed };
  if (!listed.ok) return { ok: false, failure: await failureOf(target, "list", listed) };
  await listed.body?.cancel();

  const markerKey = joinKey(target.prefix, `.torreclou-check-${crypto.randomUUID()}`);
  const marker = objectUrl(target, markerKey);
  const written = await send("write", marker, {
    method: "PUT",
    body: MARKER_BODY,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
  if (!(written instanceof Response)) return { ok: false, failure: written };
  if (!written.ok) return { ok: false, failure: await failureOf(target, "write", written) };
  await written.body?.cancel();

  const warnings: string[] = [];
  const deleted = await send("delete", marker, { method: "DELETE" });
  if (!(deleted instanceof Response) || !deleted.ok) {
    const failure = deleted instanceof Response ? await failureOf(target, "delete", deleted) : deleted;
    warnings.push(
      `The test object "${markerKey}" could not be deleted and was left in the bucket; you may remove it. ${failure.message}`,
    );
  } else {
    await deleted.body?.cancel();
  }
  return { ok: true, warnings };
}

const PRIVATE_V4 = [
  [0x00000000, 8], // 0.0.0.0/8
  [0x0a000000, 8], // 10/8
  [0x64400000, 10], // 100.64/10 (carrier-grade NAT)
  [0x7f000000, 8], // 127/8
  [0xa9fe0000, 16], // 169.254/16 (link-local, cloud metadata)
  [0xac100000, 12], // 172.16/12
  [0xc0a80000, 16], // 192.168/16
] as const;

function privateIPv4(host: string): boolean {
  const parts = host.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) return false;
  const ip = ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
  return PRIVATE_V4.some(([net, bits]) => ip >>> (32 - bits) === net >>> (32 - bits));
}

/** Loopback, private-network or link-local host (as an IP literal or localhost). */
export function isPrivateHost(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/^\[|\]$/g, "");
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  if (privateIPv4(host)) return true;
  if (host.includes(":")) {
    if (host === "::" || host === "::1") return true;
    if (/^f[cd][0-9a-f]{2}:/.test(host) || /^fe[89ab][0-9a-f]:/.test(host)) return true;
    // IPv4-mapped, as written or as URL normalises it (::ffff:c0a8:101).
    const dotted = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(host);
    if (dotted) return privateIPv4(dotted[1]!);
    const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
    if (hex) {
      const hi = Number.parseInt(hex[1]!, 16);
      const lo = Number.parseInt(hex[2]!, 16);
      return privateIPv4(`${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`);
    }
  }
  return false;
}

export function isIpOrLocalhost(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/^\[|\]$/g, "");
  return host === "localhost" || host.endsWith(".localhost") || host.includes(":") || /^[\d.]+$/.test(host);
}

/**
 * Validates a custom endpoint and returns its origin, or a reason it is refused.
 * Endpoints must be https. Private hosts (localhost, private and link-local
 * IPs) are refused unless `allowPrivate`: the edge and the workers would send
 * signed requests there, on their own networks. With `allowPrivate` (local
 * development), such hosts may also use http.
 */
export function checkEndpoint(
  raw: string,
  allowPrivate: boolean,
): { ok: true; origin: string; host: string } | { ok: false; reason: string } {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, reason: "must be a URL like https://s3.example.com" };
  }
  if (url.protocol !== "https:" && url.protocol !== "http:")
    return { ok: false, reason: "must be an https:// URL" };
  if (url.username || url.password) return { ok: false, reason: "must not contain a user name or password" };
  if ((url.pathname !== "/" && url.pathname !== "") || url.search || url.hash) {
    return {
      ok: false,
      reason: "must be just scheme, host and port (no path or query), like https://s3.example.com",
    };
  }
  const privateHost = isPrivateHost(url.hostname);
  if (privateHost && !allowPrivate) {
    return {
      ok: false,
      reason: "must be a public host: local and private network addresses are not allowed",
    };
  }
  if (url.protocol === "http:" && !privateHost) return { ok: false, reason: "must use https://" };
  return { ok: true, origin: url.origin, host: url.hostname };
}

/**
 * A time-limited download link for an object (SigV4 query signing), so the
 * job page can link to files in a private bucket without exposing keys.
 */
export async function presignGet(
  target: S3Target,
  credentials: S3Credentials,
  key: string,
  expiresSeconds = 3600,
): Promise<string> {
  const url = objectUrl(target, key);
  url.searchParams.set("X-Amz-Expires", String(expiresSeconds));
  const client = new AwsClient({ ...credentials, service: "s3", region: target.region });
  const signed = await client.sign(url.toString(), { method: "GET", aws: { signQuery: true } });
  return signed.url;
}
