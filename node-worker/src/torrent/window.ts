// The window of a job's download: which bytes of its files may be on local
// disk at once. Pieces are selected for download only once their bytes are
// reserved in the scratch budget, ahead of the uploads as far as the job's
// share of the budget allows; once a range is stored by the provider its
// local bytes are freed (a hole punched in the scratch file) and given back.
// So a torrent of any size, one file many times larger than the budget
// included, passes through a fixed amount of disk.
//
// When the budget can hold everything at once, everything is selected at the
// start and files are deleted whole once stored: the download never waits on
// the uploads. Stored ranges are not freed early then: punching a hole first
// writes the range's dirty pages out to the disk (ext4, XFS and btrfs all
// flush before they free), where deleting a file drops them unwritten, so a
// job that fits spares the disk a write of everything it fetched.
//
// A streamed file larger than the job's share goes through a ring instead
// (ring.ts): its bytes are rewritten in place, at their offset modulo the
// ring's size, and nothing is punched. The ring's bytes are reserved once,
// when the file's upload first asks for a part (the ring must hold two); the
// window then selects a byte only once the byte the ring held at its position
// is stored. When the job's share shrinks (another job started here, or
// another process waits for the budget) the ring's next cycle is smaller, and
// the rest is given back once the bytes there are stored.
//
// Freed bytes are gone for this attempt, and so are bytes an upload took in
// memory without their being written (handoff.ts): webtorrent still counts their pieces
// as verified. An upload that must read freed bytes again (the provider lost
// its upload session and it starts the file over) gets RangeGoneError, and
// the job is handed back; the next attempt re-verifies what is on disk and
// fetches what it needs again.

import { access, truncate } from "node:fs/promises";
import { partSizeFor } from "@torreclou/contracts";
import type { Logger } from "pino";
import { type DiskWait, formatBytes, removeFile, type ScratchBudget } from "../scratch.ts";
import { PermanentJobError } from "../sinks/index.ts";
import type { HolePuncher } from "./holes.ts";
import { addRange, overlaps } from "./ranges.ts";
import { Ring } from "./ring.ts";

export interface WindowFile {
  /** Index in the torrent. */
  index: number;
  size: number;
  /** Byte offset of the file in the torrent (pieces are counted from there). */
  offset: number;
  localPath: string;
  /** Ranges an earlier attempt already stored (journaled parts): never fetched again. */
  stored?: [number, number][] | undefined;
  /** The most its upload asks for at once (Sink.partSize); unknown: S3's smallest parts for its size. */
  part?: number | undefined;
}

export interface WindowOptions {
  files: WindowFile[];
  pieceLength: number;
  budget: ScratchBudget;
  /** Selects bytes [start, end) of file `index` for download. */
  select(index: number, start: number, end: number): void;
  /** Frees part of a scratch file; undefined when the disk cannot (files are then freed whole). */
  holes: HolePuncher | undefined;
  /**
   * Sends file `index`'s pieces into a ring from now on (Download.useRing);
   * returns the ring file's path. Absent: no file streams through a ring.
   */
  useRing?(index: number, ring: Ring): string;
  /** This job's share of the budget for reading ahead (the budget over the jobs running). */
  share(): number;
  /** The job waits for local disk (or no longer does: undefined). */
  onWait(wait: DiskWait | undefined): void;
  signal: AbortSignal;
  log: Logger;
  /**
   * Keep each file on disk when stored, the budget still held for it (the job
   * will seed back from disk). Only when everything fits at once: a
   * streaming window frees bytes as they are stored, whatever this says.
   */
  keep?: boolean;
}

/** A range an upload asks for at once cannot fit the file's scratch ring, however much of it is stored. */
export class RingTooSmallError extends PermanentJobError {
  constructor(span: number, ring: number) {
    super(
      `The upload asked for ${formatBytes(span)} of the file at once, more than fits the ${formatBytes(ring)} of local disk it streams through. Raise this worker's scratch budget (WORKER_SCRATCH_BUDGET_BYTES) or run fewer jobs at once.`,
    );
    this.name = "RingTooSmallError";
  }
}

/**
 * The smallest ring worth streaming a file through: two of its upload's parts
 * (one sent while the next arrives) and a piece. Parts of unknown size are
 * taken as the smallest S3 allows for the file.
 */
