// The scale simulation's stand-in for a transfer (test tooling only). The
// worker around it is the real one; what JobRun.run() does for a job (fetch
// the torrent, upload its files) is replaced by this: read the job, move it
// queued → downloading → uploading → completed with the same fenced
// `transitionJob` the runner uses (back to queued first when taken over from
// a stopped attempt, as the runner does), publish each phase through the real
// ProgressPublisher, and wait a short random while in place of each transfer
// phase. No bytes, no files, no storage.
//
// Every attempt appends a line when it starts and one when it ends to its
// process's records file (synchronously, so a kill -9 loses nothing written
// before it): the simulation checks from them that no job ran in two
// attempts at once.
import { appendFileSync, readFileSync } from "node:fs";
import type { JobState, TransitionCause } from "@torreclou/contracts";
import { StaleAttemptError, transitionJob } from "@torreclou/db/jobs";
import type { Outcome, RunnerDeps, StopReason } from "../../src/jobs/runner.ts";
import { currentJob } from "../../src/jobs/store.ts";
import { ProgressPublisher } from "../../src/progress.ts";
import type { Attempt, WorkerDeps } from "../../src/worker.ts";

export interface AttemptRecord {
  event: "start" | "end";
  jobId: string;
  attempt: number;
  worker: string;
  /** Wall-clock ms with sub-ms precision (comparable across processes on one machine). */
  at: number;
  /** On "end": how the attempt ended. */
  outcome?: Outcome;
}

export interface StandInOptions {
  /** This process's records file (one JSON AttemptRecord per line). */
  records: string;
  /** Each of the two transfer phases waits a random time in [minMs, maxMs]. */
  minMs: number;
  maxMs: number;
}

export function now(): number {
  return performance.timeOrigin + performance.now();
}

export function readRecords(file: string): AttemptRecord[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return [];
  }
  // A line cut off by a kill -9 is not a record.
  return text
    .split("\n")
    .filter((line) => line.endsWith("}"))
    .map((line) => JSON.parse(line) as AttemptRecord);
}

/** The `WorkerDeps.attempts` factory that makes stand-ins. */
export function standInAttempts(options: StandInOptions): NonNullable<WorkerDeps["attempts"]> {
  return (deps, jobId, attempt) => new StandInTransfer(deps, jobId, attempt, options);
}

class StandInTransfer implements Attempt {
  readonly jobId: string;
  readonly attempt: number;
  readonly #deps: RunnerDeps;
  readonly #options: StandInOptions;
  #phase: JobState = "queued";
  #stopReason: StopReason | undefined;
  #interrupt: (() => void) | undefined;
  #watched = false;
  #progress: ProgressPublisher | undefined;

  constructor(deps: RunnerDeps, jobId: string, attempt: number, options: StandInOptions) {
    this.#deps = deps;
    this.jobId = jobId;
    this.attempt = attempt;
    this.#options = options;
  }

  get phase(): JobState {
    return this.#phase;
  }

  setWatched(watched: boolean): void {
    this.#watched = watched;
    this.#progress?.setWatched(watched);
  }

  stop(why: StopReason): void {
    this.#stopReason ??= why;
    this.#interrupt?.();
  }

  async run(): Promise<Outcome> {
    this.#record("start");
    let outcome: Outcome;
    try {
      outcome = await this.#run();
    } catch (error) {
      if (!(error instanceof StaleAttemptError)) throw error;
      outcome = "stale";
    } finally {
      await this.#progress?.close();
    }
    this.#record("end", outcome);
    return outcome;
  }

  async #run(): Promise<Outcome> {
    const job = await currentJob(this.#deps.db, this.jobId);
    if (!job) return "gone";
    if (job.attempt !== this.attempt) return "stale";
    this.#phase = job.state;
    const log = this.#deps.log.child({ jobId: this.jobId, attempt: this.attempt });
    this.#progress = new ProgressPublisher(this.#deps.redis, this.jobId, this.attempt, job.state, log);
    this.#progress.setWatched(this.#watched);
    this.#progress.start();
    if (
      job.state !== "queued" &&
      !(await this.#move("queued", "taken over after the previous attempt stopped"))
    )
      return "stale";
    for (const phase of ["downloading", "uploading"] as const) {
      if (!(await this.#move(phase))) return "stale";
      await this.#transfer();
      if (this.#stopReason) return this.#stopped();
    }
    return (await this.#move("completed")) ? "completed" : "stale";
  }

  /** The runner's fenced move: false when the job moved on (cancelled, or a newer attempt). */
  async #move(to: JobState, reason?: string, cause: TransitionCause = "worker"): Promise<boolean> {
    const job = await transitionJob(this.#deps.db, {
      jobId: this.jobId,
      to,
      cause,
      reason,
      attempt: this.attempt,
    });
    this.#deps.announced(job);
    if (!job) return false;
    this.#phase = to;
    await this.#progress?.phase(to);
    return true;
  }

  /** The stand-in for moving bytes: a random wait, cut short by a stop. */
  async #transfer(): Promise<void> {
    const { minMs, maxMs } = this.#options;
    const ms = minMs + Math.random() * (maxMs - minMs);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#interrupt = () => {
        clearTimeout(timer);
        resolve();
      };
      if (this.#stopReason) this.#interrupt();
    });
    this.#interrupt = undefined;
  }

  /** As the runner settles a stop: a shutdown hands the job back, a cancel ends it. */
  async #stopped(): Promise<Outcome> {
    if (this.#stopReason === "shutdown") return "handed_back";
    if (this.#stopReason === "cancel")
      return (await this.#move("cancelled", "cancelled by the user", "user")) ? "cancelled" : "stale";
    return "stale";
  }

  #record(event: AttemptRecord["event"], outcome?: Outcome): void {
    const record: AttemptRecord = {
      event,
      jobId: this.jobId,
      attempt: this.attempt,
      worker: this.#deps.config.WORKER_ID,
      at: now(),
      ...(outcome ? { outcome } : {}),
    };
    appendFileSync(this.#options.records, `${JSON.stringify(record)}\n`);
  }
}
