// One torrent seeding back after its job was stored: a webtorrent client of
// its own offering only the pieces wholly inside stored files (pieces.ts),
// read from disk or from storage (sources.ts, store.ts), until the ratio
// (uploaded ÷ selected bytes) or the time limit, whichever comes first, or
// until it is stopped (the user, the job deleted, the worker shutting down).
// The job stays `completed`: seeding is reported in its progress stream only.
import { type SeedEnd, type SeedingProgress, type SeedSettings, seedEndText } from "@torreclou/contracts";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import WebTorrent, { type Torrent } from "webtorrent";
import { asJob, Refusals } from "../egress/index.ts";
import { ProgressPublisher } from "../progress.ts";
import type { DiscoveryOptions } from "../torrent/download.ts";
import { type Layout, offeredPieces } from "./pieces.ts";
import type { ClosableReader, SeedSource } from "./sources.ts";
import { SeedStore, type SeedStoreOptions } from "./store.ts";

/** Memory for whole pieces kept between peers' block requests. */
const CACHE_BYTES = 32 * 1024 * 1024;
/** How often the limits are checked and the numbers refreshed (no Redis command by itself). */
const TICK_MS = 1000;

export interface SessionOptions {
  jobId: string;
  attempt: number;
  settings: SeedSettings;
  torrentFile: Uint8Array;
  layout: Layout;
  /** Whether a torrent file's bytes are stored (selected and uploaded) or padding: what may be offered. */
  available(file: number): boolean;
  /** Bytes of the selected files: the ratio's denominator. */
  selectedBytes: number;
  /** The job's byte counts as its last event showed them, so the page keeps showing them. */
  bytes: { total: number; downloaded: number; uploaded: number };
  source: SeedSource;
  reader: ClosableReader;
  discovery: DiscoveryOptions;
  redis: Redis;
  log: Logger;
  now?: () => number;
  /** Called once it ended, after the last event is out. */
  onEnded(reason: SeedEnd): void;
}

export class SeedSession {
  readonly jobId: string;
  readonly #opts: SessionOptions;
  readonly #now: () => number;
  readonly #controller = new AbortController();
  readonly #progress: ProgressPublisher;
  readonly #since: number;
  readonly #until: number;
  #client: WebTorrent | undefined;
  #torrent: Torrent | undefined;
  #timer: NodeJS.Timeout | undefined;
  #ended: SeedEnd | undefined;
  #done: Promise<void> = Promise.resolve();

  constructor(opts: SessionOptions) {
    this.#opts = opts;
    this.jobId = opts.jobId;
    this.#now = opts.now ?? Date.now;
    this.#since = this.#now();
    this.#until = this.#since + opts.settings.minutes * 60_000;
    this.#progress = new ProgressPublisher(opts.redis, opts.jobId, opts.attempt, "completed", opts.log);
    this.#progress.setBytes(opts.bytes);
  }

  get uploaded(): number {
    return this.#torrent?.uploaded ?? 0;
  }

  get ratio(): number {
    return this.#opts.selectedBytes > 0 ? this.uploaded / this.#opts.selectedBytes : 0;
  }

  get peers(): number {
    return this.#torrent?.wires.filter((w) => w.type !== "webSeed").length ?? 0;
  }

  get ended(): SeedEnd | undefined {
    return this.#ended;
  }

  setWatched(watched: boolean): void {
    this.#progress.setWatched(watched);
  }

  /** Starts offering the torrent; every connection it makes passes the egress policy, as the job's did. */
  start(): void {
    const { layout, available, torrentFile, discovery, reader, log } = this.#opts;
    const offered = offeredPieces(layout, available);
    const refusals = new Refusals({ jobId: this.jobId, attempt: this.#opts.attempt });
    const seed: SeedStoreOptions = {
      layout,
      // Reads back from storage connect under the egress policy, as the job's uploads did.
      reader: { read: (...args) => asJob(refusals, () => reader.read(...args)) },
      signal: this.#controller.signal,
      cachePieces: Math.max(1, Math.floor(CACHE_BYTES / layout.pieceLength)),
    };
    asJob(refusals, () => {
      const client = new WebTorrent({ ...discovery });
      client.on("error", (error: Error) => this.#fail(error));
      this.#client = client;
      this.#torrent = client.add(torrentFile, {
        store: SeedStore,
        storeOpts: { seed },
        bitfield: offered.bitfield,
        // Nothing is fetched: the pieces not offered stay missing.
        deselect: true,
        storeCacheSlots: 0,
      });
      this.#torrent.on("error", (error: Error) => this.#fail(error));
      this.#torrent.on("warning", (error: Error) => log.debug({ err: error }, "seeding warning"));
    });
    log.info(
      { source: this.#opts.source, pieces: offered.count, ...this.#opts.settings },
      "seeding back until the ratio or the time limit",
    );
    this.#progress.setSeeding(this.#snapshot());
    this.#progress.start();
    void this.#progress.flush();
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
    this.#timer.unref();
  }

  #snapshot(): SeedingProgress {
    const s: SeedingProgress = {
      source: this.#opts.source,
      uploaded: this.uploaded,
      ratio: Math.round(this.ratio * 1000) / 1000,
      peers: this.peers,
      ratioLimit: this.#opts.settings.ratio,
      until: this.#until,
      since: this.#since,
    };
    if (this.#ended) s.ended = { reason: this.#ended, message: seedEndText[this.#ended], at: this.#now() };
    return s;
  }

  #tick(): void {
    if (this.#ended) return;
    if (this.ratio >= this.#opts.settings.ratio) void this.stop("ratio");
    else if (this.#now() >= this.#until) void this.stop("time");
    else {
      this.#progress.setSeeding(this.#snapshot());
      this.#progress.setPeers(this.peers);
    }
  }

  #fail(error: Error): void {
    this.#opts.log.warn({ err: error }, "seeding failed");
    void this.stop("failed");
  }

  /** Ends the seeding (once): the client goes, the last event says why, the source is closed. */
  stop(reason: SeedEnd): Promise<void> {
    if (this.#ended) return this.#done;
    this.#ended = reason;
    clearInterval(this.#timer);
    this.#controller.abort();
    this.#done = this.#finish(reason);
    return this.#done;
  }

  async #finish(reason: SeedEnd): Promise<void> {
    const { log, reader } = this.#opts;
    const last = this.#snapshot();
    await new Promise<void>((done) => {
      if (!this.#client) return done();
      this.#client.destroy(() => done());
    });
    log.info(
      { reason, uploaded: last.uploaded, ratio: last.ratio, reads: reader.stats.reads },
      "seeding ended",
    );
    await reader.close().catch(() => {});
    // A deleted job's progress keys are gone; writing them again would only leave litter.
    if (reason !== "deleted") {
      this.#progress.setPeers(0);
      this.#progress.setSeeding({ ...last, peers: 0 });
      await this.#progress.flush();
    }
    await this.#progress.close();
    this.#opts.onEnded(reason);
  }
}