export function ringFloor(fileSize: number, pieceLength: number, part?: number): number {
  const size = part || partSizeFor(fileSize, 5 * 1024 * 1024);
  return Math.ceil((2 * size + pieceLength) / pieceLength) * pieceLength;
}

interface RingState {
  ring: Ring;
  path: string;
  /** Budget held for the ring file (0 until its first cycle). */
  held: number;
  /** A smaller cycle started: its ring file shrinks once the file is stored up to `after`. */
  shrink?: { size: number; after: number } | undefined;
  /** Selections waiting for stored bytes to free ring positions. */
  waiters: (() => void)[];
  /** The longest range an upload has asked for at once. */
  span: number;
}

/** Bytes an upload needed again were already freed in this attempt. */
export class RangeGoneError extends Error {
  constructor(path: string, start: number, end: number) {
    super(
      `bytes ${start}-${end} of ${path} were freed after being stored; the job starts again to fetch them`,
    );
    this.name = "RangeGoneError";
  }
}

interface FileState {
  file: WindowFile;
  /** Bytes [0, covered) are selected and reserved (piece-aligned, clipped to the file). */
  covered: number;
  /** Freed ranges, sorted and disjoint. */
  freed: [number, number][];
  /** Ranges handed to uploads in memory and never written (handoff.ts), sorted and disjoint. */
  unwritten: [number, number][];
  done: boolean;
  /** Extensions run one at a time per file. */
  extending: Promise<void>;
  /** The file streams through a ring (streaming windows only). */
  ring?: RingState | undefined;
}

export class Window {
  readonly #opts: WindowOptions;
  readonly #files = new Map<number, FileState>();
  readonly #order: FileState[];
  /** Budget held by this job. */
  #held = 0;
  #streaming = false;
  #waiting = false;
  #closed = false;
  #pumping = false;

