// The worker loop: read jobs from the stream (and reclaim those of dead
// workers), take each job's lease, claim it in Postgres, run it, keep the
// lease alive while it runs, and acknowledge the entry when the attempt ends.
// Two streams, each with slots of its own (a lane): downloads, and magnets
// whose only work yet is fetching their file list for their user to choose
// from, so a full worker still shows a user their files within seconds.
import { randomUUID } from "node:crypto";
import { mkdir } from "node:fs/promises";
import {
  EgressPolicy,
  exhaustedReason,
  isTerminal,
  type Keyring,
  keys,
  MAX_ATTEMPTS,
  parseKeyring,
  queue,
  streamFor,
  type TraceContext,
  workerStates,
} from "@torreclou/contracts";
import {
  admitNext,
  claimJob,
  type Db,
  markEnqueued,
  type TransitionedJob,
  transitionJob,
} from "@torreclou/db/jobs";
import { fleetCounts } from "@torreclou/db/ops";
import type { Logger } from "pino";
import type { Config } from "./config.ts";
import { installEgressGuard, type LookupFn } from "./egress/index.ts";
import { Errands } from "./errands.ts";
import { HealthScraper } from "./health/index.ts";
import { Heartbeat, packageVersion, workersSeen } from "./heartbeat.ts";
import { JobRun, type Outcome, type RunnerDeps } from "./jobs/runner.ts";
import { attemptsSinceUser, currentJob } from "./jobs/store.ts";
import type { Metrics } from "./metrics.ts";
import { type Entry, JobQueue } from "./queue/queue.ts";
import { ownScratchJobs, removeDir, ScratchBudget, scratchDirFor, seedingHolder } from "./scratch.ts";
import { SeedingSet, type SeedRenewal } from "./seeding/index.ts";
import { HolePuncher } from "./torrent/holes.ts";
import { inClaimSpan } from "./tracing/index.ts";
import { WebhookSender } from "./webhooks/index.ts";

// A consumer holding no entries and idle this long belongs to a worker that is gone.
const STALE_CONSUMER_MS = 60 * 60_000;
// Pruning looks at consumers idle for an hour: looking more often than that finds nothing more.
const PRUNE_EVERY_MS = 60 * 60_000;

/**
 * What the worker drives of one attempt: a JobRun, or (test tooling only, see
 * `WorkerDeps.attempts`) a stand-in for its transfer.
 */
export type Attempt = Pick<JobRun, "jobId" | "attempt" | "phase" | "run" | "stop" | "setWatched">;

/** A stream this worker reads, with slots of its own. */
interface Lane {
  readonly kind: "download" | "metadata";
  readonly queue: JobQueue;
  readonly slots: number;
  /**
   * How long its read blocks, and how long between looks at its group, while
   * nothing runs anywhere (a `watch` notice in its stream wakes it at once).
   */
  readonly idleMs: number;
  /**
   * Entries of jobs whose lease another attempt holds (a retry's entry while
   * the cancelled attempt winds down, a reconciler's duplicate). They stay
   * pending here and are tried again at each look at the group, until the
   * lease is free: then the job runs, or the entry is acknowledged because
   * the job is finished. Never dropped on sight, so no retry is lost.
   */
  readonly deferred: Map<string, Entry>;
  slotFreed: (() => void) | undefined;
  /** When the read loop looks at the group next (0: at once). */
  nextCheck: number;
}

interface Active {
  run: Attempt;
  lane: Lane;
  /** The job's owner: when the attempt ends, their next job may be let in. */
  userId: string;
  entryId: string;
  /** The entry's trace context: a hand-back's new entry carries it on, so the job stays one trace. */
  trace: TraceContext;
  done: Promise<void>;
}

export interface WorkerDeps {
  config: Config;
  db: Db;
  log: Logger;
  metrics: Metrics;
  /** How jobs resolve names (dns.lookup unless given; the egress tests give their own). */
  resolver?: LookupFn | undefined;
  /**
   * Makes each attempt (a JobRun unless given). A seam for test tooling only:
   * the scale simulation (node-worker/test/scale/) stands in for the transfer
   * and keeps everything else of the worker real. The production entry never
   * sets it.
   */
  attempts?: ((deps: RunnerDeps, jobId: string, attempt: number) => Attempt) | undefined;
}

