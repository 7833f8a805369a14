// The retry loop of the HTTP sinks (Drive, OneDrive, Dropbox): exponential
// backoff with jitter, a provider's Retry-After honoured, and a storage outage
// waited out within the job's limit instead of a number of tries. Each
// provider says what is worth trying again and where its Retry-After is.
import { setTimeout as sleep } from "node:timers/promises";
import type { Outage } from "./outage.ts";

export interface RetryPolicy {
  /** Tries per operation without an outage clock, the first included. */
  attempts: number;
  /** First pause; doubles each time. */
  baseDelayMs: number;
  /** Longest pause of our own backoff (Google's guidance: 32 s); a longer Retry-After is still honoured. */
  maxDelayMs: number;
}

export const defaultRetry: RetryPolicy = { attempts: 8, baseDelayMs: 500, maxDelayMs: 32_000 };

export interface RetryLog {
  warn(obj: object, msg: string): void;
}

/** How a provider's failures read. */
export interface ProviderFaults {
  /** The provider, for logs and the outage message (e.g. "Google Drive"). */
  where: string;
  /** Network trouble, 5xx, 429 and the like: worth trying again after a pause. */
  isTransient(error: unknown): boolean;
  /** Seconds the provider asked to wait (Retry-After), if it did. */
  retryAfter(error: unknown): number | undefined;
}

export interface RetryOptions {
  policy: RetryPolicy;
  signal: AbortSignal;
  /** The operation, for logs. */
  what: string;
  log?: RetryLog | undefined;
  /** With an outage, transient failures are retried within its limit, not a number of tries. */
  outage?: Outage | undefined;
}

/** Exponential backoff with jitter, never shorter than the provider's Retry-After. */
export function backoffDelay(policy: RetryPolicy, failures: number, retryAfterSeconds?: number): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(Math.max(0, failures - 1), 16));
  const jittered = exp / 2 + Math.random() * (exp / 2);
  return Math.max(jittered, (retryAfterSeconds ?? 0) * 1000);
}

/** Counts a transient failure (against the outage or the tries) and waits before the next try. */
export async function pause(
  faults: ProviderFaults,
  error: unknown,
  failures: number,
  opts: RetryOptions,
): Promise<void> {
  if (opts.outage) opts.outage.failed(error, faults.where);
  else if (failures >= opts.policy.attempts) throw error;
  const delay = backoffDelay(opts.policy, failures, faults.retryAfter(error));
  opts.log?.warn(
    { err: error, attempt: failures, delayMs: Math.round(delay), what: opts.what },
    `${faults.where}: transient error, retrying`,
  );
  await sleep(delay, undefined, { signal: opts.signal });
}

/** Runs `fn`, retrying transient failures with backoff. */
export async function withRetry<T>(
  faults: ProviderFaults,
  fn: () => Promise<T>,
  opts: RetryOptions,
): Promise<T> {
  for (let failures = 1; ; failures++) {
    opts.signal.throwIfAborted();
    try {
      const result = await fn();
      opts.outage?.ok();
      return result;
    } catch (error) {
      if (opts.signal.aborted) throw opts.signal.reason ?? error;
      if (!faults.isTransient(error)) throw error;
      await pause(faults, error, failures, opts);
    }
  }
}
