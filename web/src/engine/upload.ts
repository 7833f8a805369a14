// Sending bytes from the tab straight to the destination: one S3 part to a
// presigned URL, or one Drive chunk to a resumable session. Each retries what
// may pass (no answer, 5xx, 429, an expired URL) a few times with backoff,
// and otherwise gives up with an UploadRefused whose message tells a person
// what to change.
import type { PartUrl } from "@torreclou/contracts";
import { driveContentRange, driveOffsetFromRange, retryDelay, type Slice, sleep } from "./layout.ts";

/** The upload cannot go on; `message` is the job's failure reason. */
export class UploadRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UploadRefused";
  }
}

/** What the uploaders need from the browser, injectable for tests. */
export interface Http {
  fetch(url: string, init: RequestInit): Promise<Response>;
  sleep(ms: number, signal: AbortSignal): Promise<void>;
  now(): number;
}

export const browserHttp: Http = {
  fetch: (url, init) => fetch(url, init),
  sleep,
  now: () => Date.now(),
};

/** Tries of one part or chunk before the job fails. */
export const UPLOAD_TRIES = 5;
/** A presigned URL this close to its expiry is not used: a fresh one is asked for. */
const EXPIRY_MARGIN_MS = 60_000;

function retryAfter(response: Response): number | undefined {
  const value = response.headers.get("retry-after");
  return value !== null && /^\d+$/.test(value) ? Number(value) : undefined;
}

/** S3's error code and message from its XML body, when the browser may read it. */
async function s3Error(response: Response): Promise<string> {
  const text = await response.text().catch(() => "");
  const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1];
  const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1];
  return [code, message].filter(Boolean).join(": ") || `HTTP ${response.status}`;
}

export interface PartPut {
  bytes: Uint8Array;
  /** A presigned UploadPart URL for this part (asked again when one expires or is refused). */
  url: () => Promise<PartUrl>;
  http: Http;
  signal: AbortSignal;
  /** This page's origin, for the CORS advice. */
  origin: string;
}

/** PUTs one part to S3; resolves with the ETag S3 answered. */
export async function putS3Part(put: PartPut): Promise<string> {
  const { http, signal } = put;
  const corsAdvice = `the bucket's CORS rule must allow PUT from ${put.origin} and expose the ETag header`;
  let url = await put.url();
  let problem = "";
  for (let tries = 1; tries <= UPLOAD_TRIES; tries++) {
    if (http.now() > url.expiresAt - EXPIRY_MARGIN_MS) url = await put.url();
    let response: Response;
    try {
      response = await http.fetch(url.url, { method: "PUT", body: put.bytes as BodyInit, signal });
    } catch {
      if (signal.aborted) throw signal.reason;
      // A browser says nothing more about a CORS refusal than about a network failure.
      problem = `The bucket refused the upload from this browser or could not be reached: ${corsAdvice}.`;
      await http.sleep(retryDelay(tries), signal);
      continue;
    }
    if (response.ok) {
      const etag = response.headers.get("etag");
      if (etag) return etag;
      throw new UploadRefused(
        `The bucket stored a part but hid its ETag from this browser: ${corsAdvice} (ExposeHeaders: ETag).`,
      );
    }
    const said = await s3Error(response);
    if (response.status === 403) {
      // Most often an expired or clock-skewed signature: sign again once or twice.
      problem = `The bucket refused the upload (${said}): check that the storage's keys may write to it.`;
      url = await put.url();
    } else if (response.status >= 500 || response.status === 429 || response.status === 408) {
      problem = `The bucket kept failing to store a part (${said}).`;
    } else {
      throw new UploadRefused(`The bucket refused a part (${said}).`);
    }
    await http.sleep(retryDelay(tries, 1000, 30_000, retryAfter(response)), signal);
  }
  throw new UploadRefused(problem);
}

/** Where a Drive session stands after an answer. */
export type DriveState = { done: false; offset: number } | { done: true; fileId: string };

export interface DriveSession {
  sessionUrl: string;
  /** The file's size in bytes. */
  size: number;
  http: Http;
  signal: AbortSignal;
}

type DriveAnswer = DriveState | { retry: string; after?: number };

async function driveAnswer(response: Response): Promise<DriveAnswer> {
  if (response.status === 308)
    return { done: false, offset: driveOffsetFromRange(response.headers.get("range")) };
  if (response.status === 200 || response.status === 201) {
    const body = (await response.json()) as { id?: unknown };
    if (typeof body.id !== "string")
      throw new UploadRefused("Google Drive finished the upload without a file id.");
    return { done: true, fileId: body.id };
  }
  const text = await response.text().catch(() => "");
  const reason = /"reason"\s*:\s*"([^"]+)"/.exec(text)?.[1];
  const message = /"message"\s*:\s*"([^"]+)"/.exec(text)?.[1] ?? `HTTP ${response.status}`;
  if (response.status >= 500 || response.status === 429 || response.status === 408) {
    const after = retryAfter(response);
    return after === undefined ? { retry: message } : { retry: message, after };
  }
  if (response.status === 404 || response.status === 410) {
    throw new UploadRefused(
      "Google Drive ended the upload session (it lasts a week): start the transfer again to open a new one.",
    );
  }
  if (reason === "storageQuotaExceeded") throw new UploadRefused("The Google Drive is full.");
  if (reason === "userRateLimitExceeded" || reason === "rateLimitExceeded") return { retry: message };
  throw new UploadRefused(`Google Drive refused the upload (${message}).`);
}

async function driveRequest(
  session: DriveSession,
  slice: Slice,
  bytes: Uint8Array | null,
): Promise<DriveAnswer> {
  try {
    const response = await session.http.fetch(session.sessionUrl, {
      method: "PUT",
      headers: { "content-range": driveContentRange(slice, session.size) },
      ...(bytes ? { body: bytes as BodyInit } : {}),
      signal: session.signal,
    });
    return await driveAnswer(response);
  } catch (err) {
    if (session.signal.aborted) throw session.signal.reason;
    if (err instanceof UploadRefused) throw err;
    return { retry: "Google Drive could not be reached from this browser" };
  }
}

/**
 * Sends bytes [slice.start, slice.end) of the file (`bytes`, exactly that
 * range) to the session, and what Drive did not keep of them again. After an
 * error it asks the session where it stands (`Content-Range: bytes * /size`).
 * Resolves once Drive holds at least up to slice.end, or the whole file.
 */
export async function putDriveChunk(
  session: DriveSession,
  slice: Slice,
  bytes: Uint8Array,
): Promise<DriveState> {
  const statusQuery = { start: 0, end: 0 };
  let at = slice.start;
  let failures = 0;
  for (;;) {
    let answer = await driveRequest(session, { start: at, end: slice.end }, bytes.subarray(at - slice.start));
    while ("retry" in answer) {
      if (++failures >= UPLOAD_TRIES) throw new UploadRefused(`Google Drive kept failing: ${answer.retry}.`);
      await session.http.sleep(retryDelay(failures, 1000, 30_000, answer.after), session.signal);
      answer = await driveRequest(session, statusQuery, null);
    }
    if (answer.done || answer.offset >= slice.end) return answer;
    if (answer.offset < slice.start) {
      throw new UploadRefused(
        "Google Drive lost part of the upload it had confirmed: start the transfer again to send it anew.",
      );
    }
    // Drive kept less than was sent: send the rest of this chunk again.
    at = answer.offset;
  }
}
