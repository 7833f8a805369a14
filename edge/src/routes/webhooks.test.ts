import { env } from "cloudflare:workers";
import { decryptBytes, parseKeyring, webhookSecretScope, webhookWakeKey } from "@torreclou/contracts";
import { webhookDeliveries, webhookEndpoints } from "@torreclou/db";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { redis, withDb } from "../../test/fixtures/db.ts";
import { send, submitJob, userWithStorage } from "../../test/fixtures/jobs.ts";
import { signIn } from "../../test/helpers.ts";
import { maxWebhookEndpoints } from "./webhooks.ts";

interface EndpointView {
  id: string;
  url: string;
  events: string[];
  createdAt: string;
  secret?: string;
}
interface DeliveryView {
  id: string;
  event: string;
  jobId: string | null;
  state: string;
  attempts: number;
  nextAttemptAt: string | null;
}
interface ErrorBody {
  error: { code: string; message: string };
}

const errorOf = async (response: Response) => ((await response.json()) as ErrorBody).error;

async function register(cookie: string, body: unknown): Promise<EndpointView> {
  const response = await send(cookie, "POST", "/api/webhooks", body);
  expect(response.status, await response.clone().text()).toBe(201);
  return (await response.json()) as EndpointView;
}

describe("webhook endpoints", () => {
  it("registers an endpoint with a secret shown once and stored sealed, and lists it without the secret", async () => {
    const user = await signIn();
    const created = await register(user.cookie, { url: "https://hooks.example.com/torreclou?token=abc" });
    expect(created.secret).toMatch(/^whsec_[A-Za-z0-9+/]{32}$/);
    expect(created.events).toEqual([
      "job.completed",
      "job.failed",
      "job.cancelled",
      "job.awaiting_selection",
    ]);
    const [row] = await withDb((db) =>
      db.select().from(webhookEndpoints).where(eq(webhookEndpoints.id, created.id)),
    );
    expect(JSON.stringify(row)).not.toContain(created.secret!.slice(6));
    const keyring = parseKeyring(env.CREDENTIALS_KEYS as string);
    const plain = await decryptBytes(
      keyring,
      { ciphertext: row!.secretCiphertext, iv: row!.secretIv, keyId: row!.secretKeyId },
      webhookSecretScope(created.id),
    );
    expect(new TextDecoder().decode(plain)).toBe(created.secret);

    const listed = await send(user.cookie, "GET", "/api/webhooks");
    const { endpoints } = (await listed.json()) as { endpoints: EndpointView[] };
    expect(endpoints).toEqual([
      { id: created.id, url: created.url, events: created.events, createdAt: created.createdAt },
    ]);
  });

  it("refuses private, loopback and metadata addresses, plain http and credentials in the URL, writing nothing", async () => {
    const user = await signIn();
    const cases: [string, RegExp][] = [
      ["http://127.0.0.1:8080/hook", /127\.0\.0\.1 is .*loopback/],
      ["https://10.1.2.3/hook", /private/],
      ["https://169.254.169.254/latest", /link-local|metadata/],
      ["https://[::1]/hook", /loopback/],
      ["http://hooks.example.com/hook", /must use https/],
      ["https://user:pw@hooks.example.com/hook", /user name or password/],
      ["ftp://hooks.example.com/hook", /https/],
      ["not a url", /must be a URL/],
    ];
    for (const [url, message] of cases) {
      const response = await send(user.cookie, "POST", "/api/webhooks", { url });
      expect(response.status, url).toBe(400);
      expect((await errorOf(response)).message, url).toMatch(message);
    }
    const bad = await send(user.cookie, "POST", "/api/webhooks", {
      url: "https://x.example.com",
      events: ["job.exploded"],
    });
    expect(bad.status).toBe(400);
    const rows = await withDb((db) =>
      db.select().from(webhookEndpoints).where(eq(webhookEndpoints.userId, user.userId)),
    );
    expect(rows).toEqual([]);
  });

  it(`holds at most ${maxWebhookEndpoints} endpoints per user`, async () => {
    const user = await signIn();
    for (let i = 0; i < maxWebhookEndpoints; i++)
      await register(user.cookie, { url: `https://hooks.example.com/${i}` });
    const over = await send(user.cookie, "POST", "/api/webhooks", {
      url: "https://hooks.example.com/one-more",
    });
    expect(over.status).toBe(409);
    expect((await errorOf(over)).code).toBe("too_many_endpoints");
  });

  it("queues a delivery with the cancel itself, wakes the senders, shows it to its owner only, and sends it again on request", async () => {
    const user = await userWithStorage();
    const stranger = await signIn();
    const endpoint = await register(user.cookie, {
      url: "https://hooks.example.com/done",
      events: ["job.cancelled"],
    });
    const other = await register(user.cookie, {
      url: "https://hooks.example.com/only-completed",
      events: ["job.completed"],
    });
    const job = await submitJob(user);
    await redis().del(webhookWakeKey);
    expect((await send(user.cookie, "POST", `/api/jobs/${job.id}/cancel`)).status).toBe(200);
    expect(await redis().llen(webhookWakeKey)).toBe(1);

    const listed = await send(user.cookie, "GET", `/api/webhooks/${endpoint.id}/deliveries`);
    const { deliveries } = (await listed.json()) as { deliveries: DeliveryView[] };
    expect(deliveries).toMatchObject([
      { event: "job.cancelled", jobId: job.id, state: "pending", attempts: 0 },
    ]);
    const [row] = await withDb((db) =>
      db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, deliveries[0]!.id)),
    );
    expect(row!.payload).toMatchObject({
      type: "job.cancelled",
      data: { jobId: job.id, state: "cancelled", infoHash: job.infoHash },
    });
    // The endpoint that did not ask for cancellations hears nothing.
    const none = await send(user.cookie, "GET", `/api/webhooks/${other.id}/deliveries`);
    expect(((await none.json()) as { deliveries: DeliveryView[] }).deliveries).toEqual([]);

    // Someone else's endpoint is not there for a stranger.
    expect((await send(stranger.cookie, "GET", `/api/webhooks/${endpoint.id}/deliveries`)).status).toBe(404);
    expect((await send(stranger.cookie, "DELETE", `/api/webhooks/${endpoint.id}`)).status).toBe(404);
    const theirs = await send(
      stranger.cookie,
      "POST",
      `/api/webhooks/${endpoint.id}/deliveries/${deliveries[0]!.id}/resend`,
    );
    expect(theirs.status).toBe(404);

    // Given up after its tries: a resend starts its schedule again.
    await withDb((db) =>
      db
        .update(webhookDeliveries)
        .set({ state: "failed", attempts: 8 })
        .where(eq(webhookDeliveries.id, deliveries[0]!.id)),
    );
    await redis().del(webhookWakeKey);
    const resent = await send(
      user.cookie,
      "POST",
      `/api/webhooks/${endpoint.id}/deliveries/${deliveries[0]!.id}/resend`,
    );
    expect(resent.status).toBe(202);
    expect(((await resent.json()) as { delivery: DeliveryView }).delivery).toMatchObject({
      state: "pending",
      attempts: 0,
    });
    expect(await redis().llen(webhookWakeKey)).toBe(1);

    expect((await send(user.cookie, "DELETE", `/api/webhooks/${endpoint.id}`)).status).toBe(204);
    const rows = await withDb((db) =>
      db.select().from(webhookDeliveries).where(eq(webhookDeliveries.endpointId, endpoint.id)),
    );
    expect(rows).toEqual([]);
  });
});
