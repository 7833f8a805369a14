// Sends users' webhook deliveries (written by the database in the same
// transaction that moved the job: drizzle/jobs.ts) in the Standard Webhooks
// scheme, signed with the endpoint's secret, and retries them on a schedule.
//
// Every request runs as a job for the egress guard, so a URL that resolves to
// a private address is refused on the address actually connected to, like a
// tracker or a web seed. A slow endpoint holds only this loop, never a job.
//
// Cost: nothing here touches Postgres while nothing is pending. The worker's
// errand loop (errands.ts) blocks on a Redis list that producers push to when
// they write deliveries; the earliest retry time any sender scheduled is kept
// in one Redis key, so a retry survives the sender that planned it.
import {
  CredentialsError,
  decryptBytes,
  type Keyring,
  type WebhookPayload,
  webhookSecretScope,
  webhookWakeKey,
} from "@torreclou/contracts";
import { webhookDeliveries, webhookEndpoints } from "@torreclou/db";
import type { Db } from "@torreclou/db/jobs";
import { and, eq, inArray, lte, min, sql } from "drizzle-orm";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { Webhook } from "standardwebhooks";
import { asJob, egressRefusalIn, Refusals } from "../egress/index.ts";

/** The earliest time (ms since the epoch) a pending delivery is due, for every sender. */
export const webhookDueKey = "torreclou:webhooks:due";
/** A claimed delivery is someone else's to try again after this, should its sender die mid-request. */
const CLAIM_MS = 60_000;
/** Deliveries claimed at a time. */
const BATCH = 10;
/** Characters of the endpoint's answer kept for the user to see. */
const RESPONSE_CHARS = 1024;

export interface WebhookSenderOptions {
  db: Db;
  /** The worker's command connection (not a blocking one). */
  redis: Redis;
  keyRing: Keyring;
  log: Logger;
  /** Delay before each retry; after the last, a delivery is given up. */
  retryDelaysMs: readonly number[];
  timeoutMs: number;
  /** Counts deliveries by outcome (metrics). */
  onSent?: (outcome: "delivered" | "retry" | "failed") => void;
}

type Claimed = typeof webhookDeliveries.$inferSelect & {
  url: string;
  secretCiphertext: string;
  secretIv: string;
  secretKeyId: string;
};

export class WebhookSender {
  readonly #opts: WebhookSenderOptions;
  readonly #commands: Redis;
  /** Ends requests in flight when the worker stops (their claims lapse and another sender tries again). */
  readonly #abort = new AbortController();

  constructor(opts: WebhookSenderOptions) {
    this.#opts = opts;
    this.#commands = opts.redis;
  }

  /** Ends requests in flight; they are not counted as tries. */
  stop(): void {
    this.#abort.abort();
  }

  /** Tells every sender (this one too) that deliveries were written. */
  async wake(): Promise<void> {
    await this.#commands.lpush(webhookWakeKey, "1");
  }

  /** Clears the wakes that piled up: one pass sends everything due. */
  async woken(): Promise<void> {
    await this.#commands.del(webhookWakeKey);
  }

  /** When the earliest pending delivery is due, as any sender last saw it (undefined: none). */
  async sharedDue(): Promise<number | undefined> {
    const shared = await this.#commands.get(webhookDueKey);
    return shared === null ? undefined : Number(shared);
  }

