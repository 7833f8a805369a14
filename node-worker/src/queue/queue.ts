// The worker's side of the job queue: a consumer in the `workers` group of the
// jobs stream, per-job leases with a fencing-friendly owner check, and the
// reclaim of entries whose worker died.
import { JobMessage, keys, queue } from "@torreclou/contracts";
import { Redis } from "ioredis";
import type { Logger } from "pino";

export interface Entry {
  id: string;
  /** Undefined when the entry is not a valid job message. */
  message: JobMessage | undefined;
}

/**
 * Renews a lease if we still own it, keeps the job's stream entry fresh (so
 * XAUTOCLAIM leaves live jobs alone), and reports a cancel request: one
 * command every few seconds per running job.
 */
const RENEW = `
local owned = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  owned = 1
  if ARGV[5] ~= '' then
    redis.call('XCLAIM', KEYS[3], ARGV[3], ARGV[4], 0, ARGV[5], 'JUSTID')
  end
end
return {owned, redis.call('EXISTS', KEYS[2])}
`;

/** Deletes the lease only if we own it. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * Deletes a consumer from the group, but only if it holds no entries: the
 * entries of a deleted consumer could never be reclaimed.
 */
const RETIRE = `
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
`;

type StreamFields = [id: string, fields: string[] | null];

function parseEntry(raw: StreamFields, log: Logger): Entry {
  const [id, fields] = raw;
  if (!fields) return { id, message: undefined };
  const at = fields.indexOf("job");
  const value = at >= 0 && at % 2 === 0 ? fields[at + 1] : undefined;
  try {
    const parsed = JobMessage.safeParse(JSON.parse(value ?? ""));
    if (parsed.success) return { id, message: parsed.data };
  } catch {
    // fall through
  }
  log.warn({ entry: id }, "ignoring a malformed job message");
  return { id, message: undefined };
}

export class JobQueue {
  readonly consumer: string;
  readonly leaseMs: number;
  readonly commands: Redis;
  readonly #blocking: Redis;
  readonly #log: Logger;

