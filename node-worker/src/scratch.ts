// Local disk for downloads: one folder per job under WORKER_SCRATCH_DIR, and a
// budget of bytes all worker processes sharing that folder may fill at once.
// A job takes bytes for the window of pieces it fetches next and gives them
// back as their bytes are stored (torrent/window.ts).
import { randomUUID } from "node:crypto";
import {
  mkdir,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  statfs,
  truncate,
  unlink,
  writeFile,
} from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { lock } from "proper-lockfile";
import { PermanentJobError } from "./sinks/index.ts";

export function formatBytes(n: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Where the budget is shared and how full the disk is (a seam for tests). */
export interface BudgetOptions {
  /** Bytes of scratch all worker processes using `root` may fill together. */
  total: number;
  /**
   * The scratch root. Every process using it shares the budget through a
   * ledger file there (under a lock), so replicas on one disk cannot
   * overcommit it; each reservation is also checked against the disk's free
   * space. Without it the budget is this process's alone (unit tests).
   */
  root?: string | undefined;
  /** This process's name in the ledger (unique per process). */
  holder?: string;
  /** Free bytes on the disk holding `root` (default: statfs). */
  freeSpace?: (root: string) => Promise<number>;
}

/** Why a reservation waits, for the person watching the job. */
export type DiskWait = { reason: string };

const LEDGER = ".scratch-ledger.json";
/** A holder that has not written for this long is gone (killed): its bytes no longer count. */
const HOLDER_STALE_MS = 30_000;
const HEARTBEAT_MS = 10_000;
/** How often a waiting reservation looks again at what other processes hold. */
const SHARED_POLL_MS = 1000;

interface Ledger {
  /** `waiting`: the holder has a reservation waiting for room (its rings then shrink elsewhere). */
  [holder: string]: { bytes: number; at: number; waiting?: boolean };
}

async function statfsFree(root: string): Promise<number> {
  const s = await statfs(root);
  return Number(s.bavail) * Number(s.bsize);
}

/**
 * Local disk for downloads, in bytes. Jobs take bytes before their pieces are
 * fetched and give them back once those bytes are stored and deleted, so the
 * scratch folder never holds more than `total` — whatever the size of the
 * torrents.
 */
export class ScratchBudget {
  readonly total: number;
  readonly #root: string | undefined;
  readonly #holder: string;
  readonly #freeSpace: (root: string) => Promise<number>;
  #used = 0;
  /** Reservations of this process waiting for room. */
  #waiting = 0;
  /** Other processes holding or waiting for part of the budget, when the ledger was last read. */
  #othersActive = 0;
  #waiters: (() => void)[] = [];
  #ledgerWrites: Promise<void> = Promise.resolve();
  #heartbeat: NodeJS.Timeout | undefined;

  constructor(options: number | BudgetOptions) {
    const opts = typeof options === "number" ? { total: options } : options;
    this.total = opts.total;
    this.#root = opts.root;
    this.#holder = opts.holder ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
    this.#freeSpace = opts.freeSpace ?? statfsFree;
  }

  /** Bytes this process holds. */
  get used(): number {
    return this.#used;
  }

  /**
   * Processes sharing the budget now, this one included: those holding part
   * of it or waiting for some, as the ledger said when last read (at each
   * reservation, release and heartbeat).
   */
  get sharers(): number {
    return 1 + this.#othersActive;
  }

  /**
   * Takes `bytes` once they fit, waiting (and telling `onWait` why, once per
   * reason) while other jobs or processes hold the budget or the disk is full.
   * Fails at once if they never can fit the budget.
   */
  async acquire(bytes: number, signal: AbortSignal, onWait?: (wait: DiskWait) => void): Promise<void> {
    if (bytes > this.total) {
      throw new PermanentJobError(
        `The job needs ${formatBytes(bytes)} of local disk at once, more than this worker's scratch budget of ${formatBytes(this.total)}.`,
      );
    }
    let told: string | undefined;
    this.#waiting++;
    try {
      for (;;) {
        signal.throwIfAborted();
        const refusal = await this.#take(bytes, true);
        if (refusal === undefined) return;
        if (refusal !== told) onWait?.({ reason: refusal });
        told = refusal;
        await this.#nextChange(signal);
      }
    } finally {
      this.#waiting--;
    }
  }

  /** Takes `bytes` if they fit now; false otherwise. */
  async tryAcquire(bytes: number): Promise<boolean> {
    return (await this.#take(bytes, false)) === undefined;
  }

  /** Gives bytes back (their local copies are deleted). */
  release(bytes: number): void {
    const amount = Math.min(Math.max(0, bytes), this.#used);
    if (amount === 0) return;
    this.#used -= amount;
    if (this.#root) void this.#writeLedger();
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Stops the heartbeat and removes this process from the ledger. */
  async close(): Promise<void> {
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    this.#used = 0;
    if (this.#root) await this.#writeLedger();
  }

  /** Undefined when taken; otherwise why not, in words. `acquiring`: an acquire (counted in #waiting) asks. */
  async #take(bytes: number, acquiring: boolean): Promise<string | undefined> {
    const root = this.#root;
    if (!root) {
      if (this.#used + bytes > this.total)
        return `the scratch budget (${formatBytes(this.total)}) is in use by other jobs`;
      this.#used += bytes;
      return undefined;
    }
    return this.#withLedger(root, async (ledger) => {
      const now = Date.now();
      const others = this.#readOthers(ledger, now);
      const all = others + this.#used;
      const refused = (why: string) => {
        // Seen waiting, so that holders elsewhere shrink their rings.
        if (acquiring) ledger[this.#holder] = { bytes: this.#used, at: now, waiting: true };
        return why;
      };
      if (others + this.#used + bytes > this.total) {
        return refused(`the scratch budget (${formatBytes(this.total)}) is in use by other jobs`);
      }
      // Reserved bytes not yet written will still take disk: they count against what is free.
      const [free, written] = await Promise.all([this.#freeSpace(root), diskUsage(root)]);
      const promised = Math.max(0, all - written);
      if (bytes > free - promised) {
        return refused(
          `the disk has ${formatBytes(Math.max(0, free - promised))} free, ${formatBytes(bytes)} needed`,
        );
      }
      this.#used += bytes;
      ledger[this.#holder] = this.#entry(now, this.#waiting - (acquiring ? 1 : 0) > 0);
      this.#startHeartbeat();
      return undefined;
    });
  }

  /** Bytes other live holders hold (stale ones are dropped); counts the processes active. */
  #readOthers(ledger: Ledger, now: number): number {
    let bytes = 0;
    let active = 0;
    for (const [holder, entry] of Object.entries(ledger)) {
      if (holder === this.#holder) continue;
      if (now - entry.at > HOLDER_STALE_MS) {
        delete ledger[holder];
        continue;
      }
      bytes += entry.bytes;
      if (entry.bytes > 0 || entry.waiting) active++;
    }
    this.#othersActive = active;
    return bytes;
  }

  #entry(now: number, waiting: boolean): Ledger[string] {
    return waiting ? { bytes: this.#used, at: now, waiting } : { bytes: this.#used, at: now };
  }

  #startHeartbeat(): void {
    if (this.#heartbeat) return;
    this.#heartbeat = setInterval(() => {
      if (this.#used > 0) void this.#writeLedger();
    }, HEARTBEAT_MS);
    this.#heartbeat.unref();
  }

  /** Records this process's current holding (serialised: the last write wins in order). */
  #writeLedger(): Promise<void> {
    const root = this.#root;
    if (!root) return Promise.resolve();
    this.#ledgerWrites = this.#ledgerWrites
      .then(() =>
        this.#withLedger(root, async (ledger) => {
          const now = Date.now();
          this.#readOthers(ledger, now);
          if (this.#used > 0 || this.#waiting > 0) ledger[this.#holder] = this.#entry(now, this.#waiting > 0);
          else delete ledger[this.#holder];
        }),
      )
      .catch(() => {});
    return this.#ledgerWrites;
  }

  async #withLedger<T>(root: string, fn: (ledger: Ledger) => Promise<T>): Promise<T> {
    await mkdir(root, { recursive: true });
    const path = join(root, LEDGER);
    const unlock = await lock(path, {
      realpath: false,
      stale: 10_000,
      retries: { retries: 100, minTimeout: 5, maxTimeout: 100 },
    });
    try {
      const ledger = await readFile(path, "utf8").then(
        (text) => JSON.parse(text) as Ledger,
        () => ({}) as Ledger,
      );
      const result = await fn(ledger);
      const temp = `${path}.${process.pid}.tmp`;
      await writeFile(temp, JSON.stringify(ledger));
      await rename(temp, path);
      return result;
    } finally {
      await unlock();
    }
  }

  /** Resolves when this process gives bytes back, or (shared) after a short look-again interval. */
  #nextChange(signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", aborted);
        resolve();
      };
      const aborted = () => {
        clearTimeout(timer);
        this.#waiters = this.#waiters.filter((w) => w !== done);
        reject(signal.reason);
      };
      const timer = this.#root ? setTimeout(done, SHARED_POLL_MS) : undefined;
      this.#waiters.push(done);
      signal.addEventListener("abort", aborted, { once: true });
    });
  }
}

export function scratchDirFor(root: string, jobId: string): string {
  return join(root, jobId);
}

/** Marks a job's scratch folder as this stack's, so only this stack's workers ever delete it. */
const OWNER_FILE = ".torreclou-stack";
/** In a finished job's folder while a worker seeds from it: that worker's queue consumer name. */
const SEEDING_FILE = ".seeding";

/** Creates a job's scratch folder (if needed) with the mark of the stack that owns it. */
export async function prepareScratchDir(dir: string, stackId: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  if ((await ownerOf(dir)) !== stackId) await writeFile(join(dir, OWNER_FILE), `${stackId}\n`);
}

async function ownerOf(dir: string): Promise<string | undefined> {
  return readFile(join(dir, OWNER_FILE), "utf8").then(
    (text) => text.trim(),
    () => undefined,
  );
}

/**
 * Folders in the scratch root that this stack can prove are its own (they
 * carry its mark), for clearing leftovers of finished jobs. A folder another
 * stack's worker left in a shared root, or one without a mark, is never listed.
 */
export async function ownScratchJobs(root: string, stackId: string): Promise<string[]> {
  const own: string[] = [];
  for (const name of await scratchJobs(root)) {
    if ((await ownerOf(join(root, name))) === stackId) own.push(name);
  }
  return own;
}

/**
 * Deletes a downloaded file. Truncating first frees the blocks even while the
 * torrent still holds the file open.
 */
export async function removeFile(path: string): Promise<void> {
  await truncate(path, 0).catch(() => {});
  await unlink(path).catch(() => {});
}

/** Marks a finished job's folder as read by a seeding on worker `consumer`, so no other worker clears it. */
export async function markSeeding(dir: string, consumer: string): Promise<void> {
  await writeFile(join(dir, SEEDING_FILE), `${consumer}\n`);
}

/** The worker (queue consumer) seeding from this folder, if one marked it. */
export async function seedingHolder(dir: string): Promise<string | undefined> {
  return readFile(join(dir, SEEDING_FILE), "utf8").then(
    (text) => text.trim() || undefined,
    () => undefined,
  );
}

export async function removeDir(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true });
}

/** Folders in the scratch root (job ids). */
async function scratchJobs(root: string): Promise<string[]> {
  try {
    return (await readdir(root, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch {
    return [];
  }
}

/** Bytes actually on disk under a folder (allocated blocks, so sparse files count what they use). */
export async function diskUsage(path: string): Promise<number> {
  let total = 0;
  let entries: import("node:fs").Dirent[];
  try {
    entries = await readdir(path, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const entry of entries) {
    const full = join(path, entry.name);
    if (entry.isDirectory()) total += await diskUsage(full);
    else if (entry.isFile())
      total += await stat(full).then(
        (s) => s.blocks * 512,
        () => 0,
      );
  }
  return total;
}
