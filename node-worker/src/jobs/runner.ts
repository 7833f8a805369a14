// One attempt at one job: resolve the metadata (magnet), download the chosen
// files, upload each as its bytes arrive, record state and progress, clean up.
// The attempt number is the fencing token: every database write checks it, and
// a StaleAttemptError stops the attempt without touching anything else.

import type { Span } from "@opentelemetry/api";
import {
  CredentialsError,
  checkSelectOnly,
  defaultFolder,
  type FileProgress,
  infoDictionaryOf,
  isTerminal,
  type JobState,
  jobFolder,
  type Keyring,
  keys,
  type MagnetInfo,
  parseMagnet,
  partSizeFor,
  resumedPartSize,
  spanAttributes,
  spanNames,
  TorrentError,
  type TransitionCause,
  torrentFromInfo,
} from "@torreclou/contracts";
import type { JobFile, StorageProfile } from "@torreclou/db";
import { type Db, StaleAttemptError, type TransitionedJob, transitionJob } from "@torreclou/db/jobs";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import { describeDatabaseError, isDatabaseInterruption } from "../db.ts";
import { checkNames, openSink } from "../destinations/index.ts";
import { asJob, egressRefusalIn, Refusals } from "../egress/index.ts";
import type { Metrics } from "../metrics.ts";
import { ProgressPublisher, shownBefore } from "../progress.ts";
import { requestCleanup } from "../queue/queue.ts";
import { prepareScratchDir, removeDir, type ScratchBudget, scratchDirFor } from "../scratch.ts";
import type { SeedHandoff, SeedingSet } from "../seeding/index.ts";
import type { StoredReads } from "../seeding/sources.ts";
import { PermanentJobError, ReconnectRequiredError, type Sink } from "../sinks/index.ts";
import { Outage } from "../sinks/outage.ts";

import { Download, discoveryOf, trackerHosts } from "../torrent/download.ts";
import type { HolePuncher } from "../torrent/holes.ts";
import { RangeGoneError, Window } from "../torrent/window.ts";
import { endSpan, failed, flushTraces, inSpan, startSpan } from "../tracing/index.ts";
import { uploadLanes } from "./lanes.ts";
import { maskSecrets, redactingLogger, secretsOfSource } from "./redact.ts";
import {
  clearUploadSession,
  currentJob,
  type Fenced,
  filesChosen,
  type JobContext,
  journalOf,
  loadJobContext,
  openSource,
  recordPart,
  saveResolvedMetadata,
  updateFile,
  updateJobCounters,
} from "./store.ts";

/** `interrupted`: the attempt lost its database session; the job goes back to the queue at once. */
/** `awaiting_selection`: the metadata is saved and the job waits, held by no worker, for its user's choice. */
export type Outcome =
  | "completed"
  | "awaiting_selection"
  | "failed"
  | "cancelled"
  | "handed_back"
  | "interrupted"
  | "stale"
  | "gone";
export type StopReason = "cancel" | "shutdown" | "stale";

export interface RunnerDeps {
  db: Db;
  redis: Redis;
  config: Config;
  log: Logger;
  budget: ScratchBudget;
  /** Frees part of a scratch file (torrent/window.ts); undefined when the disk cannot. */
  holes: HolePuncher | undefined;
  /** Jobs this worker runs now: a job reads ahead within its share of the budget. */
  running(): number;
  metrics: Metrics;
  keyRing: Keyring;
  /** Told of every move this attempt makes (the worker wakes webhook senders for those that queued deliveries). */
  announced(job: TransitionedJob | undefined): void;
  /** Where a completed job that asked to seed back goes (absent: no seeding, e.g. test tooling). */
  seeding?: SeedingSet | undefined;
}

class Stopped extends Error {
  readonly why: StopReason;
  constructor(why: StopReason) {
    super(`attempt stopped: ${why}`);
    this.why = why;
  }
}

/** Rejects when the signal aborts, so no await outlives a stop. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

/** "90 s", "5 min". */
function formatDuration(ms: number): string {
  return ms < 120_000 ? `${Math.round(ms / 1000)} s` : `${Math.round(ms / 60_000)} min`;
}

/**
 * The files a magnet's so= picks, checked against the torrent now that its
 * file list is known (padding files are not files); undefined: all of them.
 */
/** The torrent parser refused the metadata: no retry can change that, and its message says why. */
function refusedTorrent(error: unknown): never {
  if (error instanceof TorrentError) throw new PermanentJobError(error.message, { cause: error });
  throw error;
}

function messageOf(error: unknown): string {
  return describeDatabaseError(error) ?? (error instanceof Error ? error.message : String(error));
}

