// Moving one file from a byte source into a destination, slice by slice, with
// memory bounded by a small window: at most READ_AHEAD slices selected for
// download, and at most `inFlight` slices' bytes held while they upload.
import type { Slice } from "./layout.ts";

/** One slice of a file being fetched; creating it asks for its bytes. */
export interface SliceReader {
  /** Resolves with exactly the slice's bytes once they have all arrived. */
  read(signal: AbortSignal): Promise<Uint8Array>;
  /** Gives up on the slice (its pieces are no longer asked for). */
  cancel(): void;
}

/** Where a file's bytes come from (the torrent, or a test's buffer). */
export interface ByteSource {
  open(fileIndex: number, slice: Slice): SliceReader;
  /** Every byte of the file before `upTo` is in a part: what holds them may go. */
  release(fileIndex: number, upTo: number): void;
}

/** Slices asked for at once: the one being read and the next, so the download never waits on an upload. */
export const READ_AHEAD = 2;

/**
 * Reads `slices` of file `fileIndex` in order and hands each to `upload`,
 * with at most `inFlight` uploads at once (1 for a session that takes bytes
 * in order, like Drive). Rejects with the first failure, after cancelling
 * what was asked for.
 */
export async function pumpFile<S extends Slice>(opts: {
  source: ByteSource;
  fileIndex: number;
  slices: readonly S[];
  inFlight: number;
  signal: AbortSignal;
  upload: (slice: S, bytes: Uint8Array) => Promise<void>;
}): Promise<void> {
  const { source, fileIndex, slices, signal } = opts;
  const readers = new Map<number, SliceReader>();
  const uploads = new Set<Promise<void>>();
  const failed: unknown[] = [];
  try {
    for (let i = 0; i < slices.length; i++) {
      for (let j = i; j < Math.min(slices.length, i + READ_AHEAD); j++) {
        if (!readers.has(j)) readers.set(j, source.open(fileIndex, slices[j]!));
      }
      const slice = slices[i]!;
      const bytes = await readers.get(i)!.read(signal);
      readers.delete(i);
      source.release(fileIndex, slice.end);
      const upload: Promise<void> = opts.upload(slice, bytes).then(
        () => void uploads.delete(upload),
        (err: unknown) => {
          uploads.delete(upload);
          failed.push(err);
        },
      );
      uploads.add(upload);
      while (uploads.size >= opts.inFlight && failed.length === 0) await Promise.race(uploads);
      if (failed.length > 0) throw failed[0];
    }
    await Promise.all(uploads);
    if (failed.length > 0) throw failed[0];
  } finally {
    for (const reader of readers.values()) reader.cancel();
  }
}
