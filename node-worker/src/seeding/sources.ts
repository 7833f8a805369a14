// Where a seeding torrent's bytes come from: the job's scratch files while
// they still hold every stored file, or else (when the operator allows it)
// the stored objects themselves, by ranged reads through the job's
// destination (S3 GetObject with a Range, Drive alt=media with a Range).
// Padding files (BEP 47) are zeros and never read.
import { type FileHandle, open } from "node:fs/promises";
import { scratchFile } from "../torrent/store.ts";
import type { PieceReader } from "./store.ts";

export type SeedSource = "disk" | "storage";

/** Reads of stored files by their cloud id (a sink that can read back). */
export interface StoredReads {
  read(cloudId: string, start: number, end: number, signal: AbortSignal): Promise<Uint8Array>;
  close(): void;
}

export interface ClosableReader extends PieceReader {
  /** Bytes read so far, and reads made (each a ranged GET when reading from storage). */
  readonly stats: { bytes: number; reads: number };
  close(): Promise<void>;
}

/** Zeros for padding files (not in the job's file list), `inner` for the rest. */
function withPadding(isPadding: (file: number) => boolean, inner: PieceReader): PieceReader {
  return {
    read: (file, start, end, signal) =>
      isPadding(file) ? Promise.resolve(new Uint8Array(end - start)) : inner.read(file, start, end, signal),
  };
}

function counted(reader: PieceReader, close: () => Promise<void>): ClosableReader {
  const stats = { bytes: 0, reads: 0 };
  return {
    stats,
    async read(file, start, end, signal) {
      const bytes = await reader.read(file, start, end, signal);
      stats.bytes += bytes.length;
      stats.reads++;
      return bytes;
    },
    close,
  };
}

/** The scratch files `<dir>/<index>`, opened once each. */
export function diskReader(dir: string, isPadding: (file: number) => boolean): ClosableReader {
  const handles = new Map<number, Promise<FileHandle>>();
  const handle = (file: number) => {
    let h = handles.get(file);
    if (!h) {
      h = open(scratchFile(dir, file), "r");
      handles.set(file, h);
    }
    return h;
  };
  const inner: PieceReader = {
    async read(file, start, end) {
      const buf = Buffer.alloc(end - start);
      const { bytesRead } = await (await handle(file)).read(buf, 0, buf.length, start);
      if (bytesRead !== buf.length) throw new Error(`scratch file ${file} is shorter than its data`);
      return buf;
    },
  };
  return counted(withPadding(isPadding, inner), async () => {
    for (const h of handles.values()) await h.then((fh) => fh.close()).catch(() => {});
    handles.clear();
  });
}

/** The stored objects, a ranged read per piece span. */
export function storageReader(
  reads: StoredReads,
  cloudIds: ReadonlyMap<number, string>,
  isPadding: (file: number) => boolean,
): ClosableReader {
  const inner: PieceReader = {
    read(file, start, end, signal) {
      const id = cloudIds.get(file);
      if (!id) return Promise.reject(new Error(`file ${file} is not stored`));
      return reads.read(id, start, end, signal);
    },
  };
  return counted(withPadding(isPadding, inner), async () => reads.close());
}
