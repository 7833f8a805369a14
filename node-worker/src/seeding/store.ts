// A read-only chunk store for a seeding torrent: each piece is read from
// where the job's files are now — the worker's scratch files, or the stored
// objects by ranged reads — span by span (pieces.ts). Whole pieces are read
// and a few kept, because peers ask for 16 KiB blocks: sixteen requests for
// one 256 KiB piece cost one read, not sixteen (each read from storage is a
// billed GET). Reads of one piece in flight are shared.
import type { ChunkStoreOptions } from "fs-chunk-store";
import { type Layout, spansOf } from "./pieces.ts";

/** Bytes [start, end) of torrent file `file`. */
export interface PieceReader {
  read(file: number, start: number, end: number, signal: AbortSignal): Promise<Uint8Array>;
}

/** What the seeding passes in webtorrent's `storeOpts`. */
export interface SeedStoreOptions {
  layout: Layout;
  reader: PieceReader;
  signal: AbortSignal;
  /** Whole pieces kept in memory, at most. */
  cachePieces: number;
}

type Callback = (error: Error | null, buf?: Uint8Array) => void;

function seedOptions(opts: ChunkStoreOptions): SeedStoreOptions {
  const seed = opts.seed as SeedStoreOptions | undefined;
  if (!seed?.reader || !seed.layout) throw new Error("a seed store needs its layout and a reader");
  return seed;
}

export class SeedStore {
  readonly chunkLength: number;
  readonly #opts: SeedStoreOptions;
  /** Pieces read, most recently used last. */
  readonly #cache = new Map<number, Uint8Array>();
  readonly #reading = new Map<number, Promise<Uint8Array>>();
  #closed = false;

  /** webtorrent constructs it with the piece length and `{ ...storeOpts, files, length, … }`. */
  constructor(chunkLength: number, opts: ChunkStoreOptions) {
    this.chunkLength = chunkLength;
    this.#opts = seedOptions(opts);
  }

  get(index: number, opts: { offset?: number; length?: number } | null | Callback, cb?: Callback): void {
    const done = typeof opts === "function" ? opts : cb;
    const range = typeof opts === "function" || !opts ? {} : opts;
    if (!done) return;
    if (this.#closed) {
      done(new Error("the seed store is closed"));
      return;
    }
    this.#piece(index).then(
      (piece) => {
        const offset = range.offset ?? 0;
        const length = range.length ?? piece.length - offset;
        done(null, piece.subarray(offset, offset + length));
      },
      (error: unknown) => done(error instanceof Error ? error : new Error(String(error))),
    );
  }

  put(_index: number, _buf: Uint8Array, cb?: (error: Error | null) => void): void {
    cb?.(new Error("a seeding torrent's store is read-only"));
  }

  close(cb?: (error: Error | null) => void): void {
    this.#closed = true;
    this.#cache.clear();
    queueMicrotask(() => cb?.(null));
  }

  destroy(cb?: (error: Error | null) => void): void {
    this.close(cb);
  }

  #piece(index: number): Promise<Uint8Array> {
    const cached = this.#cache.get(index);
    if (cached) {
      this.#cache.delete(index);
      this.#cache.set(index, cached);
      return Promise.resolve(cached);
    }
    const pending = this.#reading.get(index);
    if (pending) return pending;
    const reading = this.#read(index).finally(() => this.#reading.delete(index));
    this.#reading.set(index, reading);
    return reading;
  }

  async #read(index: number): Promise<Uint8Array> {
    const { layout, reader, signal, cachePieces } = this.#opts;
    const spans = spansOf(layout, index);
    const parts = await Promise.all(spans.map((s) => reader.read(s.file, s.start, s.end, signal)));
    const piece = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    if (cachePieces > 0) {
      this.#cache.set(index, piece);
      for (const oldest of this.#cache.keys()) {
        if (this.#cache.size <= cachePieces) break;
        this.#cache.delete(oldest);
      }
    }
    return piece;
  }
}
