// HTTP for the OneDrive and Dropbox sinks: the provider's error answers and
// what is worth trying again (network trouble, 5xx, 429, Retry-After
// honoured); the retry loop is the sinks' shared one (sinks/retry.ts).
import { egressRefusalIn } from "../egress/index.ts";
import { PermanentJobError } from "../sinks/index.ts";
import {
  type ProviderFaults,
  pause as pauseOn,
  type RetryOptions,
  withRetry as retry,
} from "../sinks/retry.ts";

export { defaultRetry, type RetryLog, type RetryPolicy } from "../sinks/retry.ts";

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

const faults: ProviderFaults = {
  where: "the storage provider",
  isTransient,
  retryAfter: (error) => (error instanceof ProviderError ? error.retryAfter : undefined),
};

export interface ProviderRetryOptions extends RetryOptions {
  /** The provider, for logs and the outage message (e.g. "OneDrive"). */
  where: string;
}

/** Counts a transient failure (against the outage or the tries) and waits before the next try. */
export function pause(error: unknown, failures: number, opts: ProviderRetryOptions): Promise<void> {
  return pauseOn({ ...faults, where: opts.where }, error, failures, opts);
}

/** Runs `fn`, retrying transient failures with backoff (sinks/retry.ts). */
export function withRetry<T>(fn: () => Promise<T>, opts: ProviderRetryOptions): Promise<T> {
  return retry({ ...faults, where: opts.where }, fn, opts);
}
