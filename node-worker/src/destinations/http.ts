// HTTP for the OneDrive and Dropbox sinks: the provider's error answers, what
// is worth trying again (network trouble, 5xx, 429, Retry-After honoured) and
// the retry loop, which waits out a storage outage within the job's limit.
import { setTimeout as sleep } from "node:timers/promises";
import { egressRefusalIn } from "../egress/index.ts";
import { PermanentJobError } from "../sinks/index.ts";
import type { Outage } from "../sinks/outage.ts";

/** An error answer of a provider's API. `code` is its machine-readable reason (e.g. `quotaLimitReached`, `path/insufficient_space`). */
export class ProviderError extends Error {
  readonly status: number;
  readonly code: string;
  /** Seconds from a Retry-After header (or the body's retry_after), if any. */
  readonly retryAfter: number | undefined;
  constructor(status: number, code: string, message: string, retryAfter?: number) {
    super(message);
    this.name = "ProviderError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /**
   * Reads an error answer: Graph's `{error: {code, message}}`, Dropbox's
   * `{error_summary, error: {...}}`, OAuth's `{error, error_description}`, or text.
   */
  static async from(response: Response, what: string): Promise<ProviderError> {
    const text = await response.text().catch(() => "");
    let code = "";
    let message = text.slice(0, 300);
    let retryAfter = Number(response.headers.get("retry-after") ?? "");
    try {
      const body = JSON.parse(text) as {
        error?: { code?: unknown; message?: unknown; retry_after?: unknown } | string;
        error_summary?: unknown;
        error_description?: unknown;
      };
      if (typeof body.error_summary === "string") {
        // Dropbox: "path/insufficient_space/.." → "path/insufficient_space"
        code = body.error_summary.replace(/\/*\.*$/, "").replace(/\/\.\.$/, "");
        message = body.error_summary;
        const after = typeof body.error === "object" ? body.error?.retry_after : undefined;
        if (typeof after === "number" && !(retryAfter > 0)) retryAfter = after;
      } else if (typeof body.error === "object" && body.error) {
        code = typeof body.error.code === "string" ? body.error.code : "";
        message = typeof body.error.message === "string" ? body.error.message : message;
      } else if (typeof body.error === "string") {
        code = body.error;
        message = typeof body.error_description === "string" ? body.error_description : body.error;
      }
    } catch {
      // not JSON
    }
    return new ProviderError(
      response.status,
      code,
      `${what}: HTTP ${response.status}${code ? ` ${code}` : ""}: ${message}`,
      Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
    );
  }
}

/** Network trouble, a 5xx, a 429 or a 408: worth trying again after a pause. */
export function isTransient(error: unknown): boolean {
  // A destination the egress policy refuses stays refused.
  if (error instanceof PermanentJobError || egressRefusalIn(error)) return false;
  if (error instanceof ProviderError) {
    // 507 is OneDrive's "insufficient storage": not going away by waiting.
    return (error.status >= 500 && error.status !== 507) || error.status === 429 || error.status === 408;
  }
  if (error instanceof Error && (error.name === "AbortError" || error.name === "TimeoutError")) return false;
  // fetch rejects with a TypeError ("fetch failed") when the connection fails or is cut.
  if (error instanceof TypeError) return true;
  const code = (error as { code?: unknown } | undefined)?.code;
  return (
    typeof code === "string" &&
    ["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "UND_ERR_SOCKET", "UND_ERR_CLOSED"].includes(code)
  );
}

export interface RetryPolicy {
  /** Tries per operation without an outage clock, the first included. */
  attempts: number;
  /** First pause; doubles each time. */
  baseDelayMs: number;
  /** Longest pause of our own backoff; a longer Retry-After is still honoured. */
  maxDelayMs: number;
}

export const defaultRetry: RetryPolicy = { attempts: 8, baseDelayMs: 500, maxDelayMs: 32_000 };

/** Exponential backoff with jitter, never shorter than the provider's Retry-After. */
export function backoffDelay(policy: RetryPolicy, failures: number, error?: unknown): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(Math.max(0, failures - 1), 16));
  const jittered = exp / 2 + Math.random() * (exp / 2);
  const retryAfter = error instanceof ProviderError && error.retryAfter ? error.retryAfter * 1000 : 0;
  return Math.max(jittered, retryAfter);
}

export interface RetryLog {
  warn(obj: object, msg: string): void;
}

export interface RetryOptions {
  policy: RetryPolicy;
  signal: AbortSignal;
  /** The operation, for logs. */
  what: string;
  /** The provider, for the outage message (e.g. "OneDrive"). */
  where: string;
  log?: RetryLog | undefined;
  /** With an outage, transient failures are retried within its limit, not a number of tries. */
  outage?: Outage | undefined;
}

/** Counts a transient failure (against the outage or the tries) and waits before the next try. */
export async function pause(error: unknown, failures: number, opts: RetryOptions): Promise<void> {
  if (opts.outage) opts.outage.failed(error, opts.where);
  else if (failures >= opts.policy.attempts) throw error;
  const delay = backoffDelay(opts.policy, failures, error);
  opts.log?.warn(
    { err: error, attempt: failures, delayMs: Math.round(delay), what: opts.what },
    `${opts.where}: transient error, retrying`,
  );
  await sleep(delay, undefined, { signal: opts.signal });
}

/** Runs `fn`, retrying transient failures with backoff. */
export async function withRetry<T>(fn: () => Promise<T>, opts: RetryOptions): Promise<T> {
  for (let failures = 1; ; failures++) {
    opts.signal.throwIfAborted();
    try {
      const result = await fn();
      opts.outage?.ok();
      return result;
    } catch (error) {
      if (opts.signal.aborted) throw opts.signal.reason ?? error;
      if (!isTransient(error)) throw error;
      await pause(error, failures, opts);
    }
  }
}
