// The worker's own database reads and writes: the job's encrypted source,
// per-file state, the multipart journal and resolved magnet metadata. Every
// write is fenced by the attempt the worker holds: it only lands while
// `jobs.attempt` still equals that attempt, so a worker whose lease lapsed
// cannot overwrite the attempt that replaced it.

import {
  CredentialsError,
  columnsOf,
  decryptJobSource,
  decryptOAuthSecret,
  encryptSecret,
  isOAuthKind,
  type Keyring,
  type OAuthSecret,
  sealedOf,
  sealedSourceOf,
} from "@torreclou/contracts";
import {
  type Job,
  type JobFile,
  jobFiles,
  jobs,
  jobTransitions,
  type StorageProfile,
  storageProfiles,
  type Torrent,
  torrents,
} from "@torreclou/db";
import { type Db, type ResolvedTorrent, recordMetadata, StaleAttemptError } from "@torreclou/db/jobs";
import { and, asc, desc, eq } from "drizzle-orm";

export interface JobContext {
  job: Job;
  torrent: Torrent;
  files: JobFile[];
  profile: StorageProfile | undefined;
}

/**
 * What to download for a job: the source its submitter handed in, decrypted
 * (it is bound to this job, so one copied from another job's row does not
 * open). Never from the shared torrent row, which holds no source. Throws a
 * CredentialsError if it does not decrypt or is still in plain text.
 */
export async function openSource(
  keyRing: Keyring,
  job: Pick<Job, "id" | "sourceKind" | "sourceCiphertext" | "sourceIv" | "sourceKeyId">,
): Promise<Uint8Array | string> {
  const sealed = sealedSourceOf(job);
  if (!sealed) {
    throw new CredentialsError(
      "it is not encrypted yet; the operator must run `npm run migrate` with CREDENTIALS_KEYS set",
    );
  }
  const source = await decryptJobSource(keyRing, sealed, job.id);
  return source.kind === "torrent" ? source.torrent : source.magnet;
}

export async function loadJobContext(db: Db, jobId: string): Promise<JobContext | undefined> {
  const [job] = await db.select().from(jobs).where(eq(jobs.id, jobId));
  if (!job) return undefined;
  const [torrent] = await db.select().from(torrents).where(eq(torrents.id, job.torrentId));
  if (!torrent) return undefined;
  const files = await db
    .select()
    .from(jobFiles)
    .where(eq(jobFiles.jobId, jobId))
    .orderBy(asc(jobFiles.fileIndex));
  const profile = job.storageProfileId
    ? (await db.select().from(storageProfiles).where(eq(storageProfiles.id, job.storageProfileId)))[0]
    : undefined;
  return { job, torrent, files, profile };
}

import { type Fenced, lockAttempt } from "@torreclou/db/files";

// The fenced per-file writes are shared with the edge (a browser tab's transfer): drizzle/files.ts.
export {
  clearUploadSession,
  type Fenced,
  type FilePatch,
  type JournalPart,
  journalOf,
  lockAttempt,
  recordPart,
  updateFile,
} from "@torreclou/db/files";

/**
 * A magnet's metadata arrived from this job's own peers: recorded on the job
 * (see recordMetadata) while this attempt still owns it. Returns the job's files.
 */
export async function saveResolvedMetadata(
  f: Fenced,
  torrentId: string,
  meta: ResolvedTorrent,
): Promise<JobFile[]> {
  return f.db.transaction(async (tx) => {
    await lockAttempt(tx, f);
    return recordMetadata(tx, f.jobId, torrentId, meta);
  });
}

export async function updateJobCounters(
  f: Fenced,
  counters: Partial<Pick<Job, "bytesDownloaded" | "bytesUploaded" | "bytesTotal">>,
): Promise<void> {
  const rows = await f.db
    .update(jobs)
    .set(counters)
    .where(and(eq(jobs.id, f.jobId), eq(jobs.attempt, f.attempt)))
    .returning({ id: jobs.id });
  if (rows.length === 0) throw new StaleAttemptError(f.jobId, f.attempt);
}

/**
 * Attempts started since the user last queued the job (created or retried
 * it): the attempt now, less the attempt the latest user transition to
 * `queued` recorded. A retry starts the count again.
 */
