// The worker's side of the job queue: a consumer in the `workers` group of the
// jobs stream, per-job leases, and taking over the jobs of workers that died.
//
// Liveness. A worker that holds jobs keeps a short-lived key
// (`keys.alive(worker)`, PX = the lease length) and its jobs' leases alive
// with one script call every third of a lease, which also reports cancels.
// A worker holding nothing renews nothing. A crashed worker's key lapses
// within a lease; its stream entries are then taken over by absence: any
// worker checking the group finds entries pending for a consumer whose key is
// gone, and claims them.
//
// Cost. An idle worker makes one blocking read and one look at the group
// every WORKER_IDLE_CHECK_MS (2 min): one command a minute, plus the errand
// loop's (src/errands.ts) two every five minutes. While some worker holds
// jobs, the others look every few seconds, so a crash is noticed within
// seconds. A worker that takes a job adds a `watch` notice to the stream,
// which wakes one idle worker straight into watching.
import { JobMessage, keys, queue, type TraceContext } from "@torreclou/contracts";
import { Redis } from "ioredis";
import type { Logger } from "pino";

/** Queues a clean-up of a job that ended (see `JobMessage.cleanup`). */
export async function requestCleanup(redis: Redis, jobId: string): Promise<void> {
  await redis.xadd(queue.stream, "*", "job", JSON.stringify({ jobId, cleanup: true } satisfies JobMessage));
}

export type Entry =
  | { id: string; kind: "job"; message: JobMessage }
  /** A worker took a job somewhere: someone should watch for its crash. */
  | { id: string; kind: "watch" }
  | { id: string; kind: "invalid" };

/** What a look at the group found. */
export interface GroupCheck {
  /** Entries pending for other consumers (jobs running elsewhere). */
  othersPending: number;
  /** Entries of consumers that are gone, now claimed by this worker. */
  claimed: Entry[];
}

export interface Renewal {
  jobId: string;
  attempt: number;
}

export interface RenewalResult {
  jobId: string;
  /** False: the lease lapsed and someone else may hold it now. */
  owned: boolean;
  /** A cancel was requested for this attempt (or a later one). */
  cancelled: boolean;
  /** Someone polls the job's progress now (its `watched` key exists). */
  watched: boolean;
}

/**
 * KEYS: alive, then lease, cancel and watched key of each job. ARGV: worker,
 * ms, then each job's attempt. Keeps the worker alive and each lease it still
 * owns; reports per job [owned, cancelled, watched] (someone polls its
 * progress: publish often). Attempt 0 is a job seeding back (no lease; its
 * "cancel" key is the seeding's stop flag).
 */
const RENEW = `
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local out = {}
for i = 3, #ARGV do
  local lease = KEYS[3 * (i - 3) + 2]
  local cancel = KEYS[3 * (i - 3) + 3]
  local watched = KEYS[3 * (i - 3) + 4]
  local owned = 0
  if tonumber(ARGV[i]) > 0 and redis.call('GET', lease) == ARGV[1] then
    redis.call('PEXPIRE', lease, ARGV[2])
    owned = 1
  end
  local flag = tonumber(redis.call('GET', cancel) or '')
  local cancelled = 0
  if flag ~= nil and flag >= tonumber(ARGV[i]) then cancelled = 1 end
  table.insert(out, {owned, cancelled, redis.call('EXISTS', watched)})
end
return out
`;

/**
 * KEYS: lease, alive, reconcile counter. ARGV: worker, ms. Takes a free lease
 * and marks the worker alive; counts a job change for the reconcile.
 */
const ACQUIRE = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  redis.call('INCR', KEYS[3])
  return 1
end
return 0
`;

/** Deletes the lease only if we own it. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * Acknowledges and deletes an entry only while it is pending for us: an
 * entry another worker claimed is that worker's to settle. KEYS: stream,
 * reconcile counter (a settled job may free its user's turn: counted).
 */
const SETTLE = `
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 1 and p[1][2] == ARGV[2] then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  redis.call('XDEL', KEYS[1], ARGV[3])
  redis.call('INCR', KEYS[2])
  return 1
