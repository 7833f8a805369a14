// Checks an S3-compatible destination before its profile is saved, with real
// SigV4-signed requests (aws4fetch, so it runs in workerd):
//
//   1. ListObjectsV2 (max-keys=1) under the prefix: the credentials are valid,
//      the bucket exists and may be listed (the worker's HeadBucket needs the
//      same s3:ListBucket permission).
//   2. PutObject of a small marker under the prefix: objects may be written.
//   3. DeleteObject of that marker: nothing is left behind. A refused delete
//      does not fail the check (uploads do not need it); it becomes a warning.
//   4. With the web app's origin: a CORS preflight (OPTIONS, as a browser sends
//      it before PUTting a part) says whether transfers in the browser will
//      work. Fleet jobs need no CORS, so a refusal is a warning with the rule
//      to add, never a failure.
//
// URLs are built the way the worker's AWS SDK client builds them from the same
// profile (virtual-hosted unless forcePathStyle, or a dotted bucket over TLS),
// so a profile that passes here is addressed identically when files upload.
import { type BrowserTransferCheck, corsRuleFor, type EgressPolicy, isIpLiteral } from "@torreclou/contracts";
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
  /** The provider's error code (e.g. NoSuchBucket), "HTTP<status>", "NetworkError" or "Timeout". */
  code: string;
  /** The `<Message>` of an S3 error document; no other provider text is ever kept. */
  providerMessage?: string | undefined;
  status?: number | undefined;
  /** For the log only: why the connection failed, in the runtime's words. */
  detail?: string | undefined;
}

export type S3CheckResult =
  | { ok: true; warnings: string[]; browserTransfer?: BrowserTransferCheck | undefined }
  | { ok: false; failure: S3CheckFailure };

export interface S3CheckOptions {
  /** Per request; the whole check makes three (four with `webOrigin`). */
  timeoutMs?: number;
  /** The web app's origin: also check that the bucket lets it upload parts (CORS). */
  webOrigin?: string | undefined;
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
    .replace(/&(amp|lt|gt|quot|apos|#\d{1,7});/g, (_, name: string) => {
      if (!name.startsWith("#")) return entities[name]!;
      const code = Number(name.slice(1));
      return code <= 0x10ffff ? String.fromCodePoint(code) : "\ufffd";
    })
    .trim();
}

/** A short, single-line excerpt of provider text: it ends up in an API response. */
function excerpt(text: string, max = 300): string {
  const line = text.replace(/[\s\p{Cc}]+/gu, " ").trim();
  return line.length > max ? `${line.slice(0, max)}…` : line;
}

/** At most this much of an error body is read: any S3 error document fits many times over. */
const MAX_ERROR_BODY = 64 * 1024;

async function readCapped(response: Response): Promise<string> {
  if (!response.body) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < MAX_ERROR_BODY) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } catch {
    // A body cut short: what arrived is judged.
  } finally {
    await reader.cancel().catch(() => {});
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes.subarray(0, MAX_ERROR_BODY));
}

/** What an S3 error document says; the only provider text that reaches a response. */
interface S3ErrorDocument {
  code: string;
  message: string | undefined;
  region: string | undefined;
}

const S3_ERROR_CODE = /^[A-Za-z][A-Za-z0-9.]{0,63}$/;
const REGION = /^[a-z0-9-]{1,40}$/;

/** The document if the whole body is an S3 `<Error>` with a plausible `<Code>`, else undefined. */
function s3ErrorOf(text: string): S3ErrorDocument | undefined {
  const document = /^\s*(?:<\?xml[^>]*\?>\s*)?<Error>([\s\S]*)<\/Error>\s*$/.exec(text);
  if (!document) return undefined;
  const inner = document[1]!;
  const code = xmlText(inner, "Code");
  if (!code || !S3_ERROR_CODE.test(code)) return undefined;
  const message = xmlText(inner, "Message");
  const region = xmlText(inner, "Region");
  return {
    code,
    message: message ? excerpt(message) : undefined,
    region: region && REGION.test(region) ? region : undefined,
  };
}

