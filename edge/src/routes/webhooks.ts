// Webhook endpoints: a user registers URLs to be told when their jobs end
// (or wait for a file choice), sees every delivery with the endpoint's answer,
// and can send one again. Deliveries are written with the job's own state
// change (drizzle/jobs.ts) and sent by the worker fleet, whose egress guard
// checks the address actually connected to; here the URL is checked as far as
// it can be without DNS, so an obvious private target is refused at once.
import { createRoute, z } from "@hono/zod-openapi";
import {
  type EgressPolicy,
  encryptBytes,
  newWebhookSecret,
  WebhookEvent,
  webhookEvents,
  webhookSecretScope,
  webhookWakeKey,
} from "@torreclou/contracts";
import { webhookDeliveries, webhookEndpoints } from "@torreclou/db";
import { and, count, desc, eq } from "drizzle-orm";
import type { NeonDatabase } from "drizzle-orm/neon-serverless";
import { requireUser } from "../auth/index.ts";
import { ApiError } from "../errors/index.ts";
import { rateLimit } from "../limits/index.ts";
import { csrfRefused, errorResponses, registerAuthSchemes, signedIn } from "../security/openapi.ts";
import { router } from "./openapi.ts";

/** Endpoints a user may register. */
export const maxWebhookEndpoints = 10;
/** Deliveries listed per page. */
const deliveriesPerPage = 50;

const tags = ["Webhooks"];

const EndpointSchema = z
  .object({
    id: z.uuid(),
    url: z.string().openapi({ example: "https://hooks.example.com/torreclou" }),
    events: z.array(WebhookEvent),
    createdAt: z.iso.datetime(),
  })
  .openapi("WebhookEndpoint");

const NewEndpointSchema = EndpointSchema.extend({
  secret: z.string().openapi({
    example: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    description:
      "The signing secret (Standard Webhooks). Shown only in this response: verify each delivery's `webhook-signature` with it.",
  }),
}).openapi("NewWebhookEndpoint");

const DeliverySchema = z
  .object({
    id: z
      .uuid()
      .openapi({ description: "Also the `webhook-id` header (as `msg_<id>`); the same on every try." }),
    event: WebhookEvent,
    jobId: z.uuid().nullable(),
    state: z.enum(["pending", "delivered", "failed"]),
    attempts: z.number().int(),
    nextAttemptAt: z.iso
      .datetime()
      .nullable()
      .openapi({ description: "When it is tried next (pending only)." }),
    lastAttemptAt: z.iso.datetime().nullable(),
    lastStatus: z
      .number()
      .int()
      .nullable()
      .openapi({ description: "The endpoint's HTTP status on the last try." }),
    lastResponse: z
      .string()
      .nullable()
      .openapi({ description: "The start of the endpoint's answer (1 KiB)." }),
    lastError: z
      .string()
      .nullable()
      .openapi({ description: "Why the last try got no answer, if it did not." }),
    createdAt: z.iso.datetime(),
  })
  .openapi("WebhookDelivery");

const CreateEndpointBody = z
  .object({
    url: z.string().trim().max(2048, "must be at most 2048 characters").openapi({
      example: "https://hooks.example.com/torreclou",
    }),
    events: z
      .array(WebhookEvent)
      .min(1, "pick at least one event")
      .optional()
      .openapi({ description: `Defaults to all: ${webhookEvents.join(", ")}.` }),
  })
  .openapi("CreateWebhookEndpoint");

const EndpointParams = z.object({
  id: z.uuid("must be a webhook endpoint id (a UUID)").openapi({ param: { name: "id", in: "path" } }),
});
const DeliveryParams = EndpointParams.extend({
  deliveryId: z.uuid("must be a delivery id (a UUID)").openapi({ param: { name: "deliveryId", in: "path" } }),
});

const createEndpoint = createRoute({
  method: "post",
  path: "/",
  tags,
  summary: "Register a webhook endpoint",
  description:
    "The URL is sent a signed POST (Standard Webhooks) when one of your jobs is completed, fails, is cancelled or waits for a file choice. It must be a public https:// address; the secret is in this response only.",
  security: signedIn,
  middleware: [requireUser, rateLimit("webhooks-create", 20, "1 m")] as const,
  request: { body: { required: true, content: { "application/json": { schema: CreateEndpointBody } } } },
  responses: {
    201: {
      description: "The endpoint, with its secret.",
      content: { "application/json": { schema: NewEndpointSchema } },
    },
    ...errorResponses({
      400: "The body is not valid, or the URL is not a public https:// address.",
      401: "Not signed in.",
      403: csrfRefused,
      409: `The user already has ${maxWebhookEndpoints} endpoints.`,
      429: "More than 20 endpoints created in a minute.",
    }),
  },
});

