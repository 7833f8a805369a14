// Verified pieces handed to the upload that waits for them, in memory. An
// upload claims the byte range of the part it is about to send, with the
// part's buffer; the store copies each verified piece that falls inside a
// claim straight into it, and a piece whose bytes all went into claims is not
// written to the scratch file at all. What arrived before the claim was made
// is on disk, and the upload reads just that. So while the uploads keep pace
// with the download, a byte is copied from its piece into its part once,
// instead of into the page cache and back out.
//
// Bytes that went only into memory are not on disk: an attempt that dies
// before their part is stored fetches them again (the next attempt verifies
// what is on disk, as it always has), and an upload that would have to read
// them again in this attempt is told so (`onSkipped` marks them gone).

import { addRange } from "./ranges.ts";

/** Bytes [start, end) of file `index` were handed over and not written to disk. */
export type SkippedListener = (index: number, start: number, end: number) => void;

export class Claim {
  readonly index: number;
  readonly start: number;
  readonly buffer: Uint8Array;
  /** Ranges of the buffer filled from verified pieces, relative to `start`; sorted, disjoint. */
  readonly #filled: [number, number][] = [];
  readonly #release: (claim: Claim) => void;

  constructor(index: number, start: number, buffer: Uint8Array, release: (claim: Claim) => void) {
    this.index = index;
    this.start = start;
    this.buffer = buffer;
    this.#release = release;
  }

  get end(): number {
    return this.start + this.buffer.length;
  }

  /** Copies the part of `bytes` (file bytes from `at`) inside this claim; returns how many bytes that was. */
  fill(at: number, bytes: Uint8Array): number {
    const from = Math.max(at, this.start);
    const to = Math.min(at + bytes.length, this.end);
    if (to <= from) return 0;
    this.buffer.set(bytes.subarray(from - at, to - at), from - this.start);
    addRange(this.#filled, from - this.start, to - this.start);
    return to - from;
  }

  /** Ranges of the buffer (relative to `start`) no piece filled: they are to be read from disk. */
  missing(): [number, number][] {
    const gaps: [number, number][] = [];
    let at = 0;
    for (const [a, b] of this.#filled) {
      if (a > at) gaps.push([at, a]);
      at = Math.max(at, b);
    }
    if (at < this.buffer.length) gaps.push([at, this.buffer.length]);
    return gaps;
  }

  /** No more pieces go into the buffer (call once the range is verified, or the upload gave up on it). */
  release(): void {
    this.#release(this);
  }
}

export class Handoff {
  readonly #claims = new Map<number, Claim[]>();
  onSkipped: SkippedListener | undefined;

  /** Pieces inside bytes [start, start + buffer.length) of file `index` are copied into `buffer` until released. */
  claim(index: number, start: number, buffer: Uint8Array): Claim {
    const claim = new Claim(index, start, buffer, (c) => {
      const list = this.#claims.get(c.index);
      const at = list?.indexOf(c) ?? -1;
      if (at >= 0) list!.splice(at, 1);
      if (list?.length === 0) this.#claims.delete(c.index);
    });
    const list = this.#claims.get(index);
    if (list) list.push(claim);
    else this.#claims.set(index, [claim]);
    return claim;
  }

  /**
   * A verified piece's bytes of file `index` from byte `at`: copied into the
   * claims they fall in. True when claims took all of them, so they need not
   * be written to disk.
   */
  take(index: number, at: number, bytes: Uint8Array): boolean {
    const list = this.#claims.get(index);
    if (!list) return false;
    let copied = 0;
    for (const claim of list) copied += claim.fill(at, bytes);
    return copied === bytes.length;
  }

  /** Tells the listener that these bytes are not on disk. */
  skipped(index: number, start: number, end: number): void {
    this.onSkipped?.(index, start, end);
  }
}
