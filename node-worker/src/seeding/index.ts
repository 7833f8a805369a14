// The torrents a worker seeds back after their jobs were stored: a set of
// its own, apart from the download slots (WORKER_CONCURRENCY), at most
// WORKER_SEED_MAX_TORRENTS. A job hands over at completion what seeding
// needs (SeedHandoff); the set picks the source — the scratch files if the
// job kept them, else the stored objects if the operator allows reading them
// back (WORKER_SEED_FROM_STORAGE) — or says in the job's progress why it
// does not seed. Stops come from the lease renewal (the user's stop, the job
// deleted) and from shutdown; nothing is resumed after a restart.
import {
  boundSeed,
  type SeedEnd,
  type SeedingProgress,
  type SeedSettings,
  seedEndText,
  seedStopFlag,
} from "@torreclou/contracts";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import { ProgressPublisher } from "../progress.ts";
import { markSeeding, removeDir, type ScratchBudget } from "../scratch.ts";
import { discoveryOf } from "../torrent/download.ts";
import type { Layout } from "./pieces.ts";
import { SeedSession } from "./session.ts";
import {
  type ClosableReader,
  diskReader,
  type SeedSource,
  type StoredReads,
  storageReader,
} from "./sources.ts";

/** A job file as seeding sees it. */
export interface SeedFile {
  index: number;
  size: number;
  selected: boolean;
  /** Set once stored. */
  cloudId: string | null;
}

/** What a completed job hands to the seeding set. */
export interface SeedHandoff {
  jobId: string;
  attempt: number;
  settings: SeedSettings;
  torrentFile: Uint8Array;
  layout: Layout;
  files: SeedFile[];
  bytes: { total: number; downloaded: number; uploaded: number };
  /** The scratch folder, when it still holds every stored file, and the scratch budget held for it. */
  local: { dir: string; heldBytes: number } | undefined;
  /** Opens the job's destination for ranged reads; undefined where it cannot read back. */
  openStorage(): Promise<StoredReads | undefined>;
  log: Logger;
}

/** What a lease renewal reports of a seeding job: the flag the edge set (1 user, 2 deleted) and whether it is watched. */
export interface SeedRenewal {
  jobId: string;
  stop: number;
  watched: boolean;
}

export interface SeedingDeps {
  config: Config;
  /** This worker's queue consumer name: its liveness key tells other workers it still seeds. */
  consumer: string;
  redis: Redis;
  budget: ScratchBudget;
  log: Logger;
}

export class SeedingSet {
  readonly #deps: SeedingDeps;
  readonly #sessions = new Map<string, SeedSession>();
  /** Slots promised to jobs still starting (their source opening). */
  #starting = 0;
  #stopping = false;

  constructor(deps: SeedingDeps) {
    this.#deps = deps;
  }

  get size(): number {
    return this.#sessions.size;
  }

