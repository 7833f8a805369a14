// Live progress of one job: what the browser sees. Events go to the job's
// progress stream (bounded with MAXLEN ~) and the latest one to its snapshot
// key (Upstash bills per command): at most one per `queue.progressWatchedMs`
// while someone watches the job (the worker's lease renewal reports its
// `watched` key), at most one per `queue.progressIdleMs` otherwise, plus one
// immediately on every phase change or wait.
import {
  EtaEstimator,
  type FileProgress,
  isTerminal,
  type JobState,
  keys,
  ProgressEvent,
  progressField,
  progressPublishScript,
  progressRetentionSeconds,
  publishReplyOf,
  queue,
} from "@torreclou/contracts";
import type { Redis } from "ioredis";
import type { Logger } from "pino";

/** How often the publisher samples rates and looks whether an event is due (no Redis command). */
const TICK_MS = 500;

/** How long a finished job's snapshot and stream stay readable. */
const RETAIN_SECONDS = progressRetentionSeconds;

/** The one publish script (contracts/src/queue.ts), shared with the edge's browser transfers. */
const PUBLISH = progressPublishScript;

/**
 * The byte counts the browser last saw from an earlier attempt that lost the
 * job (taken over, not ended): a new attempt never shows less. The job row's
 * counters are saved every few seconds, so they can lag what was shown.
 * Undefined when there is no such snapshot, or it is unreadable.
 */
export async function shownBefore(
  redis: Redis,
  jobId: string,
  attempt: number,
): Promise<{ downloaded: number; uploaded: number } | undefined> {
  try {
    const raw = await redis.get(keys.snapshot(jobId));
    const parsed = raw ? ProgressEvent.safeParse(JSON.parse(raw)) : undefined;
    if (!parsed?.success) return undefined;
    const { attempt: shown, phase, bytes } = parsed.data;
    // A retried job (its last attempt ended) starts over from its files' states.
    if (shown >= attempt || isTerminal(phase)) return undefined;
    return { downloaded: bytes.downloaded, uploaded: bytes.uploaded };
  } catch {
    return undefined;
  }
}

export class ProgressPublisher {
  readonly #redis: Redis;
  readonly #jobId: string;
  readonly #attempt: number;
  readonly #log: Logger;
  readonly #now: () => number;
  /** Someone polls this job's progress: publish at the watched cadence. */
  #watched = false;
  #phase: JobState;
  #total = 0;
  #downloaded = 0;
  #uploaded = 0;
  #peers = 0;
  #waiting: ProgressEvent["waiting"];
  #resolving: ProgressEvent["resolving"];
  #seeding: ProgressEvent["seeding"];
  #files = new Map<number, FileProgress>();
  /** What the attempt this one replaced showed (the publish script says), never shown less. */
  #floor = { downloaded: 0, uploaded: 0 };
  #changed = new Set<number>();
  #dirty = true;
  /** Bytes sent to the storage on the wire, for the upload's rate (stored bytes move a part at a time). */
  #sent = 0;
  readonly #eta = new EtaEstimator();
  #estimate: { down: number; up: number; etaSeconds: number | null } = { down: 0, up: 0, etaSeconds: null };
  #timer: NodeJS.Timeout | undefined;
  #lastSent = 0;
  #sending: Promise<void> = Promise.resolve();

  constructor(
    redis: Redis,
    jobId: string,
    attempt: number,
    phase: JobState,
    log: Logger,
    /** The clock (tests give their own and call `tick`). */
    now: () => number = Date.now,
  ) {
    this.#redis = redis;
    this.#jobId = jobId;
    this.#attempt = attempt;
    this.#phase = phase;
    this.#log = log;
    this.#now = now;
  }

  start(): void {
    this.#timer ??= setInterval(() => this.tick(), TICK_MS);
    this.#timer.unref();
  }

  /** The least time between two timed events now. */
  get interval(): number {
    return this.#watched ? queue.progressWatchedMs : queue.progressIdleMs;
  }

