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
// The others are written on the main thread, right after they were hashed
// there: the copy into the page cache then reads bytes still in this core's
// cache, and no two pool threads contend for one file's lock. In the
// benchmark over HTTP that took ~1 CPU-s per GiB off the worker (libuv's pool
// went from 1.3-1.5 to 0.1-0.2, the main thread gained less); over HTTPS, where
// the main thread also encrypts, it gained about what the pool lost. A disk that throttles
// writes would stall the event loop (leases, peers), so a write slower than
// `slowWriteMs` hands the rest to fs-chunk-store's writes on the pool.
import { closeSync, constants, mkdirSync, openSync, writeSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import FSChunkStore, { type ChunkStoreOptions } from "fs-chunk-store";
import type { Handoff } from "./handoff.ts";

/** Where file `index` of a torrent is kept in the scratch folder `dir`. */
export function scratchFile(dir: string, index: number): string {
  if (!Number.isSafeInteger(index) || index < 0) throw new Error(`not a file index: ${index}`);
  return join(resolve(dir), String(index));
}

/** A write that takes longer blocks the event loop too long: the store moves its writes to libuv's pool. */
export const slowWriteMs = 50;

export class IndexedChunkStore extends FSChunkStore {
  readonly #handoff: Handoff | undefined;
  readonly #slowWriteMs: number;
  /** Write descriptors of the files, opened on first write. */
  readonly #fds = new Map<object, number>();
  /** Whether pieces are still written on the main thread. */
  #writesHere = true;
  /** Index of each of the store's files in the torrent. */
  readonly #indexOf = new Map<object, number>();

  /**
   * webtorrent calls this with the torrent's files (offsets set), `path`, the
   * scratch folder, and its `storeOpts` (here `handoff`, and `slowWriteMs` for tests).
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
    } else if (this.#writesHere) {
      const failure = this.#write(targets, buf);
      queueMicrotask(() => cb?.(failure));
    } else {
      super.put(index, buf, cb);
    }
  }

  /** Writes the piece's bytes into its files here; a slow write sends the next ones to the pool. */
  #write(targets: (typeof this.chunkMap)[number], buf: Uint8Array): Error | null {
    const started = performance.now();
    try {
      for (const t of targets) {
        const bytes = targets.length === 1 ? buf : buf.subarray(t.from, t.to);
        const fd = this.#fdOf(t.file);
        for (let at = 0; at < bytes.length; )
          at += writeSync(fd, bytes, at, bytes.length - at, t.offset + at);
      }
      return null;
    } catch (error) {
      return error instanceof Error ? error : new Error(String(error));
    } finally {
      if (performance.now() - started > this.#slowWriteMs) this.#writesHere = false;
    }
  }

  /** fs-chunk-store refuses a piece of the wrong length (its put says so); so is that left to it. */
  #expectedLength(index: number): number {
    return index === this.lastChunkIndex ? this.lastChunkLength : this.chunkLength;
  }

  #fdOf(file: object): number {
    let fd = this.#fds.get(file);
    if (fd === undefined) {
      const path = (file as { path: string }).path;
      mkdirSync(dirname(path), { recursive: true });
      fd = openSync(path, constants.O_WRONLY | constants.O_CREAT, 0o600);
      this.#fds.set(file, fd);
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