  constructor(redisUrl: string, consumer: string, leaseMs: number, log: Logger) {
    this.consumer = consumer;
    this.leaseMs = leaseMs;
    this.#log = log;
    this.commands = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 3 });
    // Blocking reads on their own connection: an idle worker waits here at no cost.
    this.#blocking = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: null });
    for (const conn of [this.commands, this.#blocking]) {
      conn.on("error", (error: Error) => log.warn({ err: error }, "redis connection error"));
    }
  }

  async init(): Promise<void> {
    await Promise.all([this.commands.connect(), this.#blocking.connect()]);
    try {
      // From the stream's start: jobs enqueued before any worker ever ran must not be skipped.
      await this.commands.xgroup("CREATE", queue.stream, queue.group, "0", "MKSTREAM");
    } catch (error) {
      if (!String(error).includes("BUSYGROUP")) throw error;
    }
  }

  /** New entries for this consumer, waiting up to `blockMs`. */
  async read(count: number, blockMs: number): Promise<Entry[]> {
    const reply = (await this.#blocking.xreadgroup(
      "GROUP",
      queue.group,
      this.consumer,
      "COUNT",
      count,
      "BLOCK",
      blockMs,
      "STREAMS",
      queue.stream,
      ">",
    )) as [string, StreamFields[]][] | null;
    if (!reply) return [];
    return reply.flatMap(([, entries]) => entries.map((e) => parseEntry(e, this.#log)));
  }

  /** Takes over entries no consumer has touched for longer than a lease. */
  async reclaim(count: number): Promise<Entry[]> {
    const reply = (await this.commands.xautoclaim(
      queue.stream,
      queue.group,
      this.consumer,
      this.leaseMs,
      "0-0",
      "COUNT",
      count,
    )) as [string, (StreamFields | null)[], string[]?];
    return (reply[1] ?? []).filter((e): e is StreamFields => e !== null).map((e) => parseEntry(e, this.#log));
  }

  async acquireLease(jobId: string): Promise<boolean> {
    return (await this.commands.set(keys.lease(jobId), this.consumer, "PX", this.leaseMs, "NX")) === "OK";
  }

  async leaseHolder(jobId: string): Promise<string | null> {
    return this.commands.get(keys.lease(jobId));
  }

  async renew(jobId: string, entryId: string): Promise<{ owned: boolean; cancelled: boolean }> {
    const [owned, cancelled] = (await this.commands.eval(
      RENEW,
      3,
      keys.lease(jobId),
      keys.cancel(jobId),
      queue.stream,
      this.consumer,
      this.leaseMs,
      queue.group,
      this.consumer,
      entryId,
    )) as [number, number];
    return { owned: owned === 1, cancelled: cancelled === 1 };
  }

  async cancelRequested(jobId: string): Promise<boolean> {
    return (await this.commands.exists(keys.cancel(jobId))) === 1;
  }

  async releaseLease(jobId: string): Promise<void> {
    await this.commands.eval(RELEASE, 1, keys.lease(jobId), this.consumer);
  }

  /** Done with an entry: acknowledge it and drop it from the stream. */
  async ack(entryId: string): Promise<void> {
    await this.commands.multi().xack(queue.stream, queue.group, entryId).xdel(queue.stream, entryId).exec();
  }

  /** Puts a job back on the queue as a new entry and retires the old one. */
  async requeue(jobId: string, entryId: string): Promise<void> {
    await this.commands
      .multi()
      .xadd(queue.stream, "*", "job", JSON.stringify({ jobId } satisfies JobMessage))
      .xack(queue.stream, queue.group, entryId)
      .xdel(queue.stream, entryId)
      .exec();
  }

  /** Unacknowledged entries across the group, the age of the oldest, and entries not yet delivered. */
  async lag(): Promise<{ pending: number; oldestAgeSeconds: number; undelivered: number }> {
    const summary = (await this.commands.xpending(queue.stream, queue.group)) as [
      number,
      string | null,
      ...unknown[],
    ];
    const pending = Number(summary[0] ?? 0);
    const oldest = summary[1];
    const oldestAgeSeconds = oldest ? Math.max(0, (Date.now() - Number(oldest.split("-")[0])) / 1000) : 0;
    let undelivered = 0;
    try {
      const groups = (await this.commands.xinfo("GROUPS", queue.stream)) as unknown[][];
      for (const group of groups) {
        const at = group.indexOf("name");
        if (group[at + 1] !== queue.group) continue;
        const lagAt = group.indexOf("lag");
        if (lagAt >= 0) undelivered = Number(group[lagAt + 1] ?? 0) || 0;
      }
    } catch {
      // XINFO may be unavailable on some hosted Redis plans.
    }
    return { pending, oldestAgeSeconds, undelivered };
  }

  /**
   * Removes a consumer from the group if it holds no entries; true if removed.
   * Harmless for a live one: its next read adds it back.
   */
  async retire(consumer = this.consumer): Promise<boolean> {
    return (await this.commands.eval(RETIRE, 1, queue.stream, queue.group, consumer)) !== -1;
  }

  /**
   * Removes the consumers of workers that are gone: no entries held, idle
   * longer than `idleMs`. Every worker process joins under a new name, so
   * without this the group would list every worker that ever ran.
   */
  async pruneConsumers(idleMs: number): Promise<string[]> {
    const consumers = (await this.commands.xinfo("CONSUMERS", queue.stream, queue.group)) as unknown[][];
    const removed: string[] = [];
    for (const fields of consumers) {
      const field = (name: string) => fields[fields.indexOf(name) + 1];
      const name = String(field("name"));
      if (name === this.consumer || Number(field("pending")) !== 0 || Number(field("idle")) <= idleMs)
        continue;
      if (await this.retire(name)) removed.push(name);
    }
    return removed;
  }

  /** Breaks a blocking read in progress; the command connection stays for hand-backs. */
  stopReading(): void {
    this.#blocking.disconnect();
  }

  async close(): Promise<void> {
    this.#blocking.disconnect();
    await this.commands.quit().catch(() => this.commands.disconnect());
  }
}