  get jobIds(): string[] {
    return [...this.#sessions.keys()];
  }

  session(jobId: string): SeedSession | undefined {
    return this.#sessions.get(jobId);
  }

  /** Whether a job completing now could seed here (a job keeps its files on disk only then). */
  get hasRoom(): boolean {
    const max = this.#deps.config.WORKER_SEED_MAX_TORRENTS;
    return !this.#stopping && this.#sessions.size + this.#starting < max;
  }

  /** A job's own settings bounded by this worker's caps; null: it does not seed here. */
  settingsFor(job: { seedRatio: number | null; seedMinutes: number | null }): SeedSettings | null {
    if (job.seedRatio === null || job.seedMinutes === null) return null;
    const c = this.#deps.config;
    return boundSeed(
      { ratio: job.seedRatio, minutes: job.seedMinutes },
      {
        maxRatio: c.WORKER_SEED_MAX_RATIO,
        maxMinutes: c.WORKER_SEED_MAX_MINUTES,
        defaultRatio: 0,
        defaultMinutes: 0,
      },
    );
  }

  /** Starts seeding a completed job, or says in its progress why it does not. Never throws. */
  async offer(handoff: SeedHandoff): Promise<void> {
    if (!this.hasRoom) {
      await this.#refuse(handoff, this.#stopping ? "shutdown" : "no_slot");
      return this.#release(handoff);
    }
    this.#starting++;
    let started = false;
    try {
      const opened = await this.#source(handoff);
      if (!opened) return await this.#refuse(handoff, "no_source");
      this.#begin(handoff, opened.source, opened.reader);
      started = true;
    } catch (error) {
      handoff.log.warn({ err: error }, "seeding could not start");
      await this.#refuse(handoff, "failed");
    } finally {
      this.#starting--;
      if (!started) await this.#release(handoff);
    }
  }

  async #source(h: SeedHandoff): Promise<{ source: SeedSource; reader: ClosableReader } | undefined> {
    const listed = new Set(h.files.map((f) => f.index));
    const isPadding = (file: number) => !listed.has(file);
    if (h.local) {
      await markSeeding(h.local.dir, this.#deps.consumer);
      return { source: "disk", reader: diskReader(h.local.dir, isPadding) };
    }
    if (!this.#deps.config.WORKER_SEED_FROM_STORAGE) return undefined;
    const reads = await h.openStorage();
    if (!reads) return undefined;
    const ids = new Map(
      h.files.flatMap((f) => (f.selected && f.cloudId ? [[f.index, f.cloudId] as const] : [])),
    );
    return { source: "storage", reader: storageReader(reads, ids, isPadding) };
  }

  #begin(h: SeedHandoff, source: SeedSource, reader: ClosableReader): void {
    const c = this.#deps.config;
    const stored = new Set(h.files.filter((f) => f.selected && f.cloudId).map((f) => f.index));
    const listed = new Set(h.files.map((f) => f.index));
    const session = new SeedSession({
      jobId: h.jobId,
      attempt: h.attempt,
      settings: h.settings,
      torrentFile: h.torrentFile,
      layout: h.layout,
      available: (file) => stored.has(file) || !listed.has(file),
      selectedBytes: h.files.filter((f) => f.selected).reduce((sum, f) => sum + f.size, 0),
      bytes: h.bytes,
      source,
      reader,
      discovery: discoveryOf(c),
      redis: this.#deps.redis,
      log: h.log,
      onEnded: () => {
        this.#sessions.delete(h.jobId);
        void this.#release(h);
      },
    });
    this.#sessions.set(h.jobId, session);
    session.start();
  }

  /** Gives back what the job kept for seeding: its scratch folder and budget. */
  async #release(h: SeedHandoff): Promise<void> {
    if (!h.local) return;
    const { dir, heldBytes } = h.local;
    h.local = undefined;
    await removeDir(dir).catch(() => {});
    this.#deps.budget.release(heldBytes);
  }

  /** The job asked to seed and does not: its progress says why. */
  async #refuse(h: SeedHandoff, reason: SeedEnd): Promise<void> {
    h.log.info({ reason }, "not seeding");
    const now = Date.now();
    const seeding: SeedingProgress = {
      source: null,
      uploaded: 0,
      ratio: 0,
      peers: 0,
      ratioLimit: h.settings.ratio,
      until: now,
      since: now,
      ended: { reason, message: seedEndText[reason], at: now },
    };
    const progress = new ProgressPublisher(this.#deps.redis, h.jobId, h.attempt, "completed", h.log);
    progress.setBytes(h.bytes);
    progress.setSeeding(seeding);
    await progress.flush();
    await progress.close();
  }

  /** From the lease renewal: stops seeding the user stopped (or whose job was deleted), and passes on who watches. */
  renewed(results: SeedRenewal[]): void {
    for (const r of results) {
      const session = this.#sessions.get(r.jobId);
      if (!session) continue;
      session.setWatched(r.watched);
      if (r.stop === seedStopFlag.deleted) void session.stop("deleted");
      else if (r.stop > 0) void session.stop("user");
    }
  }

  /** Shutdown: every seeding ends (and is not resumed), its last event saying so. */
  async stopAll(): Promise<void> {
    this.#stopping = true;
    await Promise.all([...this.#sessions.values()].map((s) => s.stop("shutdown")));
  }
}