const listEndpoints = createRoute({
  method: "get",
  path: "/",
  tags,
  summary: "List your webhook endpoints",
  security: signedIn,
  middleware: [requireUser] as const,
  responses: {
    200: {
      description: "The caller's endpoints, newest first (never their secrets).",
      content: { "application/json": { schema: z.object({ endpoints: z.array(EndpointSchema) }) } },
    },
    ...errorResponses({ 401: "Not signed in." }),
  },
});

const deleteEndpoint = createRoute({
  method: "delete",
  path: "/{id}",
  tags,
  summary: "Remove a webhook endpoint",
  description:
    "Nothing more is sent to it, including deliveries still pending; its delivery history goes with it.",
  security: signedIn,
  middleware: [requireUser] as const,
  request: { params: EndpointParams },
  responses: {
    204: { description: "Removed." },
    ...errorResponses({
      400: "The id is not a UUID.",
      401: "Not signed in.",
      403: csrfRefused,
      404: "No such endpoint of yours.",
    }),
  },
});

const listDeliveries = createRoute({
  method: "get",
  path: "/{id}/deliveries",
  tags,
  summary: "An endpoint's deliveries",
  description: `The latest ${deliveriesPerPage} deliveries to the endpoint, newest first, with its answer to the last try of each.`,
  security: signedIn,
  middleware: [requireUser] as const,
  request: { params: EndpointParams },
  responses: {
    200: {
      description: "Deliveries.",
      content: { "application/json": { schema: z.object({ deliveries: z.array(DeliverySchema) }) } },
    },
    ...errorResponses({
      400: "The id is not a UUID.",
      401: "Not signed in.",
      404: "No such endpoint of yours.",
    }),
  },
});

const resendDelivery = createRoute({
  method: "post",
  path: "/{id}/deliveries/{deliveryId}/resend",
  tags,
  summary: "Send a delivery again",
  description:
    "Queues the delivery to be sent again now, with the same `webhook-id` (so a receiver that already has it can tell), and a fresh schedule of retries.",
  security: signedIn,
  middleware: [requireUser, rateLimit("webhooks-resend", 30, "1 m")] as const,
  request: { params: DeliveryParams },
  responses: {
    202: {
      description: "Queued.",
      content: { "application/json": { schema: z.object({ delivery: DeliverySchema }) } },
    },
    ...errorResponses({
      400: "An id is not a UUID.",
      401: "Not signed in.",
      403: csrfRefused,
      404: "No such delivery to an endpoint of yours.",
      429: "More than 30 resends in a minute.",
    }),
  },
});

/**
 * The endpoint URL, or why it is refused: http(s), no credentials in it, and a
 * host that passes the egress policy as far as it can be judged without DNS.
 * Plain http only for a target the operator allows (EGRESS_ALLOW).
 */
export function checkWebhookUrl(raw: string, egress: EgressPolicy): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ApiError(400, "invalid_url", "url: must be a URL like https://hooks.example.com/torreclou.");
  }
  if (url.protocol !== "https:" && url.protocol !== "http:")
    throw new ApiError(400, "invalid_url", "url: must be an https:// URL.");
  if (url.username || url.password)
    throw new ApiError(400, "invalid_url", "url: must not contain a user name or password.");
  const port = url.port ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
  const verdict = egress.checkHost(url.hostname, port);
  if (!verdict.allowed)
    throw new ApiError(
      400,
      "egress_refused",
      `url: must be a public address: ${url.hostname} is ${verdict.reason}.`,
    );
  if (url.protocol === "http:" && !egress.allows(url.hostname, port))
    throw new ApiError(400, "invalid_url", "url: must use https://.");
  url.hash = "";
  return url.toString();
}

const endpointColumns = {
  id: webhookEndpoints.id,
  url: webhookEndpoints.url,
  events: webhookEndpoints.events,
  createdAt: webhookEndpoints.createdAt,
};

function presentEndpoint(row: { id: string; url: string; events: WebhookEvent[]; createdAt: Date }) {
  return { id: row.id, url: row.url, events: row.events, createdAt: row.createdAt.toISOString() };
}

