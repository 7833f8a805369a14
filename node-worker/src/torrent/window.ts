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
// Freed bytes are gone for this attempt, and so are bytes an upload took in
// memory without their being written (handoff.ts): webtorrent still counts their pieces
// as verified. An upload that must read freed bytes again (the provider lost
// its upload session and it starts the file over) gets RangeGoneError, and
// the job is handed back; the next attempt re-verifies what is on disk and
// fetches what it needs again.

import type { Logger } from "pino";
import { type DiskWait, removeFile, type ScratchBudget } from "../scratch.ts";
import type { HolePuncher } from "./holes.ts";
import { addRange, overlaps } from "./ranges.ts";

export interface WindowFile {
  /** Index in the torrent. */
  index: number;
  size: number;
  /** Byte offset of the file in the torrent (pieces are counted from there). */
  offset: number;
  localPath: string;
  /** Ranges an earlier attempt already stored (journaled parts): never fetched again. */
  stored?: [number, number][];
}

export interface WindowOptions {
  files: WindowFile[];
  pieceLength: number;
  budget: ScratchBudget;
  /** Selects bytes [start, end) of file `index` for download. */
  select(index: number, start: number, end: number): void;
  /** Frees part of a scratch file; undefined when the disk cannot (files are then freed whole). */
  holes: HolePuncher | undefined;
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
    this.#opts.log.info(
      { total, budget: budget.total, share: this.#opts.share() },
      "streaming the download through a window of the scratch budget",
    );
    this.#pump();
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
    await this.#extend(state, end, true);
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
    await removeFile(state.file.localPath);
    this.#give(this.#gapBytes(state, 0, state.covered));
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
      const to = this.#pieceEnd(state.file, end);
      const bytes = this.#gapBytes(state, state.covered, to);
      if (bytes > 0) {
        if (wait) await this.#acquire(bytes);
        else if (await this.#opts.budget.tryAcquire(bytes)) this.#held += bytes;
        else return;
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
            if (this.#held + step > this.#opts.share()) return;
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
}
