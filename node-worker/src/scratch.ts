// Local disk for downloads: one folder per job under WORKER_SCRATCH_DIR, and a
// budget of bytes this process may fill at once. A job reserves what its
// remaining files need before it starts and gives bytes back as each file is
// uploaded and deleted.
import { mkdir, readdir, readFile, rm, truncate, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { PermanentJobError } from "./sinks/index.ts";

function formatBytes(n: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}

export interface Reservation {
  readonly bytes: number;
  release(bytes: number): void;
  releaseAll(): void;
}

export class ScratchBudget {
  readonly total: number;
  #used = 0;
  #waiters: { bytes: number; wake: () => void }[] = [];

  constructor(total: number) {
    this.total = total;
  }

  get used(): number {
    return this.#used;
  }

  /** Waits until `bytes` fit; fails at once if they never can. */
  async reserve(bytes: number, signal: AbortSignal, onWait?: () => void): Promise<Reservation> {
    if (bytes > this.total) {
      throw new PermanentJobError(
        `The selected files need ${formatBytes(bytes)} of local disk, more than this worker's scratch budget of ${formatBytes(this.total)}.`,
      );
    }
    let waited = false;
    while (this.#used + bytes > this.total) {
      signal.throwIfAborted();
      if (!waited) onWait?.();
      waited = true;
      await new Promise<void>((resolve, reject) => {
        const waiter = { bytes, wake: resolve };
        this.#waiters.push(waiter);
        signal.addEventListener(
          "abort",
          () => {
            this.#waiters = this.#waiters.filter((w) => w !== waiter);
            reject(signal.reason);
          },
          { once: true },
        );
      });
    }
    this.#used += bytes;
    let held = bytes;
    const give = (n: number) => {
      const amount = Math.min(n, held);
      held -= amount;
      this.#used -= amount;
      if (amount > 0) this.#wake();
    };
    return {
      bytes,
      release: give,
      releaseAll: () => give(held),
    };
  }

  #wake(): void {
    const waiting = this.#waiters.splice(0);
    for (const w of waiting) w.wake();
  }
}

export function scratchDirFor(root: string, jobId: string): string {
  return join(root, jobId);
}

/** Marks a job's scratch folder as this stack's, so only this stack's workers ever delete it. */
const OWNER_FILE = ".torreclou-stack";

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
  const { stat } = await import("node:fs/promises");
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
