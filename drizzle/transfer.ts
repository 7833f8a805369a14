// Job writes for transfers in the browser (edge/src/routes/transfer.ts): the
// submitter's tab takes its job as a worker claims one (a new attempt, the
// same fencing), and may hand it to the fleet. The moves go through the same
// transition table and functions as a worker's (jobs.ts).
import type { JobState } from "@torreclou/contracts";
import { and, eq, inArray, isNotNull, sql } from "drizzle-orm";
import { claimJob, type Db, liveJob, transitionJob } from "./jobs.ts";
import { type Job, jobs, jobTransitions, users } from "./schema.ts";

/** States a tab may take its job in (again): waiting, or held by an earlier tab. */
export const browserStates: readonly JobState[] = ["queued", "downloading", "uploading"];

export type Refusal =
  /** No such job of this user. */
  | { refused: "not_found" }
  /** The fleet moves this job's bytes. */
  | { refused: "not_browser" }
  /** The job is not in a state a tab may take it in. */
  | { refused: "state"; state: JobState }
  /** The user already runs as many jobs as the running limit allows. */
  | { refused: "running_limit"; limit: number; used: number };

export interface TakeInput {
  jobId: string;
  userId: string;
  /** The operator's running limit (null: none), recorded for the workers as admitNext does. */
  runningLimit: number | null;
}

/**
 * The tab takes the job: a new attempt (an earlier tab's is stale from now
 * on), queued → downloading with cause `browser`, the job counted as running
 * (admitted and claimed, as a worker's claim leaves it). Checked against the
 * running limit with the user's row locked, as admitNext does, unless the job
 * already runs (a reopened tab takes it back). One transaction.
 */
export async function takeForBrowser(db: Db, input: TakeInput): Promise<{ job: Job } | Refusal> {
  return db.transaction(async (tx) => {
    await tx.update(users).set({ runningLimit: input.runningLimit }).where(eq(users.id, input.userId));
    const found = await browserJob(tx, input.jobId, input.userId);
    if ("refused" in found) return found;
    const limit = input.runningLimit;
    if (found.admittedAt === null && limit !== null) {
      const [counts] = await tx
        .select({ live: sql<number>`count(*)::int` })
        .from(jobs)
        .where(and(eq(jobs.userId, input.userId), isNotNull(jobs.admittedAt), liveJob));
      const used = counts?.live ?? 0;
      if (used >= limit) return { refused: "running_limit", limit, used };
    }
    const claimed = await claimJob(tx, input.jobId, { runner: "browser", userId: input.userId });
    if (!claimed) return { refused: "state", state: found.state };
    if (claimed.state !== "queued") return { job: claimed };
    const moved = await transitionJob(tx, {
      jobId: input.jobId,
      to: "downloading",
      from: ["queued"],
      cause: "browser",
      reason: "taken by the submitter's browser tab",
      attempt: claimed.attempt,
    });
    return moved ? { job: moved } : { refused: "state", state: claimed.state };
  });
}

/**
 * Hands a browser job to the fleet: runner `fleet`, a new attempt (the tab's
 * is stale), queued and waiting for its turn (admitted by admitNext like any
 * queued job), with cause `user`, so the fleet counts its attempts from here.
 * The uploads the tab opened stay on the files (job_files.upload_session and
 * the upload_parts journal), so the fleet resumes them. One transaction.
 */
export async function handToFleet(db: Db, jobId: string, userId: string): Promise<{ job: Job } | Refusal> {
  return db.transaction(async (tx) => {
    const found = await browserJob(tx, jobId, userId);
    if ("refused" in found) return found;
    const reason = "handed to the worker fleet by its owner";
    const set = { runner: "fleet", admittedAt: null, claimedAt: null, enqueuedAt: null } as const;
    if (found.state !== "queued") {
      const moved = await transitionJob(tx, {
        jobId,
        to: "queued",
        from: ["downloading", "uploading"],
        cause: "user",
        reason,
        userId,
        newAttempt: true,
        set,
      });
      return moved ? { job: moved } : { refused: "state", state: found.state };
    }
    // Already queued (a paused tab): no move in the table, but the hand-over is recorded all the same.
    const [job] = await tx
      .update(jobs)
      .set({ ...set, attempt: sql`${jobs.attempt} + 1` })
      .where(and(eq(jobs.id, jobId), eq(jobs.state, "queued"), eq(jobs.runner, "browser")))
      .returning();
    if (!job) return { refused: "state", state: found.state };
    await tx.insert(jobTransitions).values({
      jobId,
      fromState: "queued",
      toState: "queued",
      cause: "user",
      attempt: job.attempt,
      reason,
    });
    return { job };
  });
}

/** The user's browser job, locked, in a state a tab may hold it in; or why not. */
async function browserJob(
  tx: Db,
  jobId: string,
  userId: string,
): Promise<Pick<Job, "state" | "admittedAt"> | Refusal> {
  const [row] = await tx
    .select({ state: jobs.state, runner: jobs.runner, admittedAt: jobs.admittedAt })
    .from(jobs)
    .where(and(eq(jobs.id, jobId), eq(jobs.userId, userId)))
    .for("update");
  if (!row) return { refused: "not_found" };
  if (row.runner !== "browser") return { refused: "not_browser" };
  if (!browserStates.includes(row.state)) return { refused: "state", state: row.state };
  return row;
}

/** Whether the job is the user's and its tab still holds `attempt`; the state it is in. */
export async function browserAttempt(
  db: Db,
  jobId: string,
  userId: string,
): Promise<Pick<Job, "attempt" | "state" | "runner"> | undefined> {
  const [row] = await db
    .select({ attempt: jobs.attempt, state: jobs.state, runner: jobs.runner })
    .from(jobs)
    .where(and(eq(jobs.id, jobId), eq(jobs.userId, userId), inArray(jobs.state, [...browserStates])));
  return row;
}
