// Where webtorrent keeps the pieces of a transfer in this tab.
//
// webtorrent's browser build picks its own store when given none: in a browser
// with the Origin Private File System (Chromium, Firefox, Safari) it writes
// every piece to disk there (fsa-chunk-store) and fronts it with a cache of
// 20 pieces in memory; elsewhere it keeps every piece in memory
// (memory-chunk-store). Either way the whole torrent piles up in the tab —
// on disk under the origin's quota, or in RAM — though each piece is needed
// only until the part it belongs to is stored.
//
// So a transfer passes this store instead (with `storeCacheSlots: 0`, so no
// cache holds pieces either): pieces live in memory only from when they are
// verified until the engine has copied them into a part, and the engine
// releases every piece behind the point it has read up to. The engine reads
// each file forwards, a part at a time, and selects only the pieces of the
// parts it is about to read, so at most a window of parts' pieces is held.
// A released piece stays marked as had in webtorrent's bitfield (it is never
// fetched again); a peer asking us for it gets no answer (we do not seed).

type Callback<T = void> = (err: Error | null, value?: T) => void;

export class WindowStore {
  readonly chunkLength: number;
  private readonly pieces = new Map<number, Uint8Array>();
  private released = 0;
  private closed = false;

  constructor(chunkLength: number) {
    this.chunkLength = chunkLength;
  }

  put(index: number, buf: Uint8Array, cb: Callback = () => {}): void {
    if (this.closed) {
      queueMicrotask(() => cb(new Error("storage is closed")));
      return;
    }
    // A piece behind the read point is of no use any more (e.g. verified late).
    if (index >= this.released) this.pieces.set(index, buf);
    queueMicrotask(() => cb(null));
  }

  get(index: number, opts: { offset?: number; length?: number } | null, cb: Callback<Uint8Array>): void {
    const piece = this.pieces.get(index);
    if (this.closed || !piece) {
      queueMicrotask(() => cb(new Error(`piece ${index} is not held`)));
      return;
    }
    const offset = opts?.offset ?? 0;
    const length = opts?.length ?? piece.length - offset;
    queueMicrotask(() => cb(null, piece.subarray(offset, offset + length)));
  }

  /** Drops every piece below `index`: their bytes are in parts already. */
  releaseBelow(index: number): void {
    if (index <= this.released) return;
    for (const held of this.pieces.keys()) if (held < index) this.pieces.delete(held);
    this.released = index;
  }

  /** Bytes held right now. */
  get heldBytes(): number {
    let sum = 0;
    for (const piece of this.pieces.values()) sum += piece.length;
    return sum;
  }

  close(cb: Callback = () => {}): void {
    this.closed = true;
    this.pieces.clear();
    queueMicrotask(() => cb(null));
  }

  destroy(cb: Callback = () => {}): void {
    this.close(cb);
  }
}