export class JobRun {
  readonly jobId: string;
  readonly attempt: number;
  readonly #deps: RunnerDeps;
  readonly #log: Logger;
  readonly #controller = new AbortController();
  readonly #fenced: Fenced;
  #stopReason: StopReason | undefined;
  #download: Download | undefined;
  #sink: Sink | undefined;
  /** Marks the job's destination "needs reconnect" (OAuth destinations only). */
  #needsReconnect: (() => Promise<void>) | undefined;
  #progress: ProgressPublisher | undefined;
  /** Someone polls the job's progress (last lease renewal). */
  #watched = false;
  #window: Window | undefined;
  #files: JobFile[] = [];
  #phase: JobState = "queued";
  #uploadedBytes = new Map<number, number>();
  /** The last state write of each file (by id), so the next waits for it. */
  #fileWrites = new Map<string, Promise<void>>();
  /** Every chosen file is on disk: peers are no longer needed. */
  #allDownloaded = false;
  /** Marks a file's download done (set by the transfer). */
  #fileDownloaded: (index: number) => void = () => {};
  /** Byte counts the job row held when this attempt began: progress never shows less. */
  #floor = { downloaded: 0, uploaded: 0 };
  /** The upload lanes of the transfer, settled once none runs. */
  #lanes: Promise<void> = Promise.resolve();
  /** The job's storage outage, shared by every request its sink makes. */
  readonly #outage: Outage;
  /** Connections the egress policy refused during this attempt. */
  readonly #refusals: Refusals;
  /** The job's magnet and tracker URLs, masked in every log line once the source is decrypted. */
  readonly #secrets: string[] = [];
  /** The attempt's `job.run` span (a no-op one while tracing is off). */
  #span: Span | undefined;

