// Webhooks: what a user's endpoint is told when one of their jobs ends (or
// waits for them), in the Standard Webhooks scheme (standardwebhooks.com):
// `webhook-id`, `webhook-timestamp` and `webhook-signature` headers, the body
// `{ type, timestamp, data }`. The edge records endpoints, the database writes
// one delivery per endpoint in the transaction that moves the job, and the
// worker fleet sends them (under the egress policy, after DNS).
import { z } from "zod";
import type { JobState } from "./jobs.ts";

export const webhookEvents = [
  "job.completed",
  "job.failed",
  "job.cancelled",
  "job.awaiting_selection",
] as const;
export const WebhookEvent = z.enum(webhookEvents);
export type WebhookEvent = z.infer<typeof WebhookEvent>;

/** The event a move into `state` announces, if any. */
export function webhookEventOf(state: JobState | "awaiting_selection"): WebhookEvent | undefined {
  const event = `job.${state}`;
  return (webhookEvents as readonly string[]).includes(event) ? (event as WebhookEvent) : undefined;
}

/** The body of every delivery: the job as it was when the event happened. */
export interface WebhookPayload {
  type: WebhookEvent;
  /** When the event happened (ISO 8601). */
  timestamp: string;
  data: {
    jobId: string;
    name: string | null;
    state: string;
    infoHash: string;
    failureReason: string | null;
    bytes: { total: number; downloaded: number; uploaded: number };
    attempt: number;
  };
}

/**
 * When a failed delivery is tried again, counted from the first try: the
 * Standard Webhooks schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h),
 * about 28 hours in all. After the last one it is given up.
 */
export const defaultWebhookRetryDelaysMs: readonly number[] = [
  5_000,
  5 * 60_000,
  30 * 60_000,
  2 * 3_600_000,
  5 * 3_600_000,
  10 * 3_600_000,
  10 * 3_600_000,
];

export const webhookDeliveryStates = ["pending", "delivered", "failed"] as const;
export type WebhookDeliveryState = (typeof webhookDeliveryStates)[number];

/** Redis list a producer pushes to (any value) so an idle worker sends new deliveries at once. */
export const webhookWakeKey = "torreclou:webhooks:wake";

/** A new endpoint's signing secret: `whsec_` and 24 random bytes in base64, as Standard Webhooks has it. */
export function newWebhookSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return `whsec_${btoa(binary)}`;
}

/** What an endpoint's sealed secret is bound to (AES-GCM additional data): it decrypts for that endpoint only. */
export function webhookSecretScope(endpointId: string): string {
  return `webhook:${endpointId}`;
}
