// Per-file writes of an attempt: state, the upload session and the multipart
// journal. Every write is fenced by the attempt its writer holds (a worker's,
// or a browser tab's): it lands only while `jobs.attempt` still equals it.
import { and, asc, eq, sql } from "drizzle-orm";
import { type Db, StaleAttemptError, storableText } from "./jobs.ts";
import { type JobFile, jobFiles, jobs, uploadParts } from "./schema.ts";

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
export async function lockAttempt(tx: Db, f: Fenced): Promise<void> {
  const [row] = await tx
    .select({ attempt: jobs.attempt })
    .from(jobs)
    .where(eq(jobs.id, f.jobId))
    .for("share");
  if (!row || row.attempt !== f.attempt) throw new StaleAttemptError(f.jobId, f.attempt);
}