  /**
   * Whether someone watches the job (from the lease renewal). A watcher who
   * just arrived gets the numbers at once rather than at the idle cadence.
   */
  setWatched(watched: boolean): void {
    if (watched === this.#watched) return;
    this.#watched = watched;
    if (watched && this.#dirty) void this.#publish();
  }

  setFile(file: FileProgress): void {
    const before = this.#files.get(file.index);
    if (
      before &&
      before.state === file.state &&
      before.downloaded === file.downloaded &&
      before.uploaded === file.uploaded &&
      before.size === file.size
    ) {
      return;
    }
    this.#files.set(file.index, { ...file });
    this.#changed.add(file.index);
    this.#dirty = true;
  }

  file(index: number): FileProgress | undefined {
    return this.#files.get(index);
  }

  setBytes(bytes: { total?: number; downloaded?: number; uploaded?: number }): void {
    if (bytes.total !== undefined && bytes.total !== this.#total) {
      this.#total = bytes.total;
      this.#dirty = true;
    }
    if (bytes.downloaded !== undefined && bytes.downloaded !== this.#downloaded) {
      this.#downloaded = bytes.downloaded;
      this.#dirty = true;
    }
    if (bytes.uploaded !== undefined && bytes.uploaded !== this.#uploaded) {
      this.#uploaded = bytes.uploaded;
      this.#dirty = true;
    }
  }

  /** What the job waits on (undefined: nothing), published at once. */
  setWaiting(waiting: ProgressEvent["waiting"]): void {
    this.#waiting = waiting;
    this.#dirty = true;
    void this.#publish();
  }

  /** What the search for a magnet's metadata has tried (undefined once it ends). */
  setResolving(resolving: ProgressEvent["resolving"]): void {
    if (JSON.stringify(resolving) === JSON.stringify(this.#resolving)) return;
    this.#resolving = resolving;
    this.#dirty = true;
  }

  /** What seeding back has done (after `completed`); published at the usual cadence. */
  setSeeding(seeding: ProgressEvent["seeding"]): void {
    if (JSON.stringify(seeding) === JSON.stringify(this.#seeding)) return;
    this.#seeding = seeding;
    this.#dirty = true;
  }

  /** Publishes what is pending now (seeding's end, which must not wait for the cadence). */
  flush(): Promise<void> {
    return this.#publish();
  }

  setPeers(peers: number): void {
    if (peers !== this.#peers) {
      this.#peers = peers;
      this.#dirty = true;
    }
  }

  get bytes(): { total: number; downloaded: number; uploaded: number } {
    return { total: this.#total, downloaded: this.#downloaded, uploaded: this.#uploaded };
  }

  /** Moves to a new phase and publishes at once (the final event of the old phase). */
  async phase(phase: JobState, message?: string): Promise<void> {
    this.#phase = phase;
    this.#dirty = true;
    await this.#publish(message);
  }

  /** Counts bytes sent to the storage (including retries), for the upload's rate. */
  addSent(bytes: number): void {
    this.#sent += bytes;
  }

  #updateRates(now: number): void {
    this.#estimate = this.#eta.sample({
      at: now,
      total: this.#total,
      downloaded: this.#downloaded,
      uploaded: this.#uploaded,
      sent: this.#sent,
    });
  }

  /** Samples the rates and publishes if an event is due (the timer calls it every TICK_MS). */
  tick(): void {
    const now = this.#now();
    this.#updateRates(now);
    if (!this.#dirty) return;
    if (now - this.#lastSent < this.interval - 5) return;
    void this.#publish();
  }

  event(message?: string): ProgressEvent {
    const event: ProgressEvent = {
      jobId: this.#jobId,
      attempt: this.#attempt,
      phase: this.#phase,
      at: this.#now(),
      bytes: {
        total: this.#total,
        downloaded: Math.max(this.#downloaded, this.#floor.downloaded),
        uploaded: Math.max(this.#uploaded, this.#floor.uploaded),
      },
      rates: { down: Math.round(this.#estimate.down), up: Math.round(this.#estimate.up) },
      etaSeconds: this.#uploaded >= this.#total && this.#total > 0 ? 0 : this.#estimate.etaSeconds,
      peers: this.#peers,
      files: [...this.#changed].sort((a, b) => a - b).flatMap((i) => this.#files.get(i) ?? []),
    };
    if (message !== undefined) event.message = message;
    if (this.#waiting) event.waiting = this.#waiting;
    if (this.#resolving && this.#phase === "resolving") event.resolving = this.#resolving;
    if (this.#seeding) event.seeding = this.#seeding;
    return event;
  }

  #publish(message?: string): Promise<void> {
    const event = this.event(message);
    this.#changed.clear();
    this.#dirty = false;
    this.#lastSent = this.#now();
    const json = JSON.stringify(event);
    this.#sending = this.#sending.then(async () => {
      try {
        const reply = publishReplyOf(await this.#send(json));
        if (reply.raiseTo) {
          // The attempt this one replaced showed more: never show less than it did.
          this.#floor = reply.raiseTo;
          event.bytes.downloaded = Math.max(event.bytes.downloaded, reply.raiseTo.downloaded);
          event.bytes.uploaded = Math.max(event.bytes.uploaded, reply.raiseTo.uploaded);
          await this.#send(JSON.stringify(event));
        }
      } catch (error) {
        // Progress is best effort: a Redis hiccup must not fail the job.
        this.#log.warn({ err: error }, "could not publish progress");
      }
    });
    return this.#sending;
  }

  #send(json: string): Promise<unknown> {
    return this.#redis.eval(
      PUBLISH,
      2,
      keys.progress(this.#jobId),
      keys.snapshot(this.#jobId),
      this.#attempt,
      json,
      queue.progressMaxLen,
      RETAIN_SECONDS,
      progressField,
    );
  }

  /** Stops the timer after publishing what is pending. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#sending;
  }
}
