// A streamed file's scratch, rewritten in place. A file larger than its job's
// share of the budget passes through a ring: its bytes are written at their
// offset modulo the ring's size, over bytes already stored, instead of each
// range going to fresh disk and being punched out once stored. Rewriting pages
// the kernel already holds costs a fraction of filling new ones (on this
// project's test VMs, whose host takes freed memory back, ~0.1 against
// 0.2–1.3 CPU-s per GiB; `bench/scratch-io.ts`), and nothing has to be
// punched, which on ext4, XFS and btrfs first writes the range to the disk.
//
// Layout of the ring file (`<index>.ring` in the job's folder):
//   [0, head)             the file's bytes in its first piece, when that piece
//                         starts in the file before (written with that file's pieces);
//   [head, head + tail)   its bytes in a last piece shared with the file after;
//   [edges, edges + size) the ring proper: every other byte, piece-aligned.
// The edges never move, so a piece the neighbouring file's window fetches
// lands where this file's upload will look for it, whenever that happens.
//
// The ring proper goes round in cycles: cycle k holds file bytes
// [base_k, base_k + size_k) at ring positions [0, size_k). A cycle may be
// smaller than the one before (the job's share of the budget shrank, and the
// file gives back the rest once the bytes there are stored), never larger, so
// the byte at a ring position was always written by the cycle just before.
// The window (window.ts) writes into cycle k only bytes whose predecessor in
// cycle k-1 is stored: what an upload still needs is never overwritten.
//
// A ring holds the bytes of this attempt only: re-verification at a restart
// reads `<index>`, never the ring, so a crash costs at most the ring's
// unstored bytes, fetched again.

export interface Cycle {
  /** File offset of the cycle's first byte. */
  base: number;
  /** Bytes in the cycle (a multiple of the piece length, except a last short one). */
  size: number;
}

export class Ring {
  readonly fileSize: number;
  /** File bytes [0, headEnd) share their piece with the file before. */
  readonly headEnd: number;
  /** File bytes [tailStart, fileSize) share their piece with the file after. */
  readonly tailStart: number;
  readonly cycles: Cycle[] = [];

  /** A ring for a file of `fileSize` bytes at `fileOffset` in a torrent of `pieceLength` pieces. */
  constructor(fileSize: number, fileOffset: number, pieceLength: number) {
    this.fileSize = fileSize;
    const into = fileOffset % pieceLength;
    this.headEnd = into === 0 ? 0 : Math.min(fileSize, pieceLength - into);
    const over = (fileOffset + fileSize) % pieceLength;
    this.tailStart = over === 0 ? fileSize : Math.max(this.headEnd, fileSize - over);
  }

  /** Bytes before the ring proper: the head and tail pieces' bytes. */
  get edges(): number {
    return this.headEnd + (this.fileSize - this.tailStart);
  }

  /** Size of the current (last) cycle; 0 before the first. */
  get size(): number {
    return this.cycles.at(-1)?.size ?? 0;
  }

  /** File offset where the ring proper's written cycles end (the next cycle starts there). */
  get end(): number {
    const last = this.cycles.at(-1);
    return last ? last.base + last.size : this.headEnd;
  }

  /** The file bytes the disk holds at most: edges and the largest cycle still on disk. */
  footprint(size = this.size): number {
    return this.edges + size;
  }

  /**
   * Starts the next cycle, of `size` bytes (no larger than the last), from
   * `base` (the end of the last one, or further when the bytes between are
   * already stored), clipped to the ring proper.
   */
  addCycle(size: number, base = this.end): Cycle {
    const last = this.cycles.at(-1);
    if (last && size > last.size) throw new Error("a ring's cycle cannot grow");
    if (base < this.end) throw new Error("a ring's cycles cannot overlap");
    const cycle = { base, size: Math.max(0, Math.min(size, this.tailStart - base)) };
    this.cycles.push(cycle);
    return cycle;
  }

  /**
   * Where the file's bytes [start, end) are in the ring file: contiguous runs
   * as [position in the ring file, offset in the file, length]. Throws for
   * bytes of the ring proper no cycle has reached.
   */
  runs(start: number, end: number): [number, number, number][] {
    const out: [number, number, number][] = [];
    let at = start;
    while (at < end) {
      if (at < this.headEnd) {
        const to = Math.min(end, this.headEnd);
        out.push([at, at, to - at]);
        at = to;
      } else if (at >= this.tailStart) {
        out.push([this.headEnd + (at - this.tailStart), at, end - at]);
        at = end;
      } else {
        const cycle = this.#cycleOf(at);
        const to = Math.min(end, cycle.base + cycle.size, this.tailStart);
        out.push([this.edges + (at - cycle.base), at, to - at]);
        at = to;
      }
    }
    return out;
  }

  #cycleOf(at: number): Cycle {
    // Reads and writes are near the newest cycles: look from the end.
    for (let i = this.cycles.length - 1; i >= 0; i--) {
      const cycle = this.cycles[i]!;
      if (at >= cycle.base) {
        if (at < cycle.base + cycle.size) return cycle;
        break;
      }
    }
    throw new Error(`byte ${at} of the file is not in its scratch ring yet`);
  }
}

/** Where a ring file lives: beside the file's plain scratch file, which re-verification reads. */
export function ringPath(localPath: string): string {
  return `${localPath}.ring`;
}