  constructor(opts: WindowOptions) {
    this.#opts = opts;
    this.#order = opts.files.map((file) => ({
      file,
      covered: 0,
      freed: (file.stored ?? []).map(([a, b]) => [a, b] as [number, number]).sort((x, y) => x[0] - y[0]),
      unwritten: [],
      done: false,
      extending: Promise.resolve(),
    }));
    for (const state of this.#order) this.#files.set(state.file.index, state);
  }

  /** Whether pieces are fetched in a moving window (false: everything was selected at once). */
  get streaming(): boolean {
    return this.#streaming;
  }

  get held(): number {
    return this.#held;
  }

  /** Whether the job waits for local disk now. */
  get waiting(): boolean {
    return this.#waiting;
  }

  /**
   * Takes the budget for everything if it fits now (or must: the disk cannot
   * free part of a file), otherwise one piece of slack and starts the window.
   * One piece of slack covers a piece that straddles two files, written whole.
   */
  async start(): Promise<void> {
    const { budget, pieceLength, holes } = this.#opts;
    // Ranges an earlier attempt stored are neither fetched nor reserved.
    const total = this.#order.reduce((sum, s) => sum + this.#gapBytes(s, 0, s.file.size), 0);
    if (total === 0 || (await budget.tryAcquire(total))) return this.#selectAll(total);
    if (!holes) {
      // Without hole punching a file's bytes can only go all at once, when it is stored.
      await this.#acquire(total);
      return this.#selectAll(total);
    }
    this.#streaming = true;
    await this.#acquire(Math.min(pieceLength, budget.total));
    await this.#ringLargeFiles();
    this.#opts.log.info(
      { total, budget: budget.total, share: this.#opts.share() },
      "streaming the download through a window of the scratch budget",
    );
    this.#pump();
  }

  /**
   * Files too large for the job's share stream through rings, where the share
   * can hold a few parts. Not a file whose plain scratch file exists: a
   * restart re-verified pieces there, and uploads must find them.
   */
  async #ringLargeFiles(): Promise<void> {
    const { useRing, pieceLength } = this.#opts;
    if (!useRing) return;
    const share = this.#opts.share();
    for (const state of this.#order) {
      const { file } = state;
      if (file.size <= share || share - pieceLength < ringFloor(file.size, pieceLength, file.part)) continue;
      if (await exists(file.localPath)) continue;
      const ring = new Ring(file.size, file.offset, pieceLength);
      const path = useRing(file.index, ring);
      // A ring file an earlier attempt left holds nothing this one trusts.
      await removeFile(path);
      state.ring = { ring, path, held: 0, waiters: [], span: 0 };
    }
  }

  /** The ring file of file `index`, when it streams through one (what its upload reads). */
  ringOf(index: number): { ring: Ring; path: string } | undefined {
    const r = this.#files.get(index)?.ring;
    return r && { ring: r.ring, path: r.path };
  }

  #selectAll(total: number): void {
    this.#held += total;
    for (const state of this.#order) {
      this.#selectGaps(state, 0, state.file.size);
      state.covered = state.file.size;
    }
  }

  /** Selects the parts of [from, to) an earlier attempt did not store; returns their bytes. */
  #selectGaps(state: FileState, from: number, to: number): number {
    let bytes = 0;
    let at = from;
    for (const [a, b] of [...state.freed, [to, to] as [number, number]]) {
      if (b <= at) continue;
      const end = Math.min(a, to);
      if (end > at) {
        this.#opts.select(state.file.index, at, end);
        bytes += end - at;
      }
      at = Math.max(at, b);
      if (at >= to) break;
    }
    return bytes;
  }

  /** Bytes of [from, to) not already stored or freed. */
  #gapBytes(state: FileState, from: number, to: number): number {
    let bytes = to - from;
    for (const [a, b] of state.freed) bytes -= Math.max(0, Math.min(b, to) - Math.max(a, from));
    return bytes;
  }

  /** Resolves once bytes [start, end) of file `index` are selected (reserving them first, waiting if need be). */
  async need(index: number, start: number, end: number): Promise<void> {
    const state = this.#state(index);
    if (overlaps(state.freed, start, end)) throw new RangeGoneError(state.file.localPath, start, end);
    if (end <= state.covered) return;
    if (!state.ring) return this.#extend(state, end, true);
    state.ring.span = Math.max(state.ring.span, end - start);
    await this.#extend(state, end, true);
    // The ring is sized now: read ahead into it.
    this.#pump();
  }

  /**
   * Bytes [start, end) of file `index` went to an upload in memory and not to
   * disk: an upload that needs them again in this attempt cannot have them.
   */
  unwritten(index: number, start: number, end: number): void {
    const state = this.#files.get(index);
    if (state) addRange(state.unwritten, start, end);
  }

  /**
   * An upload claims bytes [start, end) of file `index` (handoff.ts): throws
   * RangeGoneError if some of them already went to an earlier claim in memory
   * only, since their pieces will not come again in this attempt.
   */
  claimable(index: number, start: number, end: number): void {
    const state = this.#state(index);
    if (overlaps(state.unwritten, start, end)) throw new RangeGoneError(state.file.localPath, start, end);
  }

  /** Bytes of file `index` that went to its upload in memory only. */
  handedOver(index: number): number {
    return (this.#files.get(index)?.unwritten ?? []).reduce((sum, [a, b]) => sum + b - a, 0);
  }

  /** Whether stored files stay on disk (for seeding), so every piece must be written there. */
  get keepsFiles(): boolean {
    return this.#keeps;
  }

  /** Bytes [start, end) of file `index` are stored: their local copy goes and the budget gets them back. */
  async stored(index: number, start: number, end: number): Promise<void> {
    const state = this.#state(index);
    if (!this.#streaming || state.done) return;
    if (state.ring) {
      // Recorded even beyond what is selected (a part an earlier attempt stored
      // that the journal read at the start lacked): the ring's first byte not
      // stored must move past it, or the ring would wait for it forever.
      if (addRange(state.freed, Math.max(0, start), Math.min(end, state.file.size)) > 0)
        await this.#ringStored(state, state.ring);
      return;
    }
    const from = Math.max(0, start);
    const to = Math.min(end, state.covered);
    if (to <= from) return;
    const gained = addRange(state.freed, from, to);
    if (gained === 0) return;
    await this.#opts.holes?.punch(state.file.localPath, from, to - from);
    this.#give(gained);
    this.#pump();
  }

  /** The whole file is stored: delete it and give back what it still held (unless kept for seeding). */
  async fileDone(index: number): Promise<void> {
    const state = this.#state(index);
    if (state.done) return;
    state.done = true;
    if (this.#keeps) return;
    if (state.ring) {
      await removeFile(state.ring.path);
      this.#give(state.ring.held);
      state.ring.held = 0;
      this.#wake(state.ring);
    } else {
      await removeFile(state.file.localPath);
      this.#give(this.#gapBytes(state, 0, state.covered));
    }
    this.#pump();
  }

  get #keeps(): boolean {
    return (this.#opts.keep ?? false) && !this.#streaming;
  }

  /**
   * The files were kept: the budget they hold passes to the caller (seeding
   * gives it back when it ends) and `close` no longer releases it. Undefined
   * when nothing was kept.
   */
  handOver(): number | undefined {
    if (!this.#keeps || this.#closed) return undefined;
    const held = this.#held;
    this.#held = 0;
    return held;
  }

  /** Gives back everything still held (the attempt ended). */
  close(): void {
    this.#closed = true;
    this.#give(this.#held);
    for (const state of this.#order) if (state.ring) this.#wake(state.ring);
  }

  #state(index: number): FileState {
    const state = this.#files.get(index);
    if (!state) throw new Error(`file #${index} is not in this job's window`);
    return state;
  }

  #give(bytes: number): void {
    const amount = Math.min(bytes, this.#held);
    if (amount <= 0) return;
    this.#held -= amount;
    this.#opts.budget.release(amount);
  }

  async #acquire(bytes: number): Promise<void> {
    await this.#opts.budget.acquire(bytes, this.#opts.signal, (wait) => {
      this.#waiting = true;
      this.#opts.onWait(wait);
    });
    this.#held += bytes;
    if (this.#waiting) {
      this.#waiting = false;
      this.#opts.onWait(undefined);
    }
  }

  /** The end of the piece holding byte `at` of the file, clipped to the file. */
  #pieceEnd(file: WindowFile, at: number): number {
    const pl = this.#opts.pieceLength;
    const absolute = Math.ceil((file.offset + at) / pl) * pl;
    return Math.min(file.size, absolute - file.offset);
  }

  /**
   * Covers the file up to `end` (piece-aligned). `wait`: take the budget even
   * if that means waiting; otherwise only if it is free now (reading ahead).
   */
  #extend(state: FileState, end: number, wait: boolean): Promise<void> {
    const next = state.extending.then(async () => {
      if (end <= state.covered || this.#closed) return;
      let to = this.#pieceEnd(state.file, end);
      if (state.ring) {
        const reach = await this.#ringReach(state, state.ring, to, wait);
        if (reach <= state.covered) return;
        to = reach;
      } else {
        const bytes = this.#gapBytes(state, state.covered, to);
        if (bytes > 0) {
          if (wait) await this.#acquire(bytes);
          else if (await this.#opts.budget.tryAcquire(bytes)) this.#held += bytes;
          else return;
        }
      }
      if (this.#closed) return;
      this.#selectGaps(state, state.covered, to);
      state.covered = to;
    });
    state.extending = next.catch(() => {});
    return next;
  }

  /** Reads ahead, in file order, while this job is within its share and the budget has room. */
  #pump(): void {
    if (!this.#streaming || this.#pumping || this.#closed) return;
    this.#pumping = true;
    const step = Math.max(
      this.#opts.pieceLength,
      Math.min(64 * 1024 * 1024, Math.floor(this.#opts.budget.total / 8)),
    );
    void (async () => {
      try {
        for (const state of this.#order) {
          while (!state.done && state.covered < state.file.size && !this.#closed) {
            // A ring is sized once its upload has asked for a first part (it must hold two).
            if (state.ring && state.ring.held === 0 && state.ring.span === 0) return;
            if (!state.ring?.held && this.#held + step > this.#opts.share()) return;
            const before = state.covered;
            await this.#extend(state, Math.min(state.file.size, state.covered + step), false);
            if (state.covered === before) return; // no room now; a release pumps again
          }
        }
      } catch (error) {
        this.#opts.log.debug({ err: error }, "reading ahead stopped");
      } finally {
        this.#pumping = false;
      }
    })();
  }

  /**
   * How far file bytes may be selected towards `to` (a piece end): reserves
   * the ring on its first use, starts cycles as the selection reaches them,
   * and stops where the ring still holds bytes not stored. `wait`: wait for
   * the budget and for stored bytes until `to` is reachable.
   */
  async #ringReach(state: FileState, r: RingState, to: number, wait: boolean): Promise<number> {
    const { ring } = r;
    if (r.held === 0) {
      // Bytes an earlier attempt stored are skipped: the first cycle starts at the
      // piece holding the first byte not stored (the whole piece is fetched and written).
      const base = Math.max(ring.headEnd, this.#pieceStart(state.file, this.#ringLow(state, ring)));
      const size = Math.min(this.#ringSize(state, r, Number.POSITIVE_INFINITY), ring.tailStart - base);
      const bytes = ring.footprint(size);
      if (wait) await this.#acquire(bytes);
      else if (await this.#opts.budget.tryAcquire(bytes)) this.#held += bytes;
      else return state.covered;
      r.held = bytes;
      ring.addCycle(size, base);
    }
    for (;;) {
      if (r.span + this.#opts.pieceLength > ring.size && ring.end < ring.tailStart)
        throw new RingTooSmallError(r.span, ring.size);
      const limit = this.#ringLimit(state, r, to);
      if (limit >= to || !wait || this.#closed || state.done) return Math.min(to, limit);
      await new Promise<void>((resolve) => r.waiters.push(resolve));
    }
  }

  /** The first byte of the ring proper not yet stored (the ring's end of the file when all are). */
  #ringLow(state: FileState, ring: Ring): number {
    let low = ring.headEnd;
    for (const [a, b] of state.freed) {
      if (a > low) break;
      low = Math.max(low, b);
    }
    return Math.min(low, ring.tailStart);
  }

  /**
   * The furthest piece end before `to` whose bytes may go into the ring now,
   * starting the next cycle if the selection reaches it. A byte at ring
   * position p of cycle k replaces the byte at position p of cycle k-1,
   * which must be stored: below the first byte not stored (`low`).
   */
  #ringLimit(state: FileState, r: RingState, to: number): number {
    const { ring } = r;
    const low = this.#ringLow(state, ring);
    if (low >= ring.tailStart) return to;
    let last = ring.cycles.at(-1)!;
    if (to > ring.end && ring.end < ring.tailStart && low >= last.base) {
      // The selection goes past the last cycle, and the one before it is stored: start the
      // next, from the piece holding the first byte not stored if everything before is.
      const base = Math.max(ring.end, this.#pieceStart(state.file, low));
      ring.addCycle(this.#ringSize(state, r, last.size), base);
      if (r.shrink === undefined && ring.size < last.size)
        r.shrink = { size: ring.size, after: last.base + last.size };
      last = ring.cycles.at(-1)!;
    }
    const before = ring.cycles.at(-2);
    let limit = last.base + last.size;
    // Bytes of the last cycle replace those of the cycle before it, position for position.
    if (before) limit = Math.min(limit, last.base + Math.max(0, low - before.base));
    // The tail's bytes are kept apart from the ring: selectable once the ring reaches them.
    if (limit >= ring.tailStart) return to;
    return Math.min(to, this.#pieceStart(state.file, limit));
  }

  /**
   * The next cycle's size: the job's share, no more than the ring had, at
   * least its floor where the budget holds it, and at least one part and a
   * piece (a budget that cannot hold that fails the job, saying so).
   */
  #ringSize(state: FileState, r: RingState, most: number): number {
    const pl = this.#opts.pieceLength;
    const others = this.#held - r.held;
    const down = (bytes: number) => Math.floor(bytes / pl) * pl;
    const fair = down(this.#opts.share() - others - r.ring.edges);
    const room = down(this.#opts.budget.total - others - r.ring.edges);
    const floor = Math.min(ringFloor(state.file.size, pl, Math.max(r.span, state.file.part ?? 0)), room);
    const least = Math.ceil((r.span + pl) / pl) * pl;
    return Math.min(most, Math.max(least, floor, fair));
  }

  /** Bytes of a ring file were stored: wake what waits for ring positions, give back a shrunk ring's rest. */
  async #ringStored(state: FileState, r: RingState): Promise<void> {
    const shrink = r.shrink;
    if (shrink && this.#ringLow(state, r.ring) >= shrink.after) {
      r.shrink = undefined;
      const keep = r.ring.footprint(shrink.size);
      await truncate(r.path, keep).catch(() => {});
      this.#give(r.held - keep);
      r.held = keep;
    }
    this.#wake(r);
    this.#pump();
  }

  #wake(r: RingState): void {
    for (const wake of r.waiters.splice(0)) wake();
  }

  /** The start of the piece holding byte `at` of the file, clipped to the file. */
  #pieceStart(file: WindowFile, at: number): number {
    const pl = this.#opts.pieceLength;
    const absolute = Math.floor((file.offset + at) / pl) * pl;
    return Math.max(0, absolute - file.offset);
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
