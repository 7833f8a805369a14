// Scratch files named by index: file #i of a torrent lives at
// `<job scratch folder>/<i>`, whatever the torrent calls it. No torrent name
// reaches the local file system, and no two files of a torrent can share a
// scratch file (by name, fs-chunk-store strips `?*:"<>|`, so `what.bin` and
// `what?.bin` would write into one file).
//
// A subclass of fs-chunk-store rather than a wrapper: its put writes the piece
// out and keeps no reference to it, which is what lets webtorrent reuse
// verified piece buffers (patches/webtorrent@3.0.21.patch looks for
// fs-chunk-store or a subclass), and a restarted job re-verifies what is on
// disk exactly as before.
//
// With a handoff (handoff.ts), a verified piece whose bytes all fall in
// ranges uploads have claimed is copied into their part buffers and not
// written out.
//
// A file streaming through a ring (ring.ts) is written into its ring file at
// the ring's positions; its pieces are never read back from there (a get that
// touches one fails, so a restart's re-verification fetches them again).
//
// The others are written on the main thread, right after they were hashed
// there: the copy into the page cache then reads bytes still in this core's
// cache, and no two pool threads contend for one file's lock. In the
// benchmark over HTTP that took ~1 CPU-s per GiB off the worker (libuv's pool
// went from 1.3-1.5 to 0.1-0.2, the main thread gained less); over HTTPS, where
// the main thread also encrypts, it gained about what the pool lost. A disk that throttles
// writes would stall the event loop (leases, peers), so a write slower than
// `slowWriteMs` hands the rest to fs-chunk-store's writes on the pool.
import { closeSync, constants, mkdirSync, openSync, write, writeSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import FSChunkStore, { type ChunkStoreOptions } from "fs-chunk-store";
import type { Handoff } from "./handoff.ts";
import type { Ring } from "./ring.ts";

/** A file's ring and its ring file, by the file's index in the torrent. */
export type Rings = Map<number, { ring: Ring; path: string }>;

type GetOptions = { offset?: number; length?: number } | null;
type GetCallback = (err: Error | null, buf?: Uint8Array) => void;

/** One write: bytes to put at a position of a file. */
type Write = [fd: number, bytes: Uint8Array, position: number];

/** Where file `index` of a torrent is kept in the scratch folder `dir`. */
export function scratchFile(dir: string, index: number): string {
  if (!Number.isSafeInteger(index) || index < 0) throw new Error(`not a file index: ${index}`);
  return join(resolve(dir), String(index));
}

/** A write that takes longer blocks the event loop too long: the store moves its writes to libuv's pool. */
export const slowWriteMs = 50;

export class IndexedChunkStore extends FSChunkStore {
  readonly #handoff: Handoff | undefined;
  readonly #rings: Rings;
  readonly #slowWriteMs: number;
  /** Write descriptors of the files (by path), opened on first write. */
  readonly #fds = new Map<string, number>();
  /** Whether pieces are still written on the main thread. */
  #writesHere = true;
  /** Index of each of the store's files in the torrent. */
  readonly #indexOf = new Map<object, number>();

  /**
   * webtorrent calls this with the torrent's files (offsets set), `path`, the
   * scratch folder, and its `storeOpts` (here `handoff`, `rings`, and `slowWriteMs` for tests).
   */
  constructor(chunkLength: number, opts: ChunkStoreOptions) {
    if (!opts.path || !opts.files) throw new Error("an indexed chunk store needs a folder and the file list");
    super(chunkLength, {
      ...opts,
      addUID: false,
      // fs-chunk-store puts file `i` at `<path>/<i>`: a bare number has no folder and nothing to strip.
      files: opts.files.map((file, index) => ({
        path: String(index),
        length: file.length,
        offset: file.offset,
      })),
    });
    this.#handoff = opts.handoff as Handoff | undefined;
    this.#rings = (opts.rings as Rings | undefined) ?? new Map();
    this.#slowWriteMs = typeof opts.slowWriteMs === "number" ? opts.slowWriteMs : slowWriteMs;
    for (const [index, file] of this.files.entries()) this.#indexOf.set(file, index);
  }

  /** Whether pieces are written on the main thread (false once a write was slow). */
  get writesHere(): boolean {
    return this.#writesHere;
  }

  override put(index: number, buf: Uint8Array, cb?: (err: Error | null) => void): void {
    const targets = this.chunkMap[index];
    if (this.closed || !targets || buf.length !== this.#expectedLength(index)) {
      super.put(index, buf, cb);
    } else if (this.#handoff && this.#handedOver(this.#handoff, targets, buf)) {
      queueMicrotask(() => cb?.(null));
    } else {
      let writes: Write[];
      try {
        writes = this.#writesOf(targets, buf);
      } catch (error) {
        queueMicrotask(() => cb?.(asError(error)));
        return;
      }
      if (this.#writesHere) {
        const failure = this.#write(writes);
        queueMicrotask(() => cb?.(failure));
      } else {
        writeAll(writes, (error) => cb?.(error));
      }
    }
  }

  /** Where the piece's bytes go: each file's share, at its ring's positions for a file with a ring. */
  #writesOf(targets: (typeof this.chunkMap)[number], buf: Uint8Array): Write[] {
    const writes: Write[] = [];
    for (const t of targets) {
      const bytes = targets.length === 1 ? buf : buf.subarray(t.from, t.to);
      const ring = this.#rings.get(this.#indexOf.get(t.file)!);
      if (!ring) {
        writes.push([this.#fdOf((t.file as { path: string }).path), bytes, t.offset]);
        continue;
      }
      const fd = this.#fdOf(ring.path);
      for (const [position, from, length] of ring.ring.runs(t.offset, t.offset + bytes.length))
        writes.push([fd, bytes.subarray(from - t.offset, from - t.offset + length), position]);
    }
    return writes;
  }

  /** Writes here, on the main thread; a slow write sends the next ones to the pool. */
  #write(writes: Write[]): Error | null {
    const started = performance.now();
    try {
      for (const [fd, bytes, position] of writes)
        for (let at = 0; at < bytes.length; )
          at += writeSync(fd, bytes, at, bytes.length - at, position + at);
      return null;
    } catch (error) {
      return asError(error);
    } finally {
      if (performance.now() - started > this.#slowWriteMs) this.#writesHere = false;
    }
  }

  /** Pieces with bytes in a ring file are not read back: they would be another offset's bytes after a wrap. */
  override get(index: number, cb: GetCallback): void;
  override get(index: number, opts: GetOptions, cb: GetCallback): void;
  override get(index: number, opts: GetOptions | GetCallback, cb?: GetCallback): void {
    if (typeof opts === "function") {
      this.get(index, null, opts);
      return;
    }
    const ringed = this.chunkMap[index]?.some((t) => this.#rings.has(this.#indexOf.get(t.file)!));
    if (ringed) queueMicrotask(() => cb?.(new Error(`piece ${index} streamed through a scratch ring`)));
    else super.get(index, opts, cb!);
  }

  /** fs-chunk-store refuses a piece of the wrong length (its put says so); so is that left to it. */
  #expectedLength(index: number): number {
    return index === this.lastChunkIndex ? this.lastChunkLength : this.chunkLength;
  }

  #fdOf(path: string): number {
    let fd = this.#fds.get(path);
    if (fd === undefined) {
      mkdirSync(dirname(path), { recursive: true });
      fd = openSync(path, constants.O_WRONLY | constants.O_CREAT, 0o600);
      this.#fds.set(path, fd);
    }
    return fd;
  }

  #closeFds(): void {
    for (const fd of this.#fds.values()) closeSync(fd);
    this.#fds.clear();
  }

  override close(cb?: (err: Error | null) => void): void {
    this.#closeFds();
    super.close(cb);
  }

  override destroy(cb?: (err: Error | null) => void): void {
    this.#closeFds();
    super.destroy(cb);
  }

  /** Copies the piece into the claims it falls in; true when they took all of it (nothing to write). */
  #handedOver(handoff: Handoff, targets: (typeof this.chunkMap)[number], buf: Uint8Array): boolean {
    let all = true;
    for (const t of targets) {
      const bytes = targets.length === 1 ? buf : buf.subarray(t.from, t.to);
      if (!handoff.take(this.#indexOf.get(t.file)!, t.offset, bytes)) all = false;
    }
    if (!all) return false;
    for (const t of targets) {
      const length = targets.length === 1 ? buf.length : t.to - t.from;
      handoff.skipped(this.#indexOf.get(t.file)!, t.offset, t.offset + length);
    }
    return true;
  }
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/** The writes one after another on libuv's pool, then `done`. */
function writeAll(writes: Write[], done: (error: Error | null) => void): void {
  let i = 0;
  let at = 0;
  const next = (error: Error | null, written = 0): void => {
    if (error) {
      done(error);
      return;
    }
    at += written;
    while (i < writes.length && at >= writes[i]![1].length) {
      i++;
      at = 0;
    }
    if (i === writes.length) {
      done(null);
      return;
    }
    const [fd, bytes, position] = writes[i]!;
    write(fd, bytes, at, bytes.length - at, position + at, (err, n) => next(err, n));
  };
  next(null);
}
