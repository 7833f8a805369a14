// The arithmetic of a browser transfer, kept pure so it is tested on its own:
// which byte ranges of a file become which S3 parts or Drive chunks, which
// torrent pieces a range needs, how long to wait before trying again, and how
// fast bytes move. S3's part layout itself is the contract's (parts.ts), shared
// with the edge and the worker.
import { partCount } from "@torreclou/contracts";

/** A half-open byte range [start, end) of one file. */
export interface Slice {
  start: number;
  end: number;
}

export interface PartSlice extends Slice {
  partNumber: number;
}

/**
 * The parts of a file still to upload, in order: every part of `partSize`
 * bytes (the last one shorter) but those S3 already holds. A stored part of
 * the wrong size (a different part size before) is uploaded again.
 */
export function partsToUpload(
  size: number,
  partSize: number,
  stored: readonly { partNumber: number; size: number }[],
): PartSlice[] {
  const held = new Map(stored.map((p) => [p.partNumber, p.size]));
  const parts: PartSlice[] = [];
  for (let n = 1; n <= partCount(size, partSize); n++) {
    const start = (n - 1) * partSize;
    const end = Math.min(size, start + partSize);
    if (held.get(n) !== end - start) parts.push({ partNumber: n, start, end });
  }
  return parts;
}

/** Bytes of a file the stored parts already cover (those of the right size). */
export function storedBytes(
  size: number,
  partSize: number,
  stored: readonly { partNumber: number; size: number }[],
): number {
  const missing = partsToUpload(size, partSize, stored).reduce((sum, p) => sum + (p.end - p.start), 0);
  return size - missing;
}

/** The next Drive chunk from `offset`: `chunkSize` bytes (a multiple of 256 KiB), or what is left. */
export function driveChunk(offset: number, size: number, chunkSize: number): Slice {
  return { start: offset, end: Math.min(size, offset + chunkSize) };
}

/**
 * Where a Drive session stands after a 308: its `Range` header
 * ("bytes=0-N", the bytes it holds) gives the next offset; no header means
 * it holds nothing yet.
 */
export function driveOffsetFromRange(range: string | null): number {
  if (!range) return 0;
  const match = /^bytes=0-(\d+)$/.exec(range.trim());
  if (!match) throw new Error(`Google Drive answered an unreadable Range header: ${range}`);
  return Number(match[1]) + 1;
}

/** The `Content-Range` of a Drive chunk, or of a status query (`bytes * /size`) when the slice is empty. */
export function driveContentRange(slice: Slice, size: number): string {
  return slice.end > slice.start ? `bytes ${slice.start}-${slice.end - 1}/${size}` : `bytes */${size}`;
}

/** The pieces (inclusive indexes) holding bytes [start, end) of a file at `fileOffset` in the torrent. */
export function piecesOf(
  fileOffset: number,
  slice: Slice,
  pieceLength: number,
): { first: number; last: number } {
  const first = Math.floor((fileOffset + slice.start) / pieceLength);
  const last = Math.floor((fileOffset + Math.max(slice.start, slice.end - 1)) / pieceLength);
  return { first, last };
}

/**
 * Delay before try `attempt` (1 = the first retry): doubling from `baseMs`,
 * at most `maxMs`. A server's Retry-After, when given, wins.
 */
export function retryDelay(
  attempt: number,
  baseMs = 1000,
  maxMs = 30_000,
  retryAfterSeconds?: number,
): number {
  if (retryAfterSeconds !== undefined && Number.isFinite(retryAfterSeconds) && retryAfterSeconds >= 0) {
    return Math.min(maxMs * 4, retryAfterSeconds * 1000);
  }
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
}

/** Bytes per second over the last `windowMs`, from running totals sampled with their time. */
export class RateMeter {
  private readonly samples: { at: number; total: number }[] = [];
  private readonly windowMs: number;
  constructor(windowMs = 5000) {
    this.windowMs = windowMs;
  }

  /** Records the running total `total` at time `at` (ms) and returns the rate. */
  sample(at: number, total: number): number {
    this.samples.push({ at, total });
    while (this.samples.length > 2 && at - this.samples[1]!.at >= this.windowMs) this.samples.shift();
    const first = this.samples[0]!;
    const span = at - first.at;
    return span > 0 ? Math.max(0, ((total - first.total) * 1000) / span) : 0;
  }
}

/** Waits `ms`, or rejects with the signal's reason once it aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}
