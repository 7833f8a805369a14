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
import { join, resolve } from "node:path";
import FSChunkStore, { type ChunkStoreOptions } from "fs-chunk-store";

/** Where file `index` of a torrent is kept in the scratch folder `dir`. */
export function scratchFile(dir: string, index: number): string {
  if (!Number.isSafeInteger(index) || index < 0) throw new Error(`not a file index: ${index}`);
  return join(resolve(dir), String(index));
}

export class IndexedChunkStore extends FSChunkStore {
  /** webtorrent calls this with the torrent's files (offsets set) and `path`, the scratch folder. */
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
  }
}