/** The content type's essence (`text/html`) if it is a well-formed one; never a header's raw text. */
function mediaType(header: string | null): string | undefined {
  const essence = header?.split(";")[0]?.trim().toLowerCase();
  const token = "[a-z0-9][a-z0-9!#$&^_.+-]{0,63}";
  return essence && new RegExp(`^${token}/${token}$`).test(essence) ? essence : undefined;
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * What kind of answer a body that is not an S3 error document is, in words:
 * never any of its content, so an endpoint check cannot be used to read
 * whatever answers at an address.
 */
function describeAnswer(response: Response, text: string): string {
  const type = mediaType(response.headers.get("content-type"));
  const trimmed = text.trim();
  let kind: string;
  if (trimmed === "") kind = "an empty body";
  else if (type?.includes("html") || /^<(!doctype\s+html|html)[\s>]/i.test(trimmed)) kind = "an HTML page";
  else if (type?.includes("json") || isJson(trimmed)) kind = "a JSON document";
  else if (type?.includes("xml") || trimmed.startsWith("<")) kind = "an XML document";
  else kind = "a body in another format";
  return `HTTP ${response.status} with ${kind}${type ? ` (${type})` : ""}`;
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
  regionInBody: string | undefined,
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
      const header = headers.get("x-amz-bucket-region");
      const region = header && REGION.test(header) ? header : regionInBody;
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
  const { status } = response;
  const text = await readCapped(response);
  const error = s3ErrorOf(text);
  if (!error) {
    const answer = describeAnswer(response, text);
    const redirect = status >= 300 && status < 400;
    if (step !== "delete" && status < 500 && !redirect) {
      // Not an S3 error document at all: probably not an S3 endpoint.
      return {
        step,
        code: `HTTP${status}`,
        status,
        message: `${endpointOf(target)} answered ${answer}, not an S3 error document; is it an S3-compatible endpoint?`,
      };
    }
    const sentence = describe(target, step, status, `HTTP${status}`, response.headers, undefined);
    return { step, code: `HTTP${status}`, status, message: `${sentence} It answered ${answer}.` };
  }
  const sentence = describe(target, step, status, error.code, response.headers, error.region);
  const said = error.message ? `${error.code}: ${error.message}` : error.code;
  return {
    step,
    code: error.code,
    status,
    providerMessage: error.message,
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
  // The runtime's own words stay in the log: they describe the network, not the provider.
  return {
    step,
    code: "NetworkError",
    detail: excerpt(error instanceof Error ? `${error.name}: ${error.message}` : String(error)),
    message: `Could not connect to ${endpoint}. Check the endpoint address, and that it is reachable from the internet.`,
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
  if (options.webOrigin === undefined) return { ok: true, warnings };
  const browserTransfer = await checkCors(target, markerKey, options.webOrigin, timeoutMs);
  if (!browserTransfer.ready) warnings.push(browserTransfer.message);
  return { ok: true, warnings, browserTransfer };
}

/**
 * The preflight a browser sends before PUTting a part, from the web app's
 * origin (unsigned, as browsers send it). Ready when the bucket allows that
 * origin to PUT; the rule to add is in the answer either way.
 */
export async function checkCors(
  target: S3Target,
  key: string,
  origin: string,
  timeoutMs = DEFAULT_TIMEOUT_MS,
): Promise<BrowserTransferCheck> {
  const rule = corsRuleFor(origin);
  const advice = `Transfers in the browser need the bucket to allow ${origin} (CORS): add this rule to the bucket's CORS configuration: ${JSON.stringify([rule])}. Jobs the worker fleet transfers work without it.`;
  let response: Response;
  try {
    response = await fetch(objectUrl(target, key), {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "PUT",
        "access-control-request-headers": "content-type",
      },
      redirect: "manual",
      signal: AbortSignal.timeout(timeoutMs),
    });
    await response.body?.cancel();
  } catch {
    return { ready: false, rule, message: `The bucket did not answer a CORS preflight. ${advice}` };
  }
  const allowed = response.headers.get("access-control-allow-origin");
  const methods = (response.headers.get("access-control-allow-methods") ?? "PUT").toUpperCase();
  const ready = response.ok && (allowed === "*" || allowed === origin) && /\bPUT\b/.test(methods);
  return ready
    ? { ready, rule, message: `The bucket lets ${origin} upload parts: transfers in the browser will work.` }
    : { ready, rule, message: `The bucket refused a CORS preflight from ${origin}. ${advice}` };
}

/** Whether the host is an IP literal or a localhost name: the bucket cannot go in such a host name. */
export function isIpOrLocalhost(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/\.+$/, "");
  return isIpLiteral(host) || host === "localhost" || host.endsWith(".localhost");
}

export type EndpointCheck = { ok: true; origin: string; host: string } | { ok: false; reason: string };

/**
 * Validates a custom endpoint and returns its origin, or a reason it is refused.
 * The host must pass the egress policy as far as it can be judged without DNS
 * (contracts/src/egress.ts): loopback, private, link-local, metadata and the
 * other non-public forms are refused, since the edge and the workers would
 * send signed requests there, on their own networks. An exact host:port the
 * operator allows (EGRESS_ALLOW) passes, and only such a target may use http.
 */
export function checkEndpoint(raw: string, egress: EgressPolicy): EndpointCheck {
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
  const port = url.port ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
  const verdict = egress.checkHost(url.hostname, port);
  if (!verdict.allowed) {
    return { ok: false, reason: `must be a public host: ${url.hostname} is ${verdict.reason}` };
  }
  if (url.protocol === "http:" && !egress.allows(url.hostname, port)) {
    return { ok: false, reason: "must use https://" };
  }
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
