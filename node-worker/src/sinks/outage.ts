// A storage provider that stops answering (down, 5xx, throttling) pauses a
// job's uploads rather than failing it: every request keeps retrying, with
// backoff, while the outage lasts, and the job shows that it waits. Only an
// outage longer than the operator's limit fails the job. One Outage per sink,
// shared by all its requests, so the job has one state and one clock.
import { PermanentJobError } from "./index.ts";

export interface OutageState {
  /** What the provider last did, e.g. "connection refused" or "HTTP 503". */
  reason: string;
  /** When the outage began (ms since the epoch). */
  since: number;
}

/** A short phrase for a transient failure, for the person watching the job. */
export function describeTransient(error: unknown): string {
  const e = error as {
    code?: unknown;
    name?: unknown;
    $metadata?: { httpStatusCode?: number };
    status?: unknown;
  };
  const status = e?.$metadata?.httpStatusCode ?? (typeof e?.status === "number" ? e.status : undefined);
  if (status === 429) return "HTTP 429 (too many requests)";
  if (status !== undefined) return `HTTP ${status}`;
  const code = String(e?.code ?? (error as { cause?: { code?: unknown } })?.cause?.code ?? e?.name ?? "");
  const phrases: Record<string, string> = {
    ECONNREFUSED: "connection refused",
    ECONNRESET: "connection reset",
    ETIMEDOUT: "connection timed out",
    ENOTFOUND: "host not found",
    EAI_AGAIN: "name lookup failed",
    EHOSTUNREACH: "host unreachable",
    ENETUNREACH: "network unreachable",
    EPIPE: "connection closed",
    TimeoutError: "request timed out",
    SlowDown: "asked to slow down",
  };
  return phrases[code] ?? (code || "no answer");
}

export class Outage {
  readonly limitMs: number;
  #state: OutageState | undefined;
  readonly #onChange: (state: OutageState | undefined) => void;
  readonly #now: () => number;

  constructor(
    limitMs: number,
    onChange: (state: OutageState | undefined) => void = () => {},
    now = Date.now,
  ) {
    this.limitMs = limitMs;
    this.#onChange = onChange;
    this.#now = now;
  }

  get state(): OutageState | undefined {
    return this.#state;
  }

  /** A request failed transiently: the outage begins or goes on. Throws once it lasted past the limit. */
  failed(error: unknown, where: string): void {
    const reason = describeTransient(error);
    const now = this.#now();
    if (!this.#state || this.#state.reason !== reason) {
      this.#state = { reason, since: this.#state?.since ?? now };
      this.#onChange(this.#state);
    }
    if (now - this.#state.since >= this.limitMs) {
      const minutes = Math.round(this.limitMs / 60_000);
      throw new PermanentJobError(
        `The storage provider at ${where} did not answer for ${minutes >= 1 ? `${minutes} min` : `${Math.round(this.limitMs / 1000)} s`} (${reason}); the job stopped waiting. Retry it once the storage is back.`,
        { cause: error },
      );
    }
  }

  /** A request went through: the outage, if any, is over. */
  ok(): void {
    if (!this.#state) return;
    this.#state = undefined;
    this.#onChange(undefined);
  }
}
