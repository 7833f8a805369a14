// The worker's own database writes: per-file state, the multipart journal and
// resolved magnet metadata. Every write is fenced by the attempt the worker
// holds: it only lands while `jobs.attempt` still equals that attempt, so a
// worker whose lease lapsed cannot overwrite the attempt that replaced it.

import {
  columnsOf,
  type DriveSecret,
  decryptDriveSecret,
  encryptSecret,
  type Keyring,
  sealedOf,
} from "@torreclou/contracts";
import {
  type Job,
  type JobFile,
  jobFiles,
  jobs,
  type StorageProfile,
  storageProfiles,
  type Torrent,
  torrents,
  uploadParts,
} from "@torreclou/db";
import { type Db, StaleAttemptError, storableText } from "@torreclou/db/jobs";
import { and, asc, eq, sql } from "drizzle-orm";

export interface JobContext {
  job: Job;
  torrent: Torrent;
  files: JobFile[];
  profile: StorageProfile | undefined;
}

/**
 * What to download for a job: the source its submitter handed in, not the
 * shared torrent row's (another user's magnet or .torrent may carry their
 * private tracker passkey). Jobs from before sources were kept per job fall
 * back to the row.
 */
export function sourceOf(
  job: Pick<Job, "sourceTorrentFile" | "sourceMagnet">,
  torrent: Pick<Torrent, "torrentFile" | "magnetUri">,
): Uint8Array | string | null {
  if (job.sourceTorrentFile || job.sourceMagnet) return job.sourceTorrentFile ?? job.sourceMagnet;
  return torrent.torrentFile ?? torrent.magnetUri;
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

/** `exists (...)` clause: the job is still at this attempt. */
function fence(jobIdColumn: typeof jobFiles.jobId, attempt: number) {
  return sql`exists (select 1 from ${jobs} where ${jobs.id} = ${jobIdColumn} and ${jobs.attempt} = ${attempt})`;
}

export type FilePatch = Partial<
  Pick<
    JobFile,
    | "state"
    | "bytesDownloaded"
    | "bytesUploaded"
    | "cloudId"
    | "cloudUrl"
    | "uploadSession"
    | "checksum"
    | "error"
  >
>;

export interface Fenced {
  db: Db;
  jobId: string;
  attempt: number;
}

export async function updateFile(f: Fenced, fileId: string, patch: FilePatch): Promise<void> {
  const rows = await f.db
    .update(jobFiles)
    .set(patch.error ? { ...patch, error: storableText(patch.error) } : patch)
    .where(and(eq(jobFiles.id, fileId), eq(jobFiles.jobId, f.jobId), fence(jobFiles.jobId, f.attempt)))
    .returning({ id: jobFiles.id });
  if (rows.length === 0) throw new StaleAttemptError(f.jobId, f.attempt);
}

export interface JournalPart {
  partNumber: number;
  etag: string;
  size: number;
}

export async function recordPart(f: Fenced, fileId: string, part: JournalPart): Promise<void> {
  await f.db.transaction(async (tx) => {
    await lockAttempt(tx, f);
    await tx
      .insert(uploadParts)
      .values({ jobFileId: fileId, partNumber: part.partNumber, etag: part.etag, size: part.size })
      .onConflictDoUpdate({
        target: [uploadParts.jobFileId, uploadParts.partNumber],
        set: { etag: part.etag, size: part.size },
      });
  });
}

export async function journalOf(db: Db, fileId: string): Promise<JournalPart[]> {
  return db
    .select({ partNumber: uploadParts.partNumber, etag: uploadParts.etag, size: uploadParts.size })
    .from(uploadParts)
    .where(eq(uploadParts.jobFileId, fileId))
    .orderBy(asc(uploadParts.partNumber));
}

/** Forgets a multipart upload: its journal and its session id. */
export async function clearUploadSession(f: Fenced, fileId: string): Promise<void> {
  await f.db.transaction(async (tx) => {
    await lockAttempt(tx, f);
    await tx.delete(uploadParts).where(eq(uploadParts.jobFileId, fileId));
    await tx.update(jobFiles).set({ uploadSession: null }).where(eq(jobFiles.id, fileId));
  });
}

/** Inside a transaction: holds the job row so no claim can bump the attempt before commit. */
async function lockAttempt(tx: Db, f: Fenced): Promise<void> {
  const [row] = await tx
    .select({ attempt: jobs.attempt })
    .from(jobs)
    .where(eq(jobs.id, f.jobId))
    .for("share");
  if (!row || row.attempt !== f.attempt) throw new StaleAttemptError(f.jobId, f.attempt);
}

export interface ResolvedTorrent {
  torrentFile: Uint8Array;
  infoHashV2?: string | undefined;
  totalSize: number;
  pieceLength: number;
  pieceCount: number;
  files: { index: number; path: string; size: number }[];
}

/**
 * A magnet's metadata arrived: stores it on the shared torrent row (only
 * filling what was unknown) and, if the job has no file list yet, writes one
 * with every file selected. Returns the job's files.
 */
export async function saveResolvedMetadata(
  f: Fenced,
  torrentId: string,
  meta: ResolvedTorrent,
): Promise<JobFile[]> {
  return f.db.transaction(async (tx) => {
    await lockAttempt(tx, f);
    await tx
      .update(torrents)
      .set({
        torrentFile: sql`coalesce(${torrents.torrentFile}, ${Buffer.from(meta.torrentFile)}::bytea)`,
        totalSize: sql`coalesce(${torrents.totalSize}, ${meta.totalSize})`,
        pieceLength: sql`coalesce(${torrents.pieceLength}, ${meta.pieceLength})`,
        pieceCount: sql`coalesce(${torrents.pieceCount}, ${meta.pieceCount})`,
        fileCount: sql`coalesce(${torrents.fileCount}, ${meta.files.length})`,
      })
      .where(eq(torrents.id, torrentId));
    const existing = await tx
      .select()
      .from(jobFiles)
      .where(eq(jobFiles.jobId, f.jobId))
      .orderBy(asc(jobFiles.fileIndex));
    if (existing.length > 0) return existing;
    const inserted = await tx
      .insert(jobFiles)
      .values(
        meta.files.map((file) => ({
          jobId: f.jobId,
          fileIndex: file.index,
          path: file.path,
          size: file.size,
        })),
      )
      .returning();
    await tx
      .update(jobs)
      .set({ bytesTotal: meta.files.reduce((sum, file) => sum + file.size, 0) })
      .where(eq(jobs.id, f.jobId));
    return inserted.sort((a, b) => a.fileIndex - b.fileIndex);
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

export async function currentJob(db: Db, jobId: string): Promise<Pick<Job, "state" | "attempt"> | undefined> {
  const [row] = await db
    .select({ state: jobs.state, attempt: jobs.attempt })
    .from(jobs)
    .where(eq(jobs.id, jobId));
  return row;
}

/**
 * Runs `change` on a Drive profile's secret with its row locked, but only
 * while the profile still holds the grant `refreshToken` (the user may have
 * reconnected meanwhile: a worker holding the old grant must not undo that).
 * Not fenced by a job attempt: the profile is shared by every job that uses it.
 * Returns whether the profile was changed.
 */
async function withDriveGrant(
  db: Db,
  keyRing: Keyring,
  profileId: string,
  refreshToken: string,
  change: (tx: Db, secret: DriveSecret) => Promise<void>,
): Promise<boolean> {
  return db.transaction(async (tx) => {
    const [row] = await tx
      .select()
      .from(storageProfiles)
      .where(eq(storageProfiles.id, profileId))
      .for("update");
    if (row?.kind !== "gdrive") return false;
    const secret = await decryptDriveSecret(keyRing, sealedOf(row), row.id).catch(() => undefined);
    if (!secret || secret.refreshToken !== refreshToken) return false;
    await change(tx, secret);
    return true;
  });
}

/** Stores a refreshed Google access token in the profile's secret (encrypted, bound to the profile id). */
export async function saveDriveAccessToken(
  db: Db,
  keyRing: Keyring,
  profileId: string,
  refreshToken: string,
  token: { accessToken: string; expiresAt: Date },
): Promise<boolean> {
  return withDriveGrant(db, keyRing, profileId, refreshToken, async (tx, secret) => {
    const next: DriveSecret = {
      ...secret,
      accessToken: token.accessToken,
      accessTokenExpiresAt: token.expiresAt.toISOString(),
    };
    const sealed = await encryptSecret(keyRing, next, profileId);
    await tx.update(storageProfiles).set(columnsOf(sealed)).where(eq(storageProfiles.id, profileId));
  });
}

/** Google refused the grant: the profile waits for the user to connect Google Drive again. */
export async function markDriveNeedsReconnect(
  db: Db,
  keyRing: Keyring,
  profileId: string,
  refreshToken: string,
): Promise<boolean> {
  return withDriveGrant(db, keyRing, profileId, refreshToken, async (tx) => {
    await tx
      .update(storageProfiles)
      .set({ status: "needs_reconnect" })
      .where(eq(storageProfiles.id, profileId));
  });
}
