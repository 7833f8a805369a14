// Google API errors and the retry policy of the Drive sink: what is worth
// trying again (network trouble, 5xx, 429, 403 rate limits) and how long to wait.
import { setTimeout as sleep } from "node:timers/promises";
import { egressRefusalIn } from "../../egress/index.ts";
import { PermanentJobError } from "../index.ts";
import type { Outage } from "../outage.ts";

/** An error answer of a Google API, with the first `errors[].reason` of its JSON. */
export class GoogleApiError extends Error {
  readonly status: number;
  readonly reason: string;
  /** Seconds from a Retry-After header, if any. */
  readonly retryAfter: number | undefined;
  constructor(status: number, reason: string, message: string, retryAfter?: number) {
    super(message);
    this.name = "GoogleApiError";
    this.status = status;
    this.reason = reason;
    this.retryAfter = retryAfter;
  }

  static async from(response: Response, what: string): Promise<GoogleApiError> {
    const text = await response.text().catch(() => "");
    let reason = "";
    let message = text.slice(0, 300);
    try {
      const body = JSON.parse(text) as {
        error?: { message?: string; errors?: { reason?: string; message?: string }[] } | string;
        error_description?: string;
      };
      if (typeof body.error === "object" && body.error) {
        reason = body.error.errors?.[0]?.reason ?? "";
        message = body.error.message ?? body.error.errors?.[0]?.message ?? message;
      } else if (typeof body.error === "string") {
        // OAuth endpoints: {"error": "invalid_grant", "error_description": "..."}
        reason = body.error;
        message = body.error_description ?? body.error;
      }
    } catch {
      // not JSON
    }
    const retryAfter = Number(response.headers.get("retry-after") ?? "");
    return new GoogleApiError(
      response.status,
      reason,
      `${what}: HTTP ${response.status}${reason ? ` ${reason}` : ""}: ${message}`,
      Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
    );
  }
}

const rateLimitReasons = new Set(["rateLimitExceeded", "userRateLimitExceeded"]);

/** Network trouble, a 5xx, a 429 or a 403 rate limit: worth trying again after a pause. */
export function isTransient(error: unknown): boolean {
  // A destination the egress policy refuses stays refused.
  if (error instanceof PermanentJobError || egressRefusalIn(error)) return false;
  if (error instanceof GoogleApiError) {
    return (
      error.status >= 500 ||
      error.status === 429 ||
      error.status === 408 ||
      (error.status === 403 && rateLimitReasons.has(error.reason))
    );
  }
  if (error instanceof Error && (error.name === "AbortError" || error.name === "TimeoutError")) return false;
  // fetch rejects with a TypeError ("fetch failed") when the connection fails or is cut.
  return error instanceof TypeError || isNodeNetworkError(error);
}

function isNodeNetworkError(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return (
    typeof code === "string" &&
    ["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "UND_ERR_SOCKET", "UND_ERR_CLOSED"].includes(code)
  );
}

export interface RetryPolicy {
  /** Tries per operation, the first included (default 8). */
  attempts: number;
  /** First pause; doubles each time (default 500 ms). */
  baseDelayMs: number;
  /** Longest pause (default 32 s, as Google's exponential backoff guidance). */
  maxDelayMs: number;
}

export const defaultRetry: RetryPolicy = { attempts: 8, baseDelayMs: 500, maxDelayMs: 32_000 };

/** Exponential backoff with jitter; a Retry-After is honoured up to the maximum. */
export function backoffDelay(policy: RetryPolicy, failures: number, error?: unknown): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, failures - 1));
  const jittered = exp / 2 + Math.random() * (exp / 2);
  const retryAfter = error instanceof GoogleApiError && error.retryAfter ? error.retryAfter * 1000 : 0;
  return Math.min(policy.maxDelayMs, Math.max(jittered, retryAfter));
}

export interface RetryLog {
  warn(obj: object, msg: string): void;
}

/** Runs `fn`, retrying transient failures with backoff. */
export async function withRetry<T>(
  fn: () => Promise<T>,
  opts: {
    policy: RetryPolicy;
    signal: AbortSignal;
    what: string;
    log?: RetryLog | undefined;
    /** With an outage, transient failures are retried within its limit, not a number of tries. */
    outage?: Outage | undefined;
  },
): Promise<T> {
  for (let failures = 1; ; failures++) {
    opts.signal.throwIfAborted();
    try {
      const result = await fn();
      opts.outage?.ok();
      return result;
    } catch (error) {
      if (opts.signal.aborted) throw opts.signal.reason ?? error;
      if (!isTransient(error)) throw error;
      if (opts.outage) opts.outage.failed(error, "Google Drive");
      else if (failures >= opts.policy.attempts) throw error;
      const delay = backoffDelay(opts.policy, failures, error);
      opts.log?.warn(
        { err: error, attempt: failures, delayMs: Math.round(delay), what: opts.what },
        "Google Drive: transient error, retrying",
      );
      await sleep(delay, undefined, { signal: opts.signal });
    }
  }
}