end
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
  const field = (name: string) => {
    const at = fields?.indexOf(name) ?? -1;
    return at >= 0 && at % 2 === 0 ? fields?.[at + 1] : undefined;
  };
  if (field("watch") !== undefined) return { id, kind: "watch" };
  try {
    const parsed = JobMessage.safeParse(JSON.parse(field("job") ?? ""));
    if (parsed.success) return { id, kind: "job", message: parsed.data };
  } catch {
    // fall through
  }
  log.warn({ entry: id }, "ignoring a malformed job message");
  return { id, kind: "invalid" };
}

/**
 * Pending entries at least this idle may be taken from a consumer whose
 * liveness key is gone: an entry just delivered to a worker that has yet to
 * take its first lease is not taken from under it.
 */
const CLAIM_GRACE_MS = 2_000;

export class JobQueue {
  /** The stream this queue reads and settles (queue.stream, or queue.metadataStream). */
  readonly stream: string;
  readonly consumer: string;
  readonly leaseMs: number;
  readonly commands: Redis;
  readonly #blocking: Redis;
  readonly #log: Logger;
  readonly #graceMs: number;

  constructor(
    redisUrl: string,
    consumer: string,
    leaseMs: number,
    log: Logger,
    graceMs = CLAIM_GRACE_MS,
    stream: string = queue.stream,
  ) {
    this.stream = stream;
    this.consumer = consumer;
    this.leaseMs = leaseMs;
    this.#log = log;
    this.#graceMs = graceMs;
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
      await this.commands.xgroup("CREATE", this.stream, queue.group, "0", "MKSTREAM");
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
      this.stream,
      ">",
    )) as [string, StreamFields[]][] | null;
    if (!reply) return [];
    return reply.flatMap(([, entries]) => entries.map((e) => parseEntry(e, this.#log)));
  }

  /**
   * One look at the group: how many entries other consumers hold, and the
   * entries of consumers that are gone (no liveness key), claimed for us, at
   * most `count`. One command when nothing runs anywhere.
   */
  async check(count: number): Promise<GroupCheck> {
    const summary = (await this.commands.xpending(this.stream, queue.group)) as [
      number,
      string | null,
      string | null,
      [string, string][] | null,
    ];
    const perConsumer = summary[3] ?? [];
    const othersPending = perConsumer
      .filter(([name]) => name !== this.consumer)
      .reduce((sum, [, n]) => sum + Number(n), 0);
    if (othersPending === 0 || count <= 0) return { othersPending, claimed: [] };
    const pending = (await this.commands.xpending(
      this.stream,
      queue.group,
      "IDLE",
      this.#graceMs,
      "-",
      "+",
      100,
    )) as [string, string, number, number][];
    const owners = [...new Set(pending.map(([, consumer]) => consumer).filter((c) => c !== this.consumer))];
    if (owners.length === 0) return { othersPending, claimed: [] };
    const alive = await this.commands.mget(...owners.map((c) => keys.alive(c)));
    const gone = new Set(owners.filter((_, i) => alive[i] === null));
    const ids = pending
      .filter(([, consumer]) => gone.has(consumer))
      .map(([id]) => id)
      .slice(0, count);
    if (ids.length === 0) return { othersPending, claimed: [] };
    const claimed = (await this.commands.xclaim(
      this.stream,
      queue.group,
      this.consumer,
      this.#graceMs,
      ...ids,
    )) as (StreamFields | null)[];
    return {
      othersPending,
      claimed: claimed.filter((e): e is StreamFields => e !== null).map((e) => parseEntry(e, this.#log)),
    };
  }

  /** Takes the job's lease if it is free (or lapsed), marking this worker alive. */
  async acquireLease(jobId: string): Promise<boolean> {
    const taken = await this.commands.eval(
      ACQUIRE,
      3,
      keys.lease(jobId),
      keys.alive(this.consumer),
      keys.reconcileChanges,
      this.consumer,
      this.leaseMs,
    );
    return taken === 1;
  }

  async leaseHolder(jobId: string): Promise<string | null> {
    return this.commands.get(keys.lease(jobId));
  }

  /** Keeps this worker alive and the leases of `jobs`; one command for all of them. */
  /**
   * Renews this worker's liveness and leases in one command. A job seeding
   * back is passed with attempt 0: no lease, and `cancelled` reports its
   * seeding's stop flag (the edge's `keys.seedStop`).
   */
  async renew(jobs: Renewal[]): Promise<RenewalResult[]> {
    const keyList = [
      keys.alive(this.consumer),
      ...jobs.flatMap((j) => [
        keys.lease(j.jobId),
        j.attempt === 0 ? keys.seedStop(j.jobId) : keys.cancel(j.jobId),
        keys.watched(j.jobId),
      ]),
    ];
    const reply = (await this.commands.eval(
      RENEW,
      keyList.length,
      ...keyList,
      this.consumer,
      this.leaseMs,
      ...jobs.map((j) => j.attempt),
    )) as [number, number, number][];
    return jobs.map((j, i) => ({
      jobId: j.jobId,
      owned: reply[i]?.[0] === 1,
      cancelled: reply[i]?.[1] === 1,
      watched: reply[i]?.[2] === 1,
    }));
  }

  /** Whether a cancel was requested for this attempt of the job (or a later one). */
  async cancelRequested(jobId: string, attempt: number): Promise<boolean> {
    const flag = Number(await this.commands.get(keys.cancel(jobId)));
    return Number.isFinite(flag) && flag >= attempt && flag > 0;
  }

  async releaseLease(jobId: string): Promise<void> {
    await this.commands.eval(RELEASE, 1, keys.lease(jobId), this.consumer);
  }

  /** Done with an entry: acknowledge it and drop it from the stream (only while it is ours). */
  async ack(entryId: string): Promise<boolean> {
    return (
      (await this.commands.eval(
        SETTLE,
        2,
        this.stream,
        keys.reconcileChanges,
        queue.group,
        this.consumer,
        entryId,
      )) === 1
    );
  }

  /**
   * Writes the queue message of a job just let in (admitNext), as the edge
   * does: the owner key, then the entry, in one MULTI. `trace` is the context
   * of the request that created the job (stored on its row), so its trace
   * goes on from there.
   */
  async enqueue(
    jobId: string,
    userId: string,
    trace: TraceContext = {},
    stream = this.stream,
  ): Promise<void> {
    await this.commands
      .multi()
      .set(keys.owner(jobId), userId)
      .xadd(stream, "*", "job", JSON.stringify({ jobId, ...trace } satisfies JobMessage))
      .incr(keys.reconcileChanges)
      .exec();
  }

  /** Tells the fleet a job is running here, so an idle worker starts watching for crashes. */
  async announce(): Promise<void> {
    await this.commands.xadd(this.stream, "*", "watch", this.consumer);
  }

  /**
   * Puts a job back on the queue as a new entry (with the old one's trace
   * context) and retires the old one. `to`: another stream, for a job whose
   * entry is in the wrong one (its metadata became known meanwhile).
   */
  async requeue(jobId: string, entryId: string, trace: TraceContext = {}, to = this.stream): Promise<void> {
    await this.commands
      .multi()
      .xadd(to, "*", "job", JSON.stringify({ jobId, ...trace } satisfies JobMessage))
      .xack(this.stream, queue.group, entryId)
      .xdel(this.stream, entryId)
      .incr(keys.reconcileChanges)
      .exec();
  }

  /** Unacknowledged entries across the group, the age of the oldest, and entries not yet delivered. */
  async lag(): Promise<{ pending: number; oldestAgeSeconds: number; undelivered: number }> {
    const summary = (await this.commands.xpending(this.stream, queue.group)) as [
      number,
      string | null,
      ...unknown[],
    ];
    const pending = Number(summary[0] ?? 0);
    const oldest = summary[1];
    const oldestAgeSeconds = oldest ? Math.max(0, (Date.now() - Number(oldest.split("-")[0])) / 1000) : 0;
    let undelivered = 0;
    try {
      const groups = (await this.commands.xinfo("GROUPS", this.stream)) as unknown[][];
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
    return (await this.commands.eval(RETIRE, 1, this.stream, queue.group, consumer)) !== -1;
  }

  /**
   * Removes the consumers of workers that are gone: no entries held, idle
   * longer than `idleMs`. Every worker process joins under a new name, so
   * without this the group would list every worker that ever ran.
   */
  async pruneConsumers(idleMs: number): Promise<string[]> {
    const consumers = (await this.commands.xinfo("CONSUMERS", this.stream, queue.group)) as unknown[][];
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