  constructor(deps: RunnerDeps, jobId: string, attempt: number) {
    this.#deps = deps;
    this.jobId = jobId;
    this.attempt = attempt;
    this.#log = redactingLogger(deps.log, { jobId, attempt }, this.#secrets);
    this.#refusals = new Refusals({ jobId, attempt });
    this.#fenced = { db: deps.db, jobId, attempt };
    this.#outage = new Outage(deps.config.WORKER_STORAGE_OUTAGE_MS, (state) => {
      if (state) this.#log.warn({ reason: state.reason }, "waiting for storage");
      else this.#log.info("storage answers again");
      this.#progress?.setWaiting(state ? { for: "storage", ...state } : undefined);
    });
  }

  get phase(): JobState {
    return this.#phase;
  }

  /** Asks the attempt to stop; `run` then settles with the matching outcome. */
  /** Whether someone watches the job's progress now: events go out often only then. */
  setWatched(watched: boolean): void {
    this.#watched = watched;
    this.#progress?.setWatched(watched);
  }

  stop(why: StopReason): void {
    if (this.#stopReason) return;
    this.#stopReason = why;
    this.#log.info({ why }, "stopping attempt");
    this.#controller.abort(new Stopped(why));
    void this.#download?.destroy();
  }

  get #signal(): AbortSignal {
    return this.#controller.signal;
  }

  async run(): Promise<Outcome> {
    const attributes = { [spanAttributes.jobId]: this.jobId, [spanAttributes.attempt]: this.attempt };
    try {
      return await inSpan(spanNames.run, attributes, async (span) => {
        this.#span = span;
        const outcome = await this.#attempt();
        span.setAttribute(spanAttributes.outcome, outcome);
        if (outcome === "failed") failed(span);
        return outcome;
      });
    } finally {
      // The attempt's trace is complete: sent now, not at the next batch.
      flushTraces();
    }
  }

  async #attempt(): Promise<Outcome> {
    const { metrics } = this.#deps;
    metrics.activeJobs.inc();
    try {
      // Every connection the attempt opens passes the egress policy.
      const outcome = await asJob(this.#refusals, () => this.#run());
      metrics.jobOutcomes.inc({ outcome });
      return outcome;
    } finally {
      metrics.activeJobs.dec();
      await this.#download?.destroy().catch(() => {});
      await this.#progress?.close();
      this.#sink?.close();
      this.#window?.close();
      metrics.scratchReservedBytes.set(this.#deps.budget.used);
    }
  }

  async #run(): Promise<Outcome> {
    const ctx = await loadJobContext(this.#deps.db, this.jobId);
    if (!ctx) return "gone";
    if (ctx.job.attempt !== this.attempt) return "stale";
    this.#phase = ctx.job.state;
    this.#files = ctx.files;
    this.#progress = new ProgressPublisher(
      this.#deps.redis,
      this.jobId,
      this.attempt,
      ctx.job.state,
      this.#log,
    );
    this.#progress.setWatched(this.#watched);
    const shown = await shownBefore(this.#deps.redis, this.jobId, this.attempt);
    this.#floor = {
      downloaded: Math.max(ctx.job.bytesDownloaded, shown?.downloaded ?? 0),
      uploaded: Math.max(ctx.job.bytesUploaded, shown?.uploaded ?? 0),
    };
    this.#progress.setBytes({ total: ctx.job.bytesTotal, ...this.#floor });
    try {
      return await this.#work(ctx);
    } catch (error) {
      return this.#settle(error);
    }
  }

  /** What an error means for the attempt, and the clean-up it calls for. */
  async #settle(error: unknown): Promise<Outcome> {
    const why = this.#stopReason ?? (error instanceof Stopped ? error.why : undefined);
    if (error instanceof StaleAttemptError || why === "stale") {
      this.#log.warn("a newer attempt owns this job; stopping without touching it");
      return "stale";
    }
    // Nothing of this attempt runs on while it settles (an attempt is aborted before it is settled).
    if (!this.#controller.signal.aborted) this.#controller.abort(error);
    await this.#lanes;
    try {
      if (why === "shutdown") {
        // The caller hands the job back to the queue; scratch data stays for a resume.
        return "handed_back";
      }
      if (why === undefined && error instanceof RangeGoneError) {
        // Bytes freed after storing are needed again (the provider lost the upload): start afresh.
        this.#log.warn({ reason: error.message }, "handing the job back to fetch freed bytes again");
        return "interrupted";
      }
      if (why === undefined && isDatabaseInterruption(error)) {
        // Not the job's fault: taken again at once (here or elsewhere), resuming its uploads.
        this.#log.warn({ reason: messageOf(error) }, "database session lost; handing the job back");
        return "interrupted";
      }
      if (why === "cancel") {
        if (!(await this.#cleanup())) await this.#cleanupLater();
        const moved = await this.#transition("cancelled", "user", "cancelled by the user").catch(() => false);
        // The flag also stops an attempt the job moved on from without being cancelled
        // (its submitter's browser found the metadata first): nothing to announce then.
        if (!moved && !(await this.#isCancelled())) return "stale";
        await this.#progress?.phase("cancelled", "Cancelled");
        return "cancelled";
      }
      if (error instanceof ReconnectRequiredError) await this.#needsReconnect?.();
      const refused = egressRefusalIn(error);
      const reason = refused
        ? `${refused.message} The operator can allow an exact host:port with EGRESS_ALLOW.`
        : error instanceof PermanentJobError
          ? error.reason
          : `The job stopped on an unexpected error: ${messageOf(error)}`;
      // The job's own tracker URLs stay out of the stored reason and the progress stream.
      const shown = maskSecrets(reason, this.#secrets);
      this.#log.warn({ err: error, reason }, "job failed");
      if (!(await this.#cleanup())) await this.#cleanupLater();
      const moved = await this.#transition("failed", "worker", shown);
      if (!moved) return (await this.#isCancelled()) ? "cancelled" : "stale";
      await this.#progress?.phase("failed", shown);
      return "failed";
    } catch (inner) {
      if (inner instanceof StaleAttemptError) return "stale";
      throw inner;
    }
  }

  async #isCancelled(): Promise<boolean> {
    return (await currentJob(this.#deps.db, this.jobId))?.state === "cancelled";
  }

  /**
   * Aborts unfinished uploads, forgets their sessions, deletes the scratch
   * folder. A session whose abort could not be sent (the provider is down) is
   * kept; false then, and the caller queues a clean-up to try again later.
   */
  async #cleanup(): Promise<boolean> {
    await this.#download?.destroy().catch(() => {});
    const fresh = await loadJobContext(this.#deps.db, this.jobId);
    let clean = true;
    for (const file of fresh?.files ?? this.#files) {
      if (!file.uploadSession) continue;
      if (!this.#sink || !(await this.#sink.abort({ path: file.path, uploadSession: file.uploadSession }))) {
        clean = false;
        continue;
      }
      await clearUploadSession(this.#fenced, file.id).catch((error: unknown) => {
        if (error instanceof StaleAttemptError) throw error;
      });
    }
    await removeDir(scratchDirFor(this.#deps.config.WORKER_SCRATCH_DIR, this.jobId));
    return clean;
  }

  /** Queues a clean-up of this job's leftovers for when its storage answers again. */
  async #cleanupLater(): Promise<void> {
    this.#log.warn("uploads could not be aborted now; a clean-up is queued");
    await requestCleanup(this.#deps.redis, this.jobId).catch((error: unknown) =>
      this.#log.warn({ err: error }, "could not queue the clean-up"),
    );
  }

  /**
   * For a job that ended (cancelled or failed, perhaps while no attempt ran):
   * aborts the uploads it left at its provider, recorded or not (a sweep by
   * key finds those an attempt died before recording), and deletes its
   * scratch folder. False when the provider could not be reached: the caller
   * tries again later. Run with the job's current attempt, so a retry that
   * starts meanwhile makes every write here stale instead of undoing it.
   */
  async cleanUp(): Promise<boolean> {
    return asJob(this.#refusals, async () => {
      const ctx = await loadJobContext(this.#deps.db, this.jobId);
      if (!ctx || !isTerminal(ctx.job.state) || ctx.job.attempt !== this.attempt) return true;
      this.#files = ctx.files;
      if (ctx.profile) {
        try {
          this.#sink = await this.#sinkFor(ctx.profile, ctx.job.targetFolder ?? ctx.job.id);
        } catch (error) {
          // Credentials gone or unreadable: nothing can be aborted with them, ever.
          this.#log.warn({ err: error }, "cannot open the job's storage to clean up");
        }
      }
      try {
        const clean = await this.#cleanup();
        const paths = ctx.files.filter((f) => f.selected).map((f) => f.path);
        const swept = (await this.#sink?.sweep?.(paths, ctx.job.finishedAt ?? new Date())) ?? true;
        return clean && swept;
      } catch (error) {
        if (error instanceof StaleAttemptError) return true;
        throw error;
      } finally {
        this.#sink?.close();
      }
    });
  }

  /** Fenced, table-checked state change; false if the job could not move (cancelled meanwhile, or stale). */
  async #transition(to: JobState, cause: TransitionCause, reason?: string): Promise<boolean> {
    const job = await transitionJob(this.#deps.db, {
      jobId: this.jobId,
      to,
      cause,
      reason,
      attempt: this.attempt,
      set: this.#progress
        ? { bytesDownloaded: this.#progress.bytes.downloaded, bytesUploaded: this.#progress.bytes.uploaded }
        : undefined,
    });
    this.#deps.announced(job);
    if (job) {
      this.#phase = to;
      return true;
    }
    return false;
  }

  /** A forward move the attempt needs; anything else means it was cancelled or replaced. */
  async #advance(to: JobState, reason?: string): Promise<void> {
    if (await this.#transition(to, "worker", reason)) {
      await this.#progress?.phase(to);
      return;
    }
    const now = await currentJob(this.#deps.db, this.jobId);
    if (!now || now.attempt !== this.attempt) throw new StaleAttemptError(this.jobId, this.attempt);
    if (now.state === "cancelled") throw new Stopped("cancel");
    throw new Error(`the job could not move from "${now.state}" to "${to}"`);
  }

  async #work(ctx: JobContext): Promise<"completed" | "awaiting_selection"> {
    const { config } = this.#deps;
    const progress = this.#progress!;
    const signal = this.#signal;

    // A job taken over from a stopped attempt starts again from the queue state.
    if (ctx.job.state !== "queued") {
      await this.#advance("queued", "taken over after the previous attempt stopped");
    }
    progress.start();

    // Where the files go.
    const profile = ctx.profile;
    if (!profile) {
      throw new PermanentJobError(
        "The storage profile for this job was deleted. Choose another destination and retry.",
      );
    }
    this.#span?.setAttributes({
      [spanAttributes.infoHash]: ctx.torrent.infoHash,
      [spanAttributes.destination]: profile.kind,
    });
    // A magnet's folder is named after its files, so it is settled once they are
    // known; until then the sink is opened on the destination's own folder.
    // (Jobs from before folders had defaults have none: they use their id.)
    const unsettled = ctx.job.targetFolder === null && ctx.files.length === 0;
    let sink = await this.#sinkFor(profile, unsettled ? "" : jobFolder(ctx.job));
    this.#sink = sink;
    await sink.preflight(signal);

    const dir = scratchDirFor(config.WORKER_SCRATCH_DIR, this.jobId);
    const source = await openSource(this.#deps.keyRing, ctx.job).catch((error: unknown) => {
      if (error instanceof CredentialsError) {
        throw new PermanentJobError(
          `The job's .torrent file or magnet link could not be read: ${error.message}.`,
        );
      }
      throw error;
    });
    this.#secrets.push(...(await secretsOfSource(source)));

    // A magnet: fetch the metadata from peers first. The parser that checks
    // uploaded .torrent files checks it too: its file list (padding left out)
    // becomes the job's, and a torrent it refuses fails the job for good. The
    // info dictionary is kept, so no attempt (here or on any worker) fetches
    // it again: the job continues from it with the magnet's own trackers.
    const magnet = typeof source === "string" ? parseMagnet(source) : undefined;
    let files = ctx.files;
    let from: string | Uint8Array = source;
    if (magnet && ctx.job.infoDictionary) {
      // Resolved before, but the choice was never made (an attempt that stopped
      // before it let go, or a retry of a wait that ran out): wait for it again.
      if (ctx.job.chooseFiles && !(await filesChosen(this.#deps.db, this.jobId))) {
        await this.#advance("resolving", "the metadata is known already");
        return this.#awaitSelection(dir);
      }
      from = torrentFromInfo(ctx.job.infoDictionary, { trackers: magnet.trackers });
    } else if (files.length === 0) {
      files = await this.#resolveMetadata(ctx, source, magnet, dir);
      if (ctx.job.chooseFiles && ctx.files.length === 0) return this.#awaitSelection(dir);
      const folder = unsettled ? defaultFolder(files) : undefined;
      // "" (a multi-file torrent's own top folder) is where the sink already is.
      if (folder !== undefined && folder !== "") {
        sink.close();
        sink = await this.#sinkFor(profile, folder);
        this.#sink = sink;
      }
    }

    // Two files the destination would store under one name (a magnet's files are known only now).
    checkNames(
      profile.kind,
      files.filter((f) => f.selected).map((f) => f.path),
    );
    const chosen = files.filter((f) => f.selected && f.state !== "skipped");
    const total = chosen.reduce((sum, f) => sum + f.size, 0);
    progress.setBytes({ total });
    const todo = chosen.filter((f) => !(f.state === "uploaded" && f.cloudId));
    // A job that will seed keeps its files on disk when they fit (no second read from storage then).
    const seed = this.#deps.seeding?.settingsFor(ctx.job) ?? null;
    const keep = seed !== null && (this.#deps.seeding?.hasRoom ?? false) && todo.length === chosen.length;
    this.#span?.setAttributes({ [spanAttributes.files]: chosen.length, [spanAttributes.bytes]: total });
    for (const f of chosen) {
      const done = f.state === "uploaded" && f.cloudId;
      this.#uploadedBytes.set(f.fileIndex, done ? f.size : 0);
      progress.setFile({
        index: f.fileIndex,
        state: done ? "uploaded" : f.state,
        size: f.size,
        downloaded: done ? f.size : 0,
        uploaded: done ? f.size : 0,
      });
    }

    await this.#advance("downloading");
    await prepareScratchDir(dir, config.STACK_ID);
    const download = this.#download ?? this.#startDownload(from, dir);
    // A .torrent's metadata (or a magnet's kept info dictionary) is parsed
    // locally (asynchronously); files exist only after it. A magnet job from
    // before info dictionaries were kept fetches it from peers.
    const metadata = download.metadata(signal).catch(refusedTorrent);
    const meta =
      typeof from === "string"
        ? await this.#withPeerWatch(metadata, "metadata")
        : await abortable(metadata, signal);
    if (meta.infoHash !== ctx.torrent.infoHash) {
      throw new PermanentJobError(
        `The job's saved metadata hashes to ${meta.infoHash}, not to its info hash ${ctx.torrent.infoHash}.`,
      );
    }
    // Disk for the pieces fetched next (everything, when it fits), before any byte is.
    const window = new Window({
      files: await Promise.all(
        todo.map(async (f) => ({
          index: f.fileIndex,
          size: f.size,
          offset: download.offsetOf(f.fileIndex),
          localPath: download.localPath(f.fileIndex),
          stored: await this.#storedRanges(f),
          part: sink.partSize?.(f.size),
        })),
      ),
      pieceLength: download.pieceLength,
      budget: this.#deps.budget,
      select: (index, start, end) => download.selectRange(index, start, end),
      holes: this.#deps.holes,
      useRing: (index, ring) => download.useRing(index, ring),
      // Split between this process's jobs, and between the processes sharing the scratch folder.
      share: () => this.#deps.budget.total / (this.#deps.budget.sharers * Math.max(1, this.#deps.running())),
      onWait: (wait) => {
        if (wait) this.#log.info({ reason: wait.reason }, "waiting for local disk");
        this.#progress?.setWaiting(
          wait ? { for: "disk", reason: wait.reason, since: Date.now() } : undefined,
        );
      },
      signal,
      log: this.#log,
      keep,
    });
    this.#window = window;
    await window.start();
    download.handoff.onSkipped = (index, start, end) => window.unwritten(index, start, end);

    const ticker = setInterval(() => this.#refresh(), 1000);
    const persister = setInterval(() => void this.#persistCounters(), 5000);
    try {
      await this.#transfer(todo, download, sink);
    } finally {
      clearInterval(ticker);
      clearInterval(persister);
    }
    this.#refresh();

    if (this.#phase === "downloading") await this.#advance("uploading");
    // Completed as soon as the last file is stored; the torrent client is torn down after.
    await this.#advance("completed");
    this.#log.info({ files: chosen.length, bytes: total, received: download.received }, "job completed");
    const handoff = seed
      ? this.#seedHandoff(seed, files, meta.torrentFile, download, window, dir, profile)
      : undefined;
    await download.destroy();
    if (!handoff?.local) await removeDir(dir);
    // Seeding is an after-life of the job, tracked apart: not awaited, it holds no download slot.
    if (handoff) void this.#deps.seeding?.offer(handoff);
    return "completed";
  }

  /** What seeding back needs of a completed job: its torrent, layout, stored files and where their bytes are. */
  #seedHandoff(
    settings: NonNullable<ReturnType<SeedingSet["settingsFor"]>>,
    files: JobFile[],
    torrentFile: Uint8Array,
    download: Download,
    window: Window,
    dir: string,
    profile: StorageProfile,
  ): SeedHandoff {
    const held = window.handOver();
    return {
      jobId: this.jobId,
      attempt: this.attempt,
      settings,
      torrentFile,
      layout: download.layout(),
      files: files.map((f) => ({
        index: f.fileIndex,
        size: f.size,
        selected: f.selected,
        cloudId: f.cloudId,
      })),
      bytes: this.#progress?.bytes ?? { total: 0, downloaded: 0, uploaded: 0 },
      local: held === undefined ? undefined : { dir, heldBytes: held },
      openStorage: () => this.#storedReads(profile),
      log: this.#log.child({ part: "seeding" }),
    };
  }

  /** The job's destination opened for ranged reads (seeding from storage), or undefined where it cannot read back. */
  async #storedReads(profile: StorageProfile): Promise<StoredReads | undefined> {
    const { config, keyRing, db } = this.#deps;
    // An outage of its own: seeding never holds the job's (ended) clock.
    const outage = new Outage(config.WORKER_STORAGE_OUTAGE_MS, () => {});
    const { sink } = await openSink(profile, { config, keyRing, db, log: this.#log, outage, folder: "" });
    const read = sink.read?.bind(sink);
    if (!read) {
      sink.close();
      return undefined;
    }
    return { read, close: () => sink.close() };
  }

  /** A magnet's metadata, fetched from peers and checked like an uploaded .torrent: the job's files from now on. */
  async #resolveMetadata(
    ctx: JobContext,
    source: string | Uint8Array,
    magnet: MagnetInfo | undefined,
    dir: string,
  ): Promise<JobFile[]> {
    const { config } = this.#deps;
    const progress = this.#progress!;
    const signal = this.#signal;
    const attributes = { [spanAttributes.infoHash]: ctx.torrent.infoHash };
    return inSpan(spanNames.metadata, attributes, async (span) => {
      // The phase's first event already says since when and which trackers it asks.
      const startedResolving = Date.now();
      progress.setResolving({ since: startedResolving, trackers: trackerHosts(magnet?.trackers ?? []) });
      await this.#advance("resolving");
      await prepareScratchDir(dir, config.STACK_ID);
      const download = this.#startDownload(source, dir);
      const resolving = setInterval(() => {
        progress.setPeers(download.peers);
        progress.setResolving({ since: startedResolving, trackers: download.trackerHosts() });
      }, 1000);
      const meta = await this.#withPeerWatch(
        download.metadata(signal).catch(refusedTorrent),
        "metadata",
      ).finally(() => clearInterval(resolving));
      progress.setResolving(undefined);
      this.#deps.metrics.metadataFetches.inc();
      // A so= naming a file the torrent lacks fails the job for good (refusedTorrent).
      let selected: number[] | undefined;
      try {
        selected = checkSelectOnly(magnet?.selectOnly, meta.files);
      } catch (error) {
        refusedTorrent(error);
      }
      const files = await saveResolvedMetadata(this.#fenced, ctx.torrent.id, {
        name: meta.name,
        totalSize: meta.totalSize,
        pieceLength: meta.pieceLength,
        pieceCount: meta.pieceCount,
        files: meta.files,
        selected,
        infoDictionary: infoDictionaryOf(meta.torrentFile),
      });
      this.#files = files;
      span.setAttributes({
        [spanAttributes.files]: files.length,
        [spanAttributes.bytes]: meta.totalSize,
        [spanAttributes.peers]: download.peers,
      });
      this.#log.info({ files: files.length, bytes: meta.totalSize }, "metadata resolved");
      return files;
    });
  }

  /**
   * The metadata is saved: the job waits for its user's choice of files,
   * held by no worker and with no scratch data (the attempt ends here; the
   * user's choice queues it for any worker).
   */
  async #awaitSelection(dir: string): Promise<"awaiting_selection"> {
    await this.#download?.destroy();
    await removeDir(dir);
    await this.#advance("awaiting_selection");
    // The edge's reconcile finds long waits through this set without asking Postgres.
    await this.#deps.redis
      .zadd(keys.awaitingSelection, Date.now(), this.jobId)
      .catch((error: unknown) => this.#log.warn({ err: error }, "could not note the wait for a choice"));
    this.#log.info("waiting for the user to choose files");
    return "awaiting_selection";
  }

  /** The sink for the job's destination, from its module (destinations/). */
  async #sinkFor(profile: StorageProfile, folder: string): Promise<Sink> {
    const { config, keyRing, db } = this.#deps;
    const opened = await openSink(profile, {
      config,
      keyRing,
      db,
      log: this.#log,
      outage: this.#outage,
      folder,
    });
    this.#needsReconnect = opened.needsReconnect;
    return opened.sink;
  }

  #startDownload(source: string | Uint8Array, dir: string): Download {
    const c = this.#deps.config;
    const download = new Download(source, dir, discoveryOf(c), this.#log);
    download.on("download", (bytes: number) => this.#deps.metrics.bytesDownloaded.inc(bytes));
    this.#download = download;
    return download;
  }

  /**
   * Rejects if, while `work` is pending, no peer is connected for
   * WORKER_NO_PEERS_TIMEOUT_MS, or no verified piece arrives for
   * WORKER_STALL_TIMEOUT_MS while the job waits for data (a peer or web seed
   * that connects and sends nothing does not count as progress). Waiting for
   * storage or local disk, or uploads being the bottleneck, is not a stall.
   */
  #withPeerWatch<T>(work: Promise<T>, what: "metadata" | "data"): Promise<T> {
    const { WORKER_NO_PEERS_TIMEOUT_MS: noPeers, WORKER_STALL_TIMEOUT_MS: stall } = this.#deps.config;
    let lastPeer = Date.now();
    let lastProgress = Date.now();
    let received = -1;
    let verified = -1;
    let timer: NodeJS.Timeout | undefined;
    const watch = new Promise<never>((_, reject) => {
      timer = setInterval(() => {
        const download = this.#download;
        const now = Date.now();
        // Alive: a peer is connected, or bytes arrived (e.g. from a web seed) since the last look.
        if (!download || download.peers > 0 || download.received !== received || this.#allDownloaded) {
          lastPeer = now;
          received = download?.received ?? -1;
        }
        const wantsData = what === "metadata" || (download?.waiting ?? false);
        const paused = this.#outage.state !== undefined || (this.#window?.waiting ?? false);
        if (
          !download ||
          download.verifiedPieces !== verified ||
          !wantsData ||
          paused ||
          this.#allDownloaded
        ) {
          lastProgress = now;
          verified = download?.verifiedPieces ?? -1;
        }
        const refused = this.#refusals.summary();
        const also = refused ? ` ${refused}.` : "";
        if (now - lastPeer >= noPeers) {
          const seconds = Math.round(noPeers / 1000);
          reject(
            new PermanentJobError(
              what === "metadata"
                ? `No peers shared this magnet's metadata: none connected within ${seconds} s.${also}`
                : `No peers are sharing this torrent: none connected within ${seconds} s.${also}`,
            ),
          );
        } else if (now - lastProgress >= stall && download) {
          const { trackers, webSeeds } = download.sources();
          const made = download.connections;
          const tried = `${made} peer connection${made === 1 ? "" : "s"} made, ${trackers} tracker${trackers === 1 ? "" : "s"} and ${webSeeds} web seed${webSeeds === 1 ? "" : "s"} tried`;
          reject(
            new PermanentJobError(
              what === "metadata"
                ? `No peer sent this magnet's metadata within ${formatDuration(stall)} (${tried}).${also}`
                : `The download stalled: no verified data arrived for ${formatDuration(stall)} (${tried}).${also}`,
            ),
          );
        }
      }, 500);
    });
    const failure = new Promise<never>((_, reject) => {
      this.#download?.once("failed", (error: Error) =>
        reject(
          new PermanentJobError(`The torrent could not be downloaded: ${error.message}`, { cause: error }),
        ),
      );
    });
    return abortable(Promise.race([work, watch, failure]), this.#signal).finally(() => clearInterval(timer));
  }

  /**
   * Byte ranges of a file an earlier attempt stored (its journaled parts, laid
   * out by the part size the journal was written with): never fetched again.
   */
  async #storedRanges(file: JobFile): Promise<[number, number][]> {
    if (!file.uploadSession) return [];
    const parts = await journalOf(this.#deps.db, file.id);
    const size = resumedPartSize(
      parts,
      file.size,
      partSizeFor(file.size, this.#deps.config.WORKER_PART_SIZE_BYTES),
    );
    return parts.map((p) => [(p.partNumber - 1) * size, (p.partNumber - 1) * size + p.size]);
  }

  /** Downloads and uploads every remaining file; uploads start as soon as their bytes are on disk. */
  async #transfer(todo: JobFile[], download: Download, sink: Sink): Promise<void> {
    // Until every file is on disk; the uploads (spans of their own) overlap it.
    const downloading = startSpan(spanNames.download, {
      [spanAttributes.files]: todo.length,
      [spanAttributes.bytes]: todo.reduce((sum, f) => sum + f.size, 0),
    });
    try {
      await this.#transferring(todo, download, sink, downloading);
    } catch (error) {
      endSpan(downloading, error);
      throw error;
    }
  }

  async #transferring(todo: JobFile[], download: Download, sink: Sink, downloading: Span): Promise<void> {
    // A file is downloaded once its upload had its last bytes (or needed none: stored before).
    const downloaded = new Map(
      todo.map((file) => {
        let resolve = () => {};
        const promise = new Promise<void>((done) => {
          resolve = done;
        });
        return [file.fileIndex, { promise, resolve }] as const;
      }),
    );
    this.#fileDownloaded = (index) => downloaded.get(index)?.resolve();
    const allDownloaded = Promise.all(
      todo.map(async (file) => {
        await downloaded.get(file.fileIndex)?.promise;
        await this.#fileState(file, "uploading", { bytesDownloaded: file.size });
      }),
    ).then(async () => {
      this.#allDownloaded = true;
      downloading.setAttributes({
        [spanAttributes.received]: download.received,
        [spanAttributes.peers]: download.peers,
      });
      endSpan(downloading);
      this.#refresh();
      if (this.#phase === "downloading") await this.#advance("uploading");
    });
    const window = this.#window!;
    const follows = sink.followsDownload && !window.streaming && !window.keepsFiles;
    const lanes = uploadLanes(todo, {
      upload: (file) => this.#uploadFile(file, download, sink),
      reached: follows
        ? (file) => abortable(download.waitRange(file.fileIndex, 0, Math.min(1, file.size)), this.#signal)
        : undefined,
    });
    // Settling waits for every lane: a lane still running could otherwise find an
    // upload the clean-up aborted and start a new one, orphaned on a failed job.
    this.#lanes = Promise.allSettled(lanes).then(() => {});
    await this.#withPeerWatch(Promise.all([allDownloaded, Promise.all(lanes)]), "data");
  }

  /**
   * Per file, state writes land in the order they are made, and none moves a
   * file back from `uploaded`: a small file's upload can finish before the
   * download side's "uploading" write is through.
   */
  #fileState(
    file: JobFile,
    state: JobFile["state"],
    extra: Parameters<typeof updateFile>[2] = {},
  ): Promise<void> {
    const write = (this.#fileWrites.get(file.id) ?? Promise.resolve())
      .catch(() => {})
      .then(() =>
        file.state === "uploaded" && state !== "uploaded"
          ? undefined
          : this.#writeFileState(file, state, extra),
      );
    this.#fileWrites.set(file.id, write);
    return write;
  }

  async #writeFileState(
    file: JobFile,
    state: JobFile["state"],
    extra: Parameters<typeof updateFile>[2],
  ): Promise<void> {
    await updateFile(this.#fenced, file.id, { state, ...extra });
    file.state = state;
    const before = this.#progress?.file(file.fileIndex);
    this.#progress?.setFile({
      index: file.fileIndex,
      state,
      size: file.size,
      downloaded: extra.bytesDownloaded ?? before?.downloaded ?? 0,
      uploaded: extra.bytesUploaded ?? before?.uploaded ?? 0,
    });
  }

  /** One file's upload, in a `job.upload` span (index and size only: a file's name stays out of traces). */
  #uploadFile(file: JobFile, download: Download, sink: Sink): Promise<void> {
    const attributes = {
      [spanAttributes.fileIndex]: file.fileIndex,
      [spanAttributes.bytes]: file.size,
      [spanAttributes.resumed]: file.uploadSession !== null,
    };
    return inSpan(spanNames.upload, attributes, async (span) => {
      let parts = 0;
      await this.#upload(file, download, sink, () => parts++);
      span.setAttribute(spanAttributes.parts, parts);
    });
  }

  async #upload(file: JobFile, download: Download, sink: Sink, onPart: () => void): Promise<void> {
    const signal = this.#signal;
    const window = this.#window!;
    const index = file.fileIndex;
    if (file.state === "pending") await this.#fileState(file, "downloading");
    const ring = window.ringOf(index);
    const localPath = ring?.path ?? download.localPath(index);
    let uploaded = 0;
    const result = await sink.upload(
      { path: file.path, size: file.size, localPath, ring: ring?.ring, uploadSession: file.uploadSession },
      {
        signal,
        ready: async (start, end) => {
          await abortable(window.need(index, start, end), signal);
          await abortable(download.waitRange(index, start, end), signal);
          if (end >= file.size) this.#fileDownloaded(index);
        },
        // Files kept for seeding are read from disk later: every piece must be written there.
        claim: (start, into) => {
          if (window.keepsFiles) return undefined;
          window.claimable(index, start, start + into.length);
          return download.handoff.claim(index, start, into);
        },
        // A file selected whole downloads on its own, ahead of its upload: the upload
        // may claim where the download is and leave what is already on disk for later.
        frontier: window.streaming || window.keepsFiles ? undefined : () => download.verifiedUpTo(index),
        onStored: (start, end) => window.stored(index, start, end),
        onSession: async (session) => {
          await updateFile(this.#fenced, file.id, { uploadSession: session });
          file.uploadSession = session;
        },
        onPart: (part) => {
          onPart();
          return recordPart(this.#fenced, file.id, part);
        },
        journal: () => journalOf(this.#deps.db, file.id),
        clearSession: async () => {
          await clearUploadSession(this.#fenced, file.id);
          file.uploadSession = null;
        },
        onBytes: (bytes) => {
          uploaded += bytes;
          this.#uploadedBytes.set(file.fileIndex, uploaded);
        },
        onSent: (bytes) => {
          this.#deps.metrics.bytesUploaded.inc(bytes);
          this.#progress?.addSent(bytes);
        },
      },
    );
    this.#fileDownloaded(index);
    await this.#fileState(file, "uploaded", {
      cloudId: result.cloudId,
      cloudUrl: result.cloudUrl ?? null,
      checksum: result.checksum,
      uploadSession: null,
      bytesDownloaded: file.size,
      bytesUploaded: file.size,
      error: null,
    });
    file.cloudId = result.cloudId;
    this.#uploadedBytes.set(file.fileIndex, file.size);
    await window.fileDone(index);
    this.#deps.metrics.scratchReservedBytes.set(this.#deps.budget.used);
    this.#log.info(
      { file: file.path, key: result.cloudId, bytes: file.size, inMemory: window.handedOver(index) },
      "file uploaded",
    );
  }

  /** Recomputes byte counters and per-file progress from the download and the uploads. */
  #refresh(): void {
    const progress = this.#progress;
    const download = this.#download;
    if (!progress) return;
    let downloaded = 0;
    let uploaded = 0;
    for (const file of this.#files) {
      if (!file.selected || file.state === "skipped") continue;
      const up = this.#uploadedBytes.get(file.fileIndex) ?? 0;
      const done = file.state === "uploaded";
      const down = done ? file.size : Math.max(download?.downloadedOf(file.fileIndex) ?? 0, up);
      downloaded += down;
      uploaded += up;
      const entry: FileProgress = {
        index: file.fileIndex,
        state: file.state,
        size: file.size,
        downloaded: down,
        uploaded: up,
      };
      progress.setFile(entry);
    }
    // Never below what an earlier attempt stored: a taken-over job resumes its counts
    // before its uploads have re-counted the parts the provider holds.
    progress.setBytes({
      downloaded: Math.max(downloaded, this.#floor.downloaded),
      uploaded: Math.max(uploaded, this.#floor.uploaded),
    });
    if (download) progress.setPeers(download.peers);
  }

  async #persistCounters(): Promise<void> {
    const progress = this.#progress;
    if (!progress || this.#signal.aborted) return;
    try {
      await updateJobCounters(this.#fenced, {
        bytesDownloaded: progress.bytes.downloaded,
        bytesUploaded: progress.bytes.uploaded,
      });
    } catch (error) {
      if (error instanceof StaleAttemptError) this.stop("stale");
      else this.#log.warn({ err: error }, "could not save byte counters");
    }
  }
}