  /** Sends every delivery due now; returns when the next pending one is due (undefined: none). */
  async pass(): Promise<number | undefined> {
    for (;;) {
      const batch = await this.#claim();
      if (batch.length === 0) break;
      await Promise.all(batch.map((delivery) => this.#send(delivery)));
    }
    const [next] = await this.#opts.db
      .select({ at: min(webhookDeliveries.nextAttemptAt) })
      .from(webhookDeliveries)
      .where(eq(webhookDeliveries.state, "pending"));
    const due = next?.at ? new Date(next.at).getTime() : undefined;
    if (due === undefined) await this.#commands.del(webhookDueKey);
    else await this.#commands.set(webhookDueKey, String(due));
    return due;
  }

  /** Takes up to a batch of due deliveries: each try counted, and pushed out of reach of other senders for a while. */
  async #claim(): Promise<Claimed[]> {
    const { db } = this.#opts;
    return db.transaction(async (tx) => {
      const due = await tx
        .select({ id: webhookDeliveries.id })
        .from(webhookDeliveries)
        .where(and(eq(webhookDeliveries.state, "pending"), lte(webhookDeliveries.nextAttemptAt, sql`now()`)))
        .orderBy(webhookDeliveries.nextAttemptAt)
        .limit(BATCH)
        .for("update", { skipLocked: true });
      if (due.length === 0) return [];
      const ids = due.map((row) => row.id);
      await tx
        .update(webhookDeliveries)
        .set({
          attempts: sql`${webhookDeliveries.attempts} + 1`,
          nextAttemptAt: sql`now() + ${`${CLAIM_MS} milliseconds`}::interval`,
        })
        .where(inArray(webhookDeliveries.id, ids));
      const rows = await tx
        .select({
          delivery: webhookDeliveries,
          url: webhookEndpoints.url,
          secretCiphertext: webhookEndpoints.secretCiphertext,
          secretIv: webhookEndpoints.secretIv,
          secretKeyId: webhookEndpoints.secretKeyId,
        })
        .from(webhookDeliveries)
        .innerJoin(webhookEndpoints, eq(webhookEndpoints.id, webhookDeliveries.endpointId))
        .where(inArray(webhookDeliveries.id, ids));
      return rows.map(({ delivery, ...endpoint }) => ({ ...delivery, ...endpoint }));
    });
  }

  async #send(delivery: Claimed): Promise<void> {
    const { log } = this.#opts;
    const host = hostOf(delivery.url);
    const answer = await this.#request(delivery).catch(
      (error: unknown): Answer => ({ error: describe(error) }),
    );
    // Stopped mid-request: not a try the endpoint failed; the claim lapses and it is sent again.
    if (this.#abort.signal.aborted) return;
    const ok = answer.status !== undefined && answer.status >= 200 && answer.status < 300;
    const delay = this.#opts.retryDelaysMs[delivery.attempts - 1];
    const state = ok ? "delivered" : delay === undefined || answer.permanent ? "failed" : "pending";
    await this.#opts.db
      .update(webhookDeliveries)
      .set({
        state,
        lastStatus: answer.status ?? null,
        lastResponse: answer.body ?? null,
        lastError: ok ? null : (answer.error ?? `the endpoint answered ${answer.status}`),
        lastAttemptAt: sql`now()`,
        nextAttemptAt: state === "pending" ? sql`now() + ${`${delay} milliseconds`}::interval` : undefined,
      })
      .where(eq(webhookDeliveries.id, delivery.id));
    this.#opts.onSent?.(ok ? "delivered" : state === "pending" ? "retry" : "failed");
    // The URL's host only: its path and query may carry the receiver's own token.
    log.info(
      {
        delivery: delivery.id,
        event: delivery.event,
        jobId: delivery.jobId,
        host,
        status: answer.status,
        attempt: delivery.attempts,
        state,
      },
      ok ? "webhook delivered" : "webhook not delivered",
    );
  }

  async #request(delivery: Claimed): Promise<Answer> {
    let secret: string;
    try {
      const plain = await decryptBytes(
        this.#opts.keyRing,
        { ciphertext: delivery.secretCiphertext, iv: delivery.secretIv, keyId: delivery.secretKeyId },
        webhookSecretScope(delivery.endpointId),
      );
      secret = new TextDecoder().decode(plain);
    } catch (error) {
      if (error instanceof CredentialsError)
        return { error: `the endpoint's secret could not be read: ${error.message}`, permanent: true };
      throw error;
    }
    const body = JSON.stringify(delivery.payload satisfies WebhookPayload);
    const id = `msg_${delivery.id}`;
    const at = new Date();
    const signature = new Webhook(secret).sign(id, at, body);
    const refusals = new Refusals();
    try {
      const response = await asJob(refusals, () =>
        fetch(delivery.url, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "user-agent": "TorreClou-Webhooks/1",
            "webhook-id": id,
            "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
            "webhook-signature": signature,
          },
          body,
          // A redirect is an answer, not an instruction: following it could lead anywhere.
          redirect: "manual",
          signal: AbortSignal.any([this.#abort.signal, AbortSignal.timeout(this.#opts.timeoutMs)]),
        }),
      );
      return { status: response.status, body: await startOf(response) };
    } catch (error) {
      const refused = egressRefusalIn(error);
      if (refused)
        return {
          error: `refused by the egress policy: ${refused.host}:${refused.port} is ${refused.reason}`,
        };
      throw error;
    }
  }
}

interface Answer {
  status?: number;
  body?: string;
  error?: string;
  /** Trying again cannot help. */
  permanent?: boolean;
}

/** The first characters of an answer, without reading the rest of it. */
async function startOf(response: Response): Promise<string> {
  if (!response.body) return "";
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  try {
    while (text.length < RESPONSE_CHARS) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return text.slice(0, RESPONSE_CHARS);
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return "?";
  }
}

function describe(error: unknown): string {
  if (error instanceof Error && error.name === "TimeoutError") return "the endpoint did not answer in time";
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause.message : undefined;
  return `no answer: ${cause ?? (error instanceof Error ? error.message : String(error))}`;
}