function presentDelivery(row: typeof webhookDeliveries.$inferSelect) {
  return {
    id: row.id,
    event: row.event,
    jobId: row.jobId,
    state: row.state,
    attempts: row.attempts,
    nextAttemptAt: row.state === "pending" ? row.nextAttemptAt.toISOString() : null,
    lastAttemptAt: row.lastAttemptAt?.toISOString() ?? null,
    lastStatus: row.lastStatus,
    lastResponse: row.lastResponse,
    lastError: row.lastError,
    createdAt: row.createdAt.toISOString(),
  };
}

const api = router();
registerAuthSchemes(api);

export const webhooks = api
  .openapi(createEndpoint, async (c) => {
    const body = c.req.valid("json");
    const config = c.var.config;
    const url = checkWebhookUrl(body.url, config.EGRESS_ALLOW);
    const userId = c.var.user.id;
    const db = c.var.db();
    const [held] = await db
      .select({ n: count() })
      .from(webhookEndpoints)
      .where(eq(webhookEndpoints.userId, userId));
    if ((held?.n ?? 0) >= maxWebhookEndpoints) {
      throw new ApiError(
        409,
        "too_many_endpoints",
        `You already have ${maxWebhookEndpoints} webhook endpoints; remove one you no longer use first.`,
      );
    }
    const id = crypto.randomUUID();
    const secret = newWebhookSecret();
    const sealed = await encryptBytes(
      config.CREDENTIALS_KEYS,
      new TextEncoder().encode(secret),
      webhookSecretScope(id),
    );
    const [row] = await db
      .insert(webhookEndpoints)
      .values({
        id,
        userId,
        url,
        events: [...new Set(body.events ?? webhookEvents)],
        secretCiphertext: sealed.ciphertext,
        secretIv: sealed.iv,
        secretKeyId: sealed.keyId,
      })
      .returning(endpointColumns);
    return c.json({ ...presentEndpoint(row!), secret }, 201);
  })
  .openapi(listEndpoints, async (c) => {
    const rows = await c.var
      .db()
      .select(endpointColumns)
      .from(webhookEndpoints)
      .where(eq(webhookEndpoints.userId, c.var.user.id))
      .orderBy(desc(webhookEndpoints.createdAt), desc(webhookEndpoints.id));
    return c.json({ endpoints: rows.map(presentEndpoint) }, 200);
  })
  .openapi(deleteEndpoint, async (c) => {
    const { id } = c.req.valid("param");
    const [gone] = await c.var
      .db()
      .delete(webhookEndpoints)
      .where(and(eq(webhookEndpoints.id, id), eq(webhookEndpoints.userId, c.var.user.id)))
      .returning({ id: webhookEndpoints.id });
    if (!gone) throw notFound();
    return c.body(null, 204);
  })
  .openapi(listDeliveries, async (c) => {
    const { id } = c.req.valid("param");
    const db = c.var.db();
    await ownEndpoint(db, c.var.user.id, id);
    const rows = await db
      .select()
      .from(webhookDeliveries)
      .where(eq(webhookDeliveries.endpointId, id))
      .orderBy(desc(webhookDeliveries.createdAt), desc(webhookDeliveries.id))
      .limit(deliveriesPerPage);
    return c.json({ deliveries: rows.map(presentDelivery) }, 200);
  })
  .openapi(resendDelivery, async (c) => {
    const { id, deliveryId } = c.req.valid("param");
    const db = c.var.db();
    await ownEndpoint(db, c.var.user.id, id);
    const [row] = await db
      .update(webhookDeliveries)
      .set({ state: "pending", attempts: 0, nextAttemptAt: new Date() })
      .where(and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.endpointId, id)))
      .returning();
    if (!row)
      throw new ApiError(404, "delivery_not_found", "That endpoint of yours has no delivery with this id.");
    // An idle worker is blocked on this list: it sends the delivery at once.
    // Without Redis the delivery still goes out with the next one a worker sends.
    await c.var.redis.lpush(webhookWakeKey, "1").catch(() => undefined);
    return c.json({ delivery: presentDelivery(row) }, 202);
  });

function notFound(): ApiError {
  return new ApiError(404, "webhook_not_found", "You have no webhook endpoint with this id.");
}

async function ownEndpoint(db: NeonDatabase, userId: string, id: string): Promise<void> {
  const [row] = await db
    .select({ id: webhookEndpoints.id })
    .from(webhookEndpoints)
    .where(and(eq(webhookEndpoints.id, id), eq(webhookEndpoints.userId, userId)));
  if (!row) throw notFound();
}
