// The worker's heartbeat record for the operator's view: one field of a Redis
// hash (contracts' `workersKey`) with its id, host, version and the jobs it
// runs. Written at start and then once a minute, idle or busy (one HSET: an
// idle worker's third command a minute), and removed on a clean stop. A
// crashed worker's record just ages: readers show it as not seen after three
// missed beats and remove it after a day.
import { hostname } from "node:os";
import {
  heartbeatMs,
  readWorkerBeat,
  type WorkerBeat,
  workerSeenWindowMs,
  workersKey,
} from "@torreclou/contracts";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import pkg from "../package.json" with { type: "json" };

/** The package's version (inlined into the image's bundle), for a worker given no WORKER_VERSION. */
export function packageVersion(): string {
  return pkg.version ?? "unknown";
}

export interface HeartbeatOptions {
  redis: Redis;
  workerId: string;
  version: string;
  concurrency: number;
  /** The jobs this worker runs now. */
  jobs: () => string[];
  log: Logger;
  everyMs?: number;
  now?: () => Date;
}

export class Heartbeat {
  readonly #opts: HeartbeatOptions;
  readonly #startedAt: string;
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: HeartbeatOptions) {
    this.#opts = opts;
    this.#startedAt = (opts.now?.() ?? new Date()).toISOString();
  }

  record(): WorkerBeat {
    const o = this.#opts;
    return {
      id: o.workerId,
      host: hostname(),
      version: o.version,
      pid: process.pid,
      jobs: o.jobs(),
      concurrency: o.concurrency,
      startedAt: this.#startedAt,
      seenAt: (o.now?.() ?? new Date()).toISOString(),
    };
  }

  /** Writes the record now (one HSET). Never throws: a missed beat is only a late one. */
  async beat(): Promise<void> {
    try {
      await this.#opts.redis.hset(workersKey, this.#opts.workerId, JSON.stringify(this.record()));
    } catch (error) {
      this.#opts.log.debug({ err: error }, "heartbeat not written");
    }
  }

  async start(): Promise<void> {
    await this.beat();
    this.#timer = setInterval(() => void this.beat(), this.#opts.everyMs ?? heartbeatMs);
    this.#timer.unref();
  }

  /** Stops beating and removes the record: a worker that left is not "not seen", it is gone. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#opts.redis.hdel(workersKey, this.#opts.workerId).catch(() => undefined);
  }
}

/** How many workers wrote their record within the seen window (one HGETALL). */
export async function workersSeen(redis: Redis, now = new Date()): Promise<number> {
  const hash = await redis.hgetall(workersKey);
  let seen = 0;
  for (const value of Object.values(hash)) {
    const beat = readWorkerBeat(value);
    if (beat && now.getTime() - Date.parse(beat.seenAt) <= workerSeenWindowMs) seen++;
  }
  return seen;
}
