// Where finished files go. A sink uploads one local file at a time, resumes an
// upload an earlier attempt started (its session id and journal come from the
// database), and can abort one. The runner owns the state; a sink only talks
// to the storage provider.
import { type NameRules, storageFolder, storagePath, UnsafeNameError } from "@torreclou/contracts";
import type { JournalPart } from "../jobs/store.ts";
import type { Ring } from "../torrent/ring.ts";

export interface SinkFile {
  /** Path inside the torrent, `/`-separated (e.g. `Name/dir/file.bin`). */
  path: string;
  size: number;
  /** Where the downloaded bytes are on local disk (a ring file when `ring` is set). */
  localPath: string;
  /** How the file's offsets map into `localPath` when it streams through a ring (torrent/ring.ts). */
  ring?: Ring | undefined;
  /** Upload id (S3) or session URI (Drive) an earlier attempt left, if any. */
  uploadSession: string | null;
}

export interface UploadHooks {
  /** Resolves once bytes [start, end) of the file are downloaded and verified on disk. */
  ready(start: number, end: number): Promise<void>;
  /**
   * Claims bytes [start, start + into.length) of the file before waiting for
   * them: verified pieces in that range are copied into `into` as they
   * arrive (and not written to disk when claims took all their bytes). Once
   * ready() resolves, release the claim and read only its `missing()` ranges
   * from disk. Absent, or undefined: read the whole range from disk.
   */
  claim?(start: number, into: Uint8Array): PartClaim | undefined;
  /**
   * The first byte of the file not verified yet, where the download runs on
   * its own ahead of the upload (a file selected whole, its pieces handed
   * over by claims). Given, an upload may take parts out of order: claim the
   * part the download is filling, so its pieces go into memory, and send the
   * parts left behind on disk later. Absent: parts go in order.
   */
  frontier?: (() => number) | undefined;
  /** A new upload session started: persist it before sending data. */
  onSession(session: string): Promise<void>;
  /** A part is stored by the provider: journal it. */
  onPart(part: JournalPart): Promise<void>;
  /** Parts journaled for the current session. */
  journal(): Promise<JournalPart[]>;
  /** The session is unusable (expired, aborted): forget it and its journal. */
  clearSession(): Promise<void>;
  /** Bytes confirmed stored (counted once per part, including parts resumed from an earlier attempt). */
  onBytes(bytes: number): void;
  /** Bytes sent on the wire (not counting resumed parts), for rates and metrics. */
  onSent?(bytes: number): void;
  /**
   * Bytes [start, end) of the file are stored by the provider (and journaled
   * where it has a journal): their local copy is no longer needed.
   */
  onStored?(start: number, end: number): Promise<void>;
  signal: AbortSignal;
}

/** A part's buffer, filled with verified pieces as they arrive (see UploadHooks.claim). */
export interface PartClaim {
  /** Ranges of the buffer no piece filled, relative to the claim's start: to be read from disk. */
  missing(): [number, number][];
  /** No more pieces go into the buffer. */
  release(): void;
}

export interface UploadResult {
  /** S3 object key or Drive file id. */
  cloudId: string;
  cloudUrl?: string | undefined;
  /** e.g. `md5:<hex>` of the whole file. */
  checksum: string;
}

export interface Sink {
  /** Checks that the destination accepts our credentials and exists; throws PermanentJobError otherwise. */
  preflight(signal: AbortSignal): Promise<void>;
  upload(file: SinkFile, hooks: UploadHooks): Promise<UploadResult>;
  /**
   * Drops an unfinished upload session and the parts it holds. True once it is
   * gone (or the provider keeps no such thing); false when the provider could
   * not be reached, so the caller keeps the session and tries again later.
   */
  abort(file: Pick<SinkFile, "path" | "uploadSession">): Promise<boolean>;
  /**
   * Aborts uploads of these files that the provider still holds and that were
   * started before `before`, whoever started them (an attempt that died before
   * it could record its session). False when the provider could not be reached.
   */
  sweep?(paths: string[], before: Date): Promise<boolean>;
  /**
   * Bytes [start, end) of a stored file (its `cloudId`), read back with one
   * ranged request: what seeding from storage serves peers from. Every call
   * is a GET the provider bills as egress. Absent where a destination cannot.
   */
  read?(cloudId: string, start: number, end: number, signal: AbortSignal): Promise<Uint8Array>;
  /**
   * The most bytes of a file of `size` bytes one upload request sends (its
   * part or chunk size): a file streaming through a ring needs room for two.
   */
  partSize?(size: number): number;
  /**
   * Its uploads claim the parts the download is filling (UploadHooks.frontier):
   * the file the download is in should have its upload running then.
   */
  readonly followsDownload?: boolean;
  close(): void;
}

/** A read back gave another number of bytes than asked for. */
export function checkReadLength(bytes: Uint8Array, start: number, end: number, what: string): Uint8Array {
  if (bytes.length !== end - start)
    throw new Error(`${what}: asked for bytes ${start}-${end - 1}, got ${bytes.length} bytes`);
  return bytes;
}

/** A failure no retry can fix; `reason` is shown to the user as is. */
export class PermanentJobError extends Error {
  readonly reason: string;
  constructor(reason: string, options?: { cause?: unknown }) {
    super(reason, options);
    this.reason = reason;
    this.name = "PermanentJobError";
  }
}

/**
 * The destination's OAuth grant no longer works (revoked by the user,
 * expired, password changed): only the user can fix it, by connecting the
 * destination again. The profile is marked "needs reconnect".
 */
export class ReconnectRequiredError extends PermanentJobError {
  readonly label: string;
  constructor(label: string, options?: { cause?: unknown }) {
    super(
      `${label} access was revoked or has expired: reconnect ${label} on the Storage page, then retry the job.`,
      options,
    );
    this.label = label;
    this.name = "ReconnectRequiredError";
  }
}

/**
 * A file's stored path under the job folder as names (or the job folder's
 * alone without a path): the one mapping in contracts/src/names.ts, with the
 * destination's rules. A name the parser would have refused is a permanent
 * failure, not a file quietly renamed.
 */
export function storedPath(folder: string, path: string | undefined, rules: NameRules): string[] {
  try {
    return path === undefined ? storageFolder(folder, rules) : storagePath(folder, path, rules);
  } catch (error) {
    if (error instanceof UnsafeNameError) throw new PermanentJobError(error.message, { cause: error });
    throw error;
  }
}

// The content type a stored file gets, shared with the edge's browser uploads.
export { contentTypeFor } from "@torreclou/contracts";
