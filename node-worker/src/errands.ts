// What a worker does besides jobs, on one blocking Redis read: swarm-health
// scrapes the edge asks for, and webhook deliveries (new ones, and retries
// when they fall due). An idle worker thus adds one command every five
// minutes (WORKER_ERRAND_BLOCK_MS), plus one read of the shared retry time;
// Postgres is touched only when a delivery is due.
import { HealthRequest, healthKeys, webhookWakeKey } from "@torreclou/contracts";
import { Redis } from "ioredis";
import type { Logger } from "pino";
import type { HealthScraper } from "./health/index.ts";
import type { WebhookSender } from "./webhooks/index.ts";

/** How long the loop blocks at a time when nothing is due (default). */
const IDLE_BLOCK_MS = 5 * 60_000;

export class Errands {
  readonly #blocking: Redis;
  readonly #webhooks: WebhookSender;
  readonly #health: HealthScraper;
  readonly #log: Logger;
  readonly #idleBlockMs: number;
  #stopping = false;
  #loop: Promise<void> | undefined;

  constructor(opts: {
    redisUrl: string;
    webhooks: WebhookSender;
    health: HealthScraper;
    log: Logger;
    idleBlockMs?: number;
  }) {
    this.#idleBlockMs = opts.idleBlockMs ?? IDLE_BLOCK_MS;
    this.#blocking = new Redis(opts.redisUrl, { lazyConnect: true, maxRetriesPerRequest: null });
    this.#blocking.on("error", (error: Error) => {
      if (!this.#stopping) opts.log.debug({ reason: error.message }, "errand loop's Redis connection");
    });
    this.#webhooks = opts.webhooks;
    this.#health = opts.health;
    this.#log = opts.log;
  }

  async start(): Promise<void> {
    await this.#blocking.connect();
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#webhooks.stop();
    this.#blocking.disconnect();
    await this.#loop?.catch(() => undefined);
  }

  async #run(): Promise<void> {
    // Deliveries left by a worker that stopped (or whose wake was lost) go out now.
    let due = await this.#webhooks.pass().catch((error: unknown) => this.#failed(error));
    while (!this.#stopping) {
      try {
        const free = this.#health.free;
        let wait = due === undefined ? this.#idleBlockMs : Math.max(0, due - Date.now());
        // Health requests only while there is room for another scrape (looked at again each second).
        if (!free) wait = Math.min(wait, 1000);
        const lists = free ? [healthKeys.requests, webhookWakeKey] : [webhookWakeKey];
        // BLPOP's timeout is in seconds (fractions allowed); 0 would block forever.
        const popped = wait > 0 ? await this.#blocking.blpop(...lists, Math.max(0.01, wait / 1000)) : null;
        if (this.#stopping) break;
        if (popped?.[0] === healthKeys.requests) {
          const request = HealthRequest.safeParse(parseJson(popped[1]));
          if (request.success) this.#health.take(request.data);
          else this.#log.warn("a swarm-health request that is not one was dropped");
          continue;
        }
        if (popped) {
          await this.#webhooks.woken();
        } else if (due === undefined || Date.now() < due) {
          // Idle wait over: another worker may have scheduled a retry.
          due = await this.#webhooks.sharedDue();
          if (due === undefined || Date.now() < due) continue;
        }
        due = await this.#webhooks.pass();
      } catch (error) {
        if (this.#stopping) break;
        due = this.#failed(error);
      }
    }
  }

  #failed(error: unknown): number {
    this.#log.warn(
      { reason: error instanceof Error ? error.message : String(error) },
      "webhook deliveries not sent; trying again",
    );
    return Date.now() + 5_000;
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