export class Worker {
  /** The download stream's queue; its command connection also holds leases and liveness. */
  readonly queue: JobQueue;
  /** The metadata stream's (queue.metadataStream). */
  readonly metadataQueue: JobQueue;
  readonly webhooks: WebhookSender;
  readonly #errands: Errands;
  readonly heartbeat: Heartbeat;
  readonly budget: ScratchBudget;
  /** Completed jobs seeding back, apart from the download slots. */
  readonly seeding: SeedingSet;
  readonly #deps: WorkerDeps;
  readonly #log: Logger;
  readonly #keyRing: Keyring;
  readonly #active = new Map<string, Active>();
  #settled: Promise<void> | undefined;
  /**
   * Jobs this process is between "seen an entry" and "registered as active",
   * with the lane whose slot they take. Set before the first await, so two
   * entries of one job can never start two attempts of it in one process.
   */
  readonly #taking = new Map<string, Lane>();
  readonly #downloads: Lane;
  readonly #metadata: Lane;
  #stopping = false;
  #loops: Promise<void>[] = [];
  #timers: NodeJS.Timeout[] = [];
  #holes: HolePuncher | undefined;

  constructor(deps: WorkerDeps) {
    this.#deps = deps;
    this.#log = deps.log;
    this.#keyRing = parseKeyring(deps.config.CREDENTIALS_KEYS);
    // Shared by every worker process using the same scratch folder (a ledger there).
    this.budget = new ScratchBudget({
      total: deps.config.WORKER_SCRATCH_BUDGET_BYTES,
      root: deps.config.WORKER_SCRATCH_DIR,
      holder: `${deps.config.WORKER_ID}-${process.pid}-${randomUUID().slice(0, 8)}`,
    });
    this.queue = new JobQueue(
      deps.config.REDIS_URL,
      deps.config.WORKER_ID,
      deps.config.WORKER_LEASE_MS,
      deps.log,
    );
    this.metadataQueue = new JobQueue(
      deps.config.REDIS_URL,
      deps.config.WORKER_ID,
      deps.config.WORKER_LEASE_MS,
      deps.log,
      undefined,
      queue.metadataStream,
    );
    const lane = (kind: Lane["kind"], q: JobQueue, slots: number, idleMs: number): Lane => ({
      kind,
      queue: q,
      slots,
      idleMs,
      deferred: new Map(),
      slotFreed: undefined,
      nextCheck: 0,
    });
    const { WORKER_IDLE_CHECK_MS: idle, WORKER_ERRAND_BLOCK_MS: rare } = deps.config;
    this.#downloads = lane("download", this.queue, deps.config.WORKER_CONCURRENCY, idle);
    // New entries wake its read at once; only a crashed worker's wait for the look, and a
    // job starting anywhere announces itself: so an idle worker looks here as rarely as its errands.
    this.#metadata = lane("metadata", this.metadataQueue, deps.config.WORKER_METADATA_CONCURRENCY, rare);
    deps.metrics.setQueueSource(() => bothLags(this.queue, this.metadataQueue));
    deps.metrics.setWorkersSource(() => workersSeen(this.queue.commands));
    if (deps.config.WORKER_FLEET_METRICS) {
      const thresholds = {
        runningMs: deps.config.OPERATOR_STUCK_AFTER_SECONDS * 1000,
        queuedMs: deps.config.OPERATOR_QUEUED_TOO_LONG_SECONDS * 1000,
      };
      deps.metrics.setFleetSource(() => fleetCounts(deps.db, new Date(), thresholds));
    }
    this.seeding = new SeedingSet({
      config: deps.config,
      consumer: this.queue.consumer,
      redis: this.queue.commands,
      budget: this.budget,
      log: deps.log.child({ part: "seeding" }),
    });
    this.heartbeat = new Heartbeat({
      redis: this.queue.commands,
      workerId: deps.config.WORKER_ID,
      version: deps.config.WORKER_VERSION ?? packageVersion(),
      concurrency: deps.config.WORKER_CONCURRENCY,
      jobs: () => this.activeJobs,
      log: deps.log,
    });
    this.webhooks = new WebhookSender({
      db: deps.db,
      redis: this.queue.commands,
      keyRing: this.#keyRing,
      log: deps.log.child({ part: "webhooks" }),
      retryDelaysMs: deps.config.WEBHOOK_RETRY_DELAYS_MS,
      timeoutMs: deps.config.WEBHOOK_TIMEOUT_MS,
      onSent: (outcome) => deps.metrics.webhookDeliveries.inc({ outcome }),
    });
    this.#errands = new Errands({
      redisUrl: deps.config.REDIS_URL,
      webhooks: this.webhooks,
      health: new HealthScraper({
        redis: this.queue.commands,
        log: deps.log.child({ part: "health" }),
        timeoutMs: deps.config.WORKER_SCRAPE_TIMEOUT_MS,
      }),
      log: deps.log,
      idleBlockMs: deps.config.WORKER_ERRAND_BLOCK_MS,
    });
  }

  /** A move that queued webhook deliveries: every sender hears of it (this one's included). */
  #announced(job: TransitionedJob | undefined): void {
    if (!job || job.webhookDeliveries === 0) return;
    this.webhooks.wake().catch((error: unknown) => {
      // The deliveries are in Postgres: the next pass of any sender sends them.
      this.#log.warn({ reason: String(error) }, "could not wake the webhook senders");
    });
  }

  get activeJobs(): string[] {
    return [...this.#active.keys()];
  }

  async start(): Promise<void> {
    const { metrics } = this.#deps;
    installEgressGuard({
      policy: new EgressPolicy(this.#deps.config.EGRESS_ALLOW),
      lookup: this.#deps.resolver,
      onRefused: (error, refusals) => {
        metrics.egressRefused.inc();
        // host:port and why only: a URL's path and query can carry a tracker passkey.
        this.#log.debug(
          { ...refusals?.job, host: error.host, port: error.port, reason: error.reason },
          "egress refused",
        );
      },
    });
    await this.queue.init();
    await this.metadataQueue.init();
    await this.heartbeat.start();
    await this.#errands.start();
    await this.#clearLeftovers();
    await mkdir(this.#deps.config.WORKER_SCRATCH_DIR, { recursive: true });
    const holes = new HolePuncher();
    this.#holes = (await holes.works(this.#deps.config.WORKER_SCRATCH_DIR)) ? holes : undefined;
    if (!this.#holes) {
      holes.close();
      this.#log.warn(
        { dir: this.#deps.config.WORKER_SCRATCH_DIR },
        "the scratch disk cannot free part of a file (fallocate --punch-hole): a job needs disk for all its files at once",
      );
    }
    this.#loops.push(this.#readLoop(this.#downloads), this.#readLoop(this.#metadata));
    const renewEvery = Math.max(200, Math.floor(this.#deps.config.WORKER_LEASE_MS / 3));
    this.#timers.push(setInterval(() => void this.#renew(), renewEvery));
    this.#timers.push(setInterval(() => void this.#pruneConsumers(), PRUNE_EVERY_MS));
    void this.#pruneConsumers();
    // The worker's id is on every line already (the root logger's base).
    this.#log.info(
      {
        concurrency: this.#deps.config.WORKER_CONCURRENCY,
        metadataConcurrency: this.#deps.config.WORKER_METADATA_CONCURRENCY,
      },
      "taking jobs",
    );
  }

  /**
   * Scratch folders of this stack's jobs that are finished or gone (a crash
   * can leave them behind). Folders without this stack's mark are left alone:
   * another stack's workers may share the root.
   */
  async #clearLeftovers(): Promise<void> {
    const { WORKER_SCRATCH_DIR: root, STACK_ID: stack } = this.#deps.config;
    for (const name of await ownScratchJobs(root, stack)) {
      if (!/^[0-9a-f-]{36}$/.test(name)) continue;
      const job = await currentJob(this.#deps.db, name).catch(() => undefined);
      if (job && !isTerminal(job.state)) continue;
      // A live worker (another process on this disk) may be seeding from it.
      const dir = scratchDirFor(root, name);
      const holder = await seedingHolder(dir);
      if (holder && (await this.queue.commands.exists(keys.alive(holder)).catch(() => 1))) continue;
      await removeDir(dir);
    }
  }

  /** Keeps an entry for a later try, at the next look at the group, which comes within a lease/3. */
  #defer(lane: Lane, jobId: string, entry: Entry): void {
    lane.deferred.set(jobId, entry);
    lane.nextCheck = Math.min(lane.nextCheck, Date.now() + this.#watchEvery);
  }

  /** The lane's slots not taken by its running attempts or by entries being taken. */
  #free(lane: Lane): number {
    let used = 0;
    for (const active of this.#active.values()) if (active.lane === lane) used++;
    for (const taking of this.#taking.values()) if (taking === lane) used++;
    return lane.slots - used;
  }

  /** While some worker holds jobs, look at the group often enough to take over within seconds. */
  get #watchEvery(): number {
    return Math.max(200, Math.floor(this.#deps.config.WORKER_LEASE_MS / 3));
  }

  /**
   * Reads a lane's new entries, and between reads looks at its group: every
   * few seconds while jobs run somewhere (to take over a crashed worker's),
   * every `idleMs` when nothing runs anywhere (WORKER_IDLE_CHECK_MS, 2 min, for
   * downloads; WORKER_ERRAND_BLOCK_MS, 5 min, for metadata). An idle fleet thus
   * costs each worker 1.4 commands a minute here.
   */
  async #readLoop(lane: Lane): Promise<void> {
    while (!this.#stopping) {
      if (this.#free(lane) <= 0) {
        await new Promise<void>((resolve) => {
          lane.slotFreed = resolve;
        });
        continue;
      }
      try {
        if (Date.now() >= lane.nextCheck) await this.#check(lane);
        const block = Math.max(100, lane.nextCheck - Date.now());
        const entries = await lane.queue.read(this.#free(lane), block);
        for (const entry of entries) await this.#take(lane, entry, true);
      } catch (error) {
        if (this.#stopping) break;
        this.#log.warn({ err: error, stream: lane.queue.stream }, "reading the job stream failed; retrying");
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  /** Takes over entries of workers that are gone, and tries deferred entries again. */
  async #check(lane: Lane): Promise<void> {
    const deferred = [...lane.deferred.values()];
    lane.deferred.clear();
    for (const entry of deferred) await this.#take(lane, entry, false);
    const { othersPending, claimed } = await lane.queue.check(this.#free(lane));
    for (const entry of claimed) {
      this.#log.info(
        { entry: entry.id, jobId: entry.kind === "job" ? entry.message.jobId : undefined, lane: lane.kind },
        "took over a job entry of a worker that is gone",
      );
      await this.#take(lane, entry, false);
    }
    const watching = othersPending > 0 || lane.deferred.size > 0;
    lane.nextCheck = Date.now() + (watching ? this.#watchEvery : lane.idleMs);
  }

  /** Forgets consumers left in the group by workers that died (a clean exit retires its own). */
  async #pruneConsumers(): Promise<void> {
    for (const q of [this.queue, this.metadataQueue]) {
      try {
        const removed = await q.pruneConsumers(STALE_CONSUMER_MS);
        if (removed.length > 0)
          this.#log.info(
            { consumers: removed, stream: q.stream },
            "removed consumers of workers that are gone",
          );
      } catch (error) {
        this.#log.debug({ err: error, stream: q.stream }, "could not prune the consumer group");
      }
    }
  }

  /** One stream entry: a job to run, a notice to start watching, or something to drop. */
  async #take(lane: Lane, entry: Entry, fresh: boolean): Promise<void> {
    if (entry.kind === "watch") {
      // A job started somewhere: look at the group now, then every few seconds while it runs.
      await lane.queue.ack(entry.id);
      lane.nextCheck = 0;
      return;
    }
    if (entry.kind === "invalid") {
      await lane.queue.ack(entry.id);
      return;
    }
    const jobId = entry.message.jobId;
    const log = this.#log.child({ jobId, entry: entry.id });
    if (this.#stopping) return;
    if (this.#active.has(jobId) || this.#taking.has(jobId)) {
      // This process runs the job already; the entry may be a retry of it. Keep it for later.
      this.#defer(lane, jobId, entry);
      return;
    }
    this.#taking.set(jobId, lane);
    try {
      // A `job.claim` span in the trace the entry carries (tracing on only): the attempt runs in it.
      await inClaimSpan(entry, () => this.#start(lane, entry, jobId, fresh, log));
    } finally {
      this.#taking.delete(jobId);
    }
  }

  async #start(lane: Lane, entry: Entry, jobId: string, fresh: boolean, entryLog: Logger): Promise<void> {
    // Until the job is read its attempt is unknown, and said so.
    let log = entryLog.child({ attempt: null });
    if (!(await this.queue.acquireLease(jobId))) {
      log.info({ fresh }, "another attempt holds the job's lease; keeping the entry until it is free");
      this.#defer(lane, jobId, entry);
      return;
    }
    if (entry.kind === "job" && entry.message.cleanup) {
      await this.#cleanUp(lane, entry, jobId, entryLog);
      return;
    }
    const trace =
      entry.kind === "job"
        ? { traceparent: entry.message.traceparent, tracestate: entry.message.tracestate }
        : {};
    try {
      // A metadata slot takes only a job whose file list is still unknown.
      const job = await claimJob(this.#deps.db, jobId, { awaitsMetadata: lane.kind === "metadata" });
      if (!job) {
        const current = lane.kind === "metadata" ? await currentJob(this.#deps.db, jobId) : undefined;
        if (current && (workerStates as readonly string[]).includes(current.state)) {
          // Its files became known since (a worker that stopped after saving them): a download slot's now.
          log.info(
            { state: current.state },
            "the job's metadata is known; passing it to the download stream",
          );
          await lane.queue.requeue(jobId, entry.id, trace, queue.stream);
        } else {
          log.info("job is finished or gone; acknowledging");
          await lane.queue.ack(entry.id);
        }
        await this.queue.releaseLease(jobId);
        return;
      }
      // Counted since the user last queued the job: a retry starts over.
      if (
        job.attempt > MAX_ATTEMPTS &&
        (await attemptsSinceUser(this.#deps.db, jobId, job.attempt)) > MAX_ATTEMPTS
      ) {
        this.#announced(
          await transitionJob(this.#deps.db, {
            jobId,
            to: "failed",
            cause: "system",
            attempt: job.attempt,
            reason: exhaustedReason(MAX_ATTEMPTS),
          }),
        );
        this.#deps.metrics.jobOutcomes.inc({ outcome: "exhausted" });
        await lane.queue.ack(entry.id);
        await this.queue.releaseLease(jobId);
        await this.#admitNext(job.userId, log);
        return;
      }
      log = entryLog.child({ attempt: job.attempt });
      log.info({ state: job.state, lane: lane.kind }, "job claimed");
      const run =
        this.#deps.attempts?.(this.#runDeps(), jobId, job.attempt) ??
        new JobRun(this.#runDeps(), jobId, job.attempt);
      const active: Active = {
        run,
        lane,
        userId: job.userId,
        entryId: entry.id,
        trace,
        done: Promise.resolve(),
      };
      this.#active.set(jobId, active);
      if (await this.queue.cancelRequested(jobId, job.attempt)) run.stop("cancel");
      // Someone idle should watch for this worker's crash.
      await lane.queue.announce().catch((error: unknown) => log.debug({ err: error }, "no watch notice"));
      // It left the queue: the owner's next job may go in (fair turns). Not awaited: the
      // job starts meanwhile, and a turn this misses is taken later (see #admitNext).
      void this.#admitNext(job.userId, log);
      active.done = run.run().then(
        (outcome) => this.#finish(jobId, outcome),
        async (error: unknown) => {
          log.error({ err: error }, "attempt crashed");
          this.#active.delete(jobId);
          // The entry stays pending; freeing the lease lets a worker reclaim it.
          await this.queue.releaseLease(jobId).catch(() => {});
          this.#wake(lane);
          await this.#admitNext(job.userId, log);
        },
      );
    } catch (error) {
      log.error({ err: error }, "could not start the job");
      await this.queue.releaseLease(jobId).catch(() => {});
      // Still pending here: tried again at the next look at the group.
      this.#defer(lane, jobId, entry);
    }
  }

  /**
   * A job that ended left uploads at its provider (a cancel while no attempt
   * ran, or aborts that could not be sent): abort them now, with the job's
   * lease held so no attempt starts meanwhile. A provider that does not
   * answer keeps the entry for the next look at the group.
   */
  async #cleanUp(lane: Lane, entry: Entry, jobId: string, entryLog: Logger): Promise<void> {
    let log = entryLog.child({ attempt: null });
    try {
      const job = await currentJob(this.#deps.db, jobId);
      if (job) log = entryLog.child({ attempt: job.attempt });
      const clean =
        !job || !isTerminal(job.state) || (await new JobRun(this.#runDeps(), jobId, job.attempt).cleanUp());
      if (clean) {
        log.info("clean-up done");
        await lane.queue.ack(entry.id);
      } else {
        log.info("storage unreachable; the clean-up is kept for later");
        this.#defer(lane, jobId, entry);
      }
    } catch (error) {
      log.warn({ err: error }, "clean-up failed; kept for later");
      this.#defer(lane, jobId, entry);
    } finally {
      await this.queue.releaseLease(jobId).catch(() => {});
    }
  }

  /**
   * Fair turns: lets the user's next job into the queue if it is their turn
   * now (drizzle/jobs.ts `admitNext`) and writes its message. Never throws:
   * a turn this misses is taken by the user's next job change, or by the
   * edge's reconciler.
   */
  async #admitNext(userId: string, log: Logger): Promise<void> {
    try {
      const next = await admitNext(this.#deps.db, userId);
      if (!next) return;
      // Its entry carries the trace context of the request that created it (tracing on).
      await this.queue.enqueue(
        next.id,
        userId,
        { traceparent: next.traceparent, tracestate: next.tracestate },
        streamFor(next),
      );
      await markEnqueued(this.#deps.db, next.id);
      log.info({ next: next.id }, "let the user's next job into the queue");
    } catch (error) {
      log.warn({ err: error }, "could not let the user's next job in; the reconciler will");
    }
  }

  #runDeps() {
    return {
      db: this.#deps.db,
      redis: this.queue.commands,
      config: this.#deps.config,
      log: this.#log,
      budget: this.budget,
      holes: this.#holes,
      // Jobs sharing the scratch budget: fetching a file list uses none.
      running: () => [...this.#active.values()].filter((a) => a.lane === this.#downloads).length,
      metrics: this.#deps.metrics,
      keyRing: this.#keyRing,
      announced: (job: TransitionedJob | undefined) => this.#announced(job),
      seeding: this.seeding,
    };
  }

  /** Keeps this worker alive and its leases (one command for all its jobs); stops cancelled or lost attempts. */
  async #renew(): Promise<void> {
    const deferred = this.#downloads.deferred.size + this.#metadata.deferred.size;
    if (this.#active.size === 0 && deferred === 0 && this.seeding.size === 0) return;
    const held = [...this.#active.values()].map((a) => ({ jobId: a.run.jobId, attempt: a.run.attempt }));
    // Seeding jobs ride along (attempt 0: no lease), so a stop is seen in the same command.
    const seeding = this.seeding.jobIds.map((jobId) => ({ jobId, attempt: 0 }));
    try {
      const results = await this.queue.renew([...held, ...seeding]);
      await this.#renewedSeeding(results.slice(held.length));
      for (const result of results.slice(0, held.length)) {
        const run = this.#active.get(result.jobId)?.run;
        if (!run) continue;
        run.setWatched(result.watched);
        if (!result.owned) run.stop("stale");
        else if (result.cancelled) run.stop("cancel");
      }
    } catch (error) {
      this.#log.warn({ err: error }, "lease renewal failed");
    }
  }

  /** Passes seeding jobs' renewals on; a stop flag is read once, to tell a user's stop from a deletion. */
  async #renewedSeeding(results: { jobId: string; cancelled: boolean; watched: boolean }[]): Promise<void> {
    const renewals: SeedRenewal[] = [];
    for (const r of results) {
      const stop = r.cancelled ? Number(await this.queue.commands.get(keys.seedStop(r.jobId))) || 1 : 0;
      renewals.push({ jobId: r.jobId, stop, watched: r.watched });
    }
    this.seeding.renewed(renewals);
  }

  async #finish(jobId: string, outcome: Outcome): Promise<void> {
    const active = this.#active.get(jobId);
    if (!active) return;
    const log = this.#log.child({ jobId, attempt: active.run.attempt });
    const lane = active.lane;
    try {
      switch (outcome) {
        case "stale":
          // A newer attempt owns the job. Our lease and entry go only if they are still ours
          // (a worker that took the job over holds its own).
          await this.queue.releaseLease(jobId);
          await lane.queue.ack(active.entryId);
          break;
        case "handed_back": {
          const phase = active.run.phase;
          if (phase !== "queued") {
            await transitionJob(this.#deps.db, {
              jobId,
              to: "queued",
              cause: "worker",
              reason: "worker shutting down",
              attempt: active.run.attempt,
              // Only a running job goes back: one the user cancelled meanwhile stays cancelled.
              from: ["resolving", "downloading", "uploading"],
            });
          }
          // Lease first: a worker reading the new entry must be able to take it.
          await this.queue.releaseLease(jobId);
          await lane.queue.requeue(jobId, active.entryId, active.trace);
          break;
        }
        case "interrupted": {
          // The row is moved back if the database answers again by now; if not, a
          // claim takes a running job's row as it is, so the entry goes back either way.
          await transitionJob(this.#deps.db, {
            jobId,
            to: "queued",
            from: ["resolving", "downloading", "uploading"],
            cause: "worker",
            reason: "the worker lost its database connection; taken again",
            attempt: active.run.attempt,
          }).catch((error: unknown) => log.warn({ reason: String(error) }, "job left in its state"));
          await this.queue.releaseLease(jobId);
          await lane.queue.requeue(jobId, active.entryId, active.trace);
          break;
        }
        default:
          await lane.queue.ack(active.entryId);
          await this.queue.releaseLease(jobId);
      }
      log.info({ outcome }, "attempt ended");
    } catch (error) {
      log.error({ err: error, outcome }, "could not settle the attempt");
    } finally {
      this.#active.delete(jobId);
      // The attempt ended: the owner's next job may go in (a job ended, or came back to the queue).
      await this.#admitNext(active.userId, log);
      this.#wake(lane);
      // An entry kept while this attempt ran (a retry, a clean-up, its download after its choice) is taken at once.
      for (const keptIn of [this.#downloads, this.#metadata]) {
        const kept = keptIn.deferred.get(jobId);
        if (!kept || this.#stopping) continue;
        keptIn.deferred.delete(jobId);
        void this.#take(keptIn, kept, false).catch((error: unknown) =>
          log.warn({ err: error }, "could not take the entry kept for this job"),
        );
      }
    }
  }

  #wake(lane: Lane): void {
    const wake = lane.slotFreed;
    lane.slotFreed = undefined;
    wake?.();
  }

  /**
   * Stops taking jobs and hands running ones back to the queue (each becomes
   * `queued` again with a fresh entry). Resolves within `boundMs`.
   */
  async shutdown(boundMs = this.#deps.config.WORKER_SHUTDOWN_MS): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    for (const t of this.#timers) clearInterval(t);
    this.queue.stopReading();
    this.metadataQueue.stopReading();
    this.#wake(this.#downloads);
    this.#wake(this.#metadata);
    const running = [...this.#active.values()];
    for (const a of running) a.run.stop("shutdown");
    this.#settled = Promise.all([...running.map((a) => a.done), ...this.#loops]).then(() => {});
    const settled = this.#settled.then(() => true);
    const timedOut = new Promise<boolean>((resolve) =>
      setTimeout(() => resolve(false), Math.max(0, boundMs - 1000)).unref(),
    );
    if (!(await Promise.race([settled, timedOut]))) {
      this.#log.warn({ jobs: this.activeJobs }, "jobs did not hand back in time; their leases will lapse");
    }
    // Seeding ends with the process (not resumed elsewhere); each job's progress says so.
    await this.seeding.stopAll().catch((error: unknown) => {
      this.#log.warn({ err: error }, "could not end every seeding cleanly");
    });
    // Out of the group, unless it still holds entries (a job that did not hand back in time, or deferred ones).
    for (const q of [this.queue, this.metadataQueue]) {
      await q.retire().catch((error: unknown) => {
        this.#log.warn({ err: error, stream: q.stream }, "could not leave the consumer group");
      });
    }
    await this.#errands.stop();
    await this.heartbeat.stop();
    await this.queue.close();
    await this.metadataQueue.close();
    await this.budget.close();
    this.#holes?.close();
  }

  /**
   * After `shutdown`: resolves once every run it stopped has ended, even one
   * that outlived the bound, so its caller can close the pool those runs use
   * (a pool's `end()` waits for every checked-out client).
   */
  stopped(): Promise<void> {
    return this.#settled ?? Promise.resolve();
  }
}

/** Queue lag over both streams: entries summed, the oldest of either. */
async function bothLags(
  downloads: JobQueue,
  metadata: JobQueue,
): Promise<{ pending: number; oldestAgeSeconds: number; undelivered: number }> {
  const [a, b] = await Promise.all([downloads.lag(), metadata.lag()]);
  return {
    pending: a.pending + b.pending,
    oldestAgeSeconds: Math.max(a.oldestAgeSeconds, b.oldestAgeSeconds),
    undelivered: a.undelivered + b.undelivered,
  };
}