export async function attemptsSinceUser(db: Db, jobId: string, attempt: number): Promise<number> {
  const [row] = await db
    .select({ attempt: jobTransitions.attempt })
    .from(jobTransitions)
    .where(
      and(
        eq(jobTransitions.jobId, jobId),
        eq(jobTransitions.toState, "queued"),
        eq(jobTransitions.cause, "user"),
      ),
    )
    .orderBy(desc(jobTransitions.at), desc(jobTransitions.id))
    .limit(1);
  return attempt - (row?.attempt ?? 0);
}

/** Whether the job's user has chosen its files (it left awaiting_selection for the queue). */
export async function filesChosen(db: Db, jobId: string): Promise<boolean> {
  const [row] = await db
    .select({ id: jobTransitions.id })
    .from(jobTransitions)
    .where(
      and(
        eq(jobTransitions.jobId, jobId),
        eq(jobTransitions.fromState, "awaiting_selection"),
        eq(jobTransitions.toState, "queued"),
      ),
    )
    .limit(1);
  return row !== undefined;
}

export async function currentJob(db: Db, jobId: string): Promise<Pick<Job, "state" | "attempt"> | undefined> {
  const [row] = await db
    .select({ state: jobs.state, attempt: jobs.attempt })
    .from(jobs)
    .where(eq(jobs.id, jobId));
  return row;
}

/**
 * Runs `change` on an OAuth destination's grant with its row locked, but only
 * while the profile still holds the grant `refreshToken` (the user may have
 * reconnected meanwhile: a worker holding the old grant must not undo that).
 * Not fenced by a job attempt: the profile is shared by every job that uses it.
 * Returns whether the profile was changed.
 */
async function withGrant(
  db: Db,
  keyRing: Keyring,
  profileId: string,
  refreshToken: string,
  change: (tx: Db, secret: OAuthSecret) => Promise<void>,
): Promise<boolean> {
  return db.transaction(async (tx) => {
    const [row] = await tx
      .select()
      .from(storageProfiles)
      .where(eq(storageProfiles.id, profileId))
      .for("update");
    if (!row || !isOAuthKind(row.kind)) return false;
    const secret = await decryptOAuthSecret(keyRing, sealedOf(row), row.id).catch(() => undefined);
    if (!secret || secret.refreshToken !== refreshToken) return false;
    await change(tx, secret);
    return true;
  });
}

/** A token answer written back: the access token and, where the provider rotates it, the new refresh token. */
export interface GrantTokens {
  accessToken: string;
  expiresAt: Date;
  refreshToken?: string | undefined;
}

/**
 * Stores a refreshed access token (and a rotated refresh token) in the
 * profile's secret (encrypted, bound to the profile id), so other attempts
 * and workers reuse it instead of each refreshing its own.
 */
export async function saveGrantTokens(
  db: Db,
  keyRing: Keyring,
  profileId: string,
  refreshToken: string,
  token: GrantTokens,
): Promise<boolean> {
  return withGrant(db, keyRing, profileId, refreshToken, async (tx, secret) => {
    const next: OAuthSecret = {
      ...secret,
      ...(token.refreshToken ? { refreshToken: token.refreshToken } : {}),
      accessToken: token.accessToken,
      accessTokenExpiresAt: token.expiresAt.toISOString(),
    };
    const sealed = await encryptSecret(keyRing, next, profileId);
    await tx.update(storageProfiles).set(columnsOf(sealed)).where(eq(storageProfiles.id, profileId));
  });
}

/** The provider refused the grant: the profile waits for the user to connect it again. */
export async function markNeedsReconnect(
  db: Db,
  keyRing: Keyring,
  profileId: string,
  refreshToken: string,
): Promise<boolean> {
  return withGrant(db, keyRing, profileId, refreshToken, async (tx) => {
    await tx
      .update(storageProfiles)
      .set({ status: "needs_reconnect" })
      .where(eq(storageProfiles.id, profileId));
  });
}

/** Google Drive's names for the two above. */
export const saveDriveAccessToken = saveGrantTokens;
export const markDriveNeedsReconnect = markNeedsReconnect;
