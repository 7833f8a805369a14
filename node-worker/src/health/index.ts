// Swarm health: a scrape of a torrent's trackers (HTTP: BEP 48, UDP: BEP 15)
// through bittorrent-tracker's client, asked for by the edge on a Redis list
// (contracts/src/health.ts). Every tracker is reached under the egress policy,
// as a job's would be, and has a few seconds to answer.
import {
  HEALTH_CACHE_SECONDS,
  type HealthRequest,
  healthKeys,
  type SwarmHealth,
  summarizeHealth,
  type TrackerHealth,
  trackerLabel,
} from "@torreclou/contracts";
import Client from "bittorrent-tracker/client";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { asJob, egressRefusalIn, Refusals } from "../egress/index.ts";

/** Scrapes running at once per worker; more requests wait on the list. */
const MAX_SCRAPES = 4;

export class HealthScraper {
  readonly #redis: Redis;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  #running = 0;

  constructor(opts: { redis: Redis; log: Logger; timeoutMs: number }) {
    this.#redis = opts.redis;
    this.#log = opts.log;
    this.#timeoutMs = opts.timeoutMs;
  }

  /** Whether another request can be taken now. */
  get free(): boolean {
    return this.#running < MAX_SCRAPES;
  }

  /** Scrapes in the background and stores the answer for the edge; never throws. */
  take(request: HealthRequest): void {
    this.#running++;
    void this.#answer(request).finally(() => this.#running--);
  }

  async #answer(request: HealthRequest): Promise<void> {
    try {
      const health = await scrapeTrackers(request, this.#timeoutMs);
      await this.#redis
        .multi()
        .set(healthKeys.result(request.id), JSON.stringify(health), "EX", HEALTH_CACHE_SECONDS)
        .del(healthKeys.pending(request.id))
        .exec();
      this.#log.info({ infoHash: request.infoHash, seeders: health.seeders }, "swarm health scraped");
    } catch (error) {
      this.#log.warn({ infoHash: request.infoHash, reason: String(error) }, "swarm health not stored");
    }
  }
}

/** Every tracker's counts for the info hash, at once, each within `timeoutMs`. */
export async function scrapeTrackers(request: HealthRequest, timeoutMs: number): Promise<SwarmHealth> {
  const trackers = await Promise.all(
    request.trackers.map((url) => scrapeOne(url, request.infoHash, timeoutMs)),
  );
  return summarizeHealth(trackers, new Date());
}

function scrapeOne(url: string, infoHash: string, timeoutMs: number): Promise<TrackerHealth> {
  const tracker = trackerLabel(url);
  const refusals = new Refusals();
  return new Promise<TrackerHealth>((resolve) => {
    let client: ReturnType<typeof Client.scrape> | undefined;
    const timer = setTimeout(() => {
      client?.destroy();
      const refused = refusals.summary();
      resolve({ tracker, error: refused || `no answer within ${Math.round(timeoutMs / 1000)} s` });
    }, timeoutMs);
    const done = (result: TrackerHealth) => {
      clearTimeout(timer);
      resolve(result);
    };
    try {
      asJob(refusals, () => {
        client = Client.scrape({ infoHash, announce: url }, (error, data) => {
          if (error || !data) {
            const refused = egressRefusalIn(error);
            done({
              tracker,
              error: refused
                ? `refused by the egress policy: ${refused.host}:${refused.port} is ${refused.reason}`
                : refusals.summary() || (error?.message ?? "no counts in the answer"),
            });
            return;
          }
          done({ tracker, seeders: data.complete, leechers: data.incomplete, completed: data.downloaded });
        });
      });
    } catch (error) {
      done({ tracker, error: error instanceof Error ? error.message : String(error) });
    }
  });
}
