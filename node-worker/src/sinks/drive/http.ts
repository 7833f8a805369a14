// Google API errors: what is worth trying again (network trouble, 5xx, 429,
// 403 rate limits); the retry loop is the sinks' shared one (sinks/retry.ts).
import { egressRefusalIn } from "../../egress/index.ts";
import { PermanentJobError } from "../index.ts";
import { type ProviderFaults, pause as pauseOn, type RetryOptions, withRetry as retry } from "../retry.ts";

export { defaultRetry, type RetryLog, type RetryPolicy } from "../retry.ts";

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

const faults: ProviderFaults = {
  where: "Google Drive",
  isTransient,
  retryAfter: (error) => (error instanceof GoogleApiError ? error.retryAfter : undefined),
};

/** Runs `fn`, retrying transient failures with backoff (sinks/retry.ts). */
export function withRetry<T>(fn: () => Promise<T>, opts: RetryOptions): Promise<T> {
  return retry(faults, fn, opts);
}

/** Counts a transient failure (against the outage or the tries) and waits before the next try. */
export function pause(error: unknown, failures: number, opts: RetryOptions): Promise<void> {
  return pauseOn(faults, error, failures, opts);
}
