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
import { join, resolve } from "node:path";
import FSChunkStore, { type ChunkStoreOptions } from "fs-chunk-store";
import type { Handoff } from "./handoff.ts";

/** Where file `index` of a torrent is kept in the scratch folder `dir`. */
export function scratchFile(dir: string, index: number): string {
  if (!Number.isSafeInteger(index) || index < 0) throw new Error(`not a file index: ${index}`);
  return join(resolve(dir), String(index));
}

export class IndexedChunkStore extends FSChunkStore {
  readonly #handoff: Handoff | undefined;
  /** Index of each of the store's files in the torrent. */
  readonly #indexOf = new Map<object, number>();

  /**
   * webtorrent calls this with the torrent's files (offsets set), `path`, the
   * scratch folder, and its `storeOpts` (here `handoff`, if any).
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
    for (const [index, file] of this.files.entries()) this.#indexOf.set(file, index);
  }

  override put(index: number, buf: Uint8Array, cb?: (err: Error | null) => void): void {
    if (this.#handoff && !this.closed && this.#handedOver(this.#handoff, index, buf)) {
      queueMicrotask(() => cb?.(null));
    } else {
      super.put(index, buf, cb);
    }
  }

  /** Copies the piece into the claims it falls in; true when they took all of it (nothing to write). */
  #handedOver(handoff: Handoff, index: number, buf: Uint8Array): boolean {
    const targets = this.chunkMap[index];
    if (!targets) return false;
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
