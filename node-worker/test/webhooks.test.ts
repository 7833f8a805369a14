// Webhooks against the real stack: a job's end reaches the user's endpoint
// signed the Standard Webhooks way (checked with that project's own verifier),
// an endpoint that fails is tried again with the same id, a private address is
// never connected to, and an endpoint that never answers holds up no job.
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import {
  encryptBytes,
  newWebhookSecret,
  parseKeyring,
  type WebhookEvent,
  webhookSecretScope,
} from "@torreclou/contracts";
import { webhookDeliveries, webhookEndpoints } from "@torreclou/db";
import { eq } from "drizzle-orm";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Worker } from "../src/worker.ts";
import {
  cancelJob,
  createProfile,
  type Env,
  makeFixture,
  seedFixtures,
  setupEnv,
  startWorker,
  submitJob,
  waitFor,
  waitForState,
} from "./helpers.ts";

interface Received {
  headers: IncomingMessage["headers"];
  body: string;
}

/** An endpoint on loopback that answers each delivery with the next status in `statuses` (then the last). */
async function endpoint(
  statuses: number[],
): Promise<{ url: string; port: number; received: Received[]; close(): Promise<void> }> {
  const received: Received[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
      const status = statuses[Math.min(received.length, statuses.length) - 1]!;
      res.writeHead(status, { "content-type": "text/plain" }).end(status < 300 ? "thanks" : `no: ${status}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    port,
    received,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

let env: Env;
let profileId: string;
let worker: Worker;
const closers: (() => Promise<void>)[] = [];
const good = await endpoint([200]);
const flaky = await endpoint([500, 503, 200]);
const unlisted = await endpoint([200]);
// Accepts connections and never answers.
const sockets: Socket[] = [];
const silent = createServer();
silent.on("connection", (socket) => sockets.push(socket));
await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
const silentPort = (silent.address() as AddressInfo).port;

beforeAll(async () => {
  env = await setupEnv(16);
  profileId = await createProfile(env);
  ({ worker } = await startWorker(env, {
    // The loopback endpoints the operator allows; `unlisted` is not one of them.
    EGRESS_ALLOW: [good.port, flaky.port, silentPort].map((port) => `127.0.0.1:${port}`).join(","),
    WEBHOOK_RETRY_DELAYS_MS: "0,0,0",
    WEBHOOK_TIMEOUT_MS: "600000",
  }));
  closers.push(good.close, flaky.close, unlisted.close);
});

afterAll(async () => {
  await worker?.shutdown(5000);
  for (const socket of sockets) socket.destroy();
  silent.close();
  for (const close of closers) await close();
  await env?.cleanup();
});

/** An endpoint row as the edge writes it: the secret sealed for this endpoint. */
async function register(url: string, events: WebhookEvent[]): Promise<{ id: string; secret: string }> {
  const id = crypto.randomUUID();
  const secret = newWebhookSecret();
  const sealed = await encryptBytes(
    parseKeyring(env.credentialsKeys),
    new TextEncoder().encode(secret),
    webhookSecretScope(id),
  );
  await env.db.insert(webhookEndpoints).values({
    id,
    userId: env.userId,
    url,
    events,
    secretCiphertext: sealed.ciphertext,
    secretIv: sealed.iv,
    secretKeyId: sealed.keyId,
  });
  return { id, secret };
}

const deliveriesOf = (endpointId: string) =>
  env.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.endpointId, endpointId));

describe("webhooks", () => {
  it("tells the endpoint a job completed, signed so the Standard Webhooks verifier accepts it", async () => {
    const hook = await register(good.url, ["job.completed"]);
    const made = await makeFixture(env, "hooked", [{ path: "hooked", size: 200_000 }]);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId });
    expect((await waitForState(env, job.id, ["completed", "failed"])).state).toBe("completed");
    const [delivered] = await waitFor("the delivery to be recorded", async () => {
      const rows = await deliveriesOf(hook.id);
      return rows[0]?.state === "delivered" ? rows : undefined;
    });
    expect(delivered).toMatchObject({
      attempts: 1,
      lastStatus: 200,
      lastResponse: "thanks",
      lastError: null,
    });
    expect(good.received).toHaveLength(1);
    const [request] = good.received;
    const headers = Object.fromEntries(Object.entries(request!.headers).map(([k, v]) => [k, String(v)]));
    const payload = new Webhook(hook.secret).verify(request!.body, headers) as Record<string, unknown>;
    expect(payload).toMatchObject({
      type: "job.completed",
      data: { jobId: job.id, state: "completed", infoHash: made.infoHash, bytes: { total: 200_000 } },
    });
    expect(headers["webhook-id"]).toBe(`msg_${delivered!.id}`);
    // Someone else's secret does not verify it.
    expect(() => new Webhook(newWebhookSecret()).verify(request!.body, headers)).toThrow();
  });

  it("tries a failing endpoint again with the same id until it answers 2xx", async () => {
    const hook = await register(flaky.url, ["job.cancelled"]);
    const made = await makeFixture(env, "hook-cancel", [{ path: "hook-cancel", size: 50_000 }]);
    const job = await submitJob(env, { made, profileId, enqueue: false });
    await cancelJob(env, job.id);
    const [row] = await waitFor("the delivery to get through", async () => {
      const rows = await deliveriesOf(hook.id);
      return rows[0]?.state === "delivered" ? rows : undefined;
    });
    expect(row).toMatchObject({ attempts: 3, lastStatus: 200 });
    expect(flaky.received.map((r) => r.headers["webhook-id"])).toEqual(Array(3).fill(`msg_${row!.id}`));
    expect(JSON.parse(flaky.received[0]!.body)).toMatchObject({
      type: "job.cancelled",
      data: { jobId: job.id },
    });
  });

  it("never connects to an address the egress policy refuses, and says so", async () => {
    const hook = await register(unlisted.url, ["job.cancelled"]);
    const made = await makeFixture(env, "hook-private", [{ path: "hook-private", size: 50_000 }]);
    const job = await submitJob(env, { made, profileId, enqueue: false });
    await cancelJob(env, job.id);
    const [row] = await waitFor("the delivery to be given up", async () => {
      const rows = await deliveriesOf(hook.id);
      return rows[0]?.state === "failed" ? rows : undefined;
    });
    // The first try and the three retries of the schedule, every one refused before connecting.
    expect(row).toMatchObject({ attempts: 4, lastStatus: null });
    expect(row!.lastError).toMatch(/refused by the egress policy: 127\.0\.0\.1:\d+ is a loopback address/);
    expect(unlisted.received).toEqual([]);
  });

  it("lets a job finish while its endpoint never answers", async () => {
    const hook = await register(`http://127.0.0.1:${silentPort}/hook`, ["job.completed"]);
    const made = await makeFixture(env, "hook-silent", [{ path: "hook-silent", size: 100_000 }]);
    await seedFixtures(env, [made]);
    const first = await submitJob(env, { made, profileId });
    expect((await waitForState(env, first.id, ["completed", "failed"])).state).toBe("completed");
    await waitFor("the endpoint to be connected to", async () => sockets.length > 0 || undefined);
    // A second job runs and ends while the first delivery still waits for its answer.
    const second = await submitJob(env, { made, profileId });
    expect((await waitForState(env, second.id, ["completed", "failed"])).state).toBe("completed");
    const rows = await deliveriesOf(hook.id);
    expect(rows.find((r) => r.jobId === first.id)).toMatchObject({
      state: "pending",
      attempts: 1,
      lastAttemptAt: null,
    });
  });
});
