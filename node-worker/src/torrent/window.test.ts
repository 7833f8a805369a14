import { closeSync, openSync, writeSync } from "node:fs";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ScratchBudget } from "../scratch.ts";
import { LocalReader } from "../sinks/local.ts";
import { HolePuncher } from "./holes.ts";
import { type Ring, ringPath } from "./ring.ts";
import { RingTooSmallError, Window } from "./window.ts";

const MiB = 1024 * 1024;
const silent = pino({ enabled: false });
const holes = new HolePuncher();
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "torreclou-window-test-"));
});
afterAll(async () => {
  holes.close();
  await rm(dir, { recursive: true, force: true });
});

/** A window over one 8 MiB file, already on disk, whose budget holds it all. */
async function wholeWindow(name: string, keep: boolean) {
  const localPath = join(dir, name);
  await writeFile(localPath, Buffer.alloc(8 * MiB, 1), { flush: true });
  const budget = new ScratchBudget(64 * MiB);
  const selected: [number, number][] = [];
  const window = new Window({
    files: [{ index: 0, size: 8 * MiB, offset: 0, localPath }],
    pieceLength: MiB,
    budget,
    select: (_index, start, end) => selected.push([start, end]),
    holes,
    share: () => budget.total,
    onWait: () => {},
    signal: new AbortController().signal,
    log: silent,
    keep,
  });
  await window.start();
  return { window, budget, selected, localPath };
}

describe("a window whose budget holds the whole selection", () => {
  it("selects everything at once and frees each file whole, not part by part", async () => {
    expect(await holes.works(dir)).toBe(true);
    const { window, budget, selected, localPath } = await wholeWindow("whole", false);
    expect(window.streaming).toBe(false);
    expect(selected).toEqual([[0, 8 * MiB]]);
    expect(budget.used).toBe(8 * MiB);
    const before = (await stat(localPath)).blocks;

    // A stored part stays: a punched hole would first write its dirty pages to the disk.
    await window.stored(0, 0, 3 * MiB);
    expect((await stat(localPath)).blocks).toBe(before);
    expect(budget.used).toBe(8 * MiB);
    await window.need(0, 0, MiB);

    // The file's end deletes it and gives back all it held.
    await window.fileDone(0);
    await expect(stat(localPath)).rejects.toMatchObject({ code: "ENOENT" });
    expect(budget.used).toBe(0);
    window.close();
  });

  it("keeps every stored byte on disk when the files stay for seeding", async () => {
    const { window, budget, localPath } = await wholeWindow("kept", true);
    const before = (await stat(localPath)).blocks;
    await window.stored(0, 0, 3 * MiB);
    await window.fileDone(0);
    expect((await stat(localPath)).blocks).toBe(before);
    expect(budget.used).toBe(8 * MiB);
    expect(window.handOver()).toBe(8 * MiB);
    window.close();
  });
});

describe("a file streaming through a ring", () => {
  const KiB = 1024;
  const pieceLength = 256 * KiB;
  const part = 5 * MiB;

  /** The file's bytes [start, end): each 4-byte word holds its own offset / 4. */
  function content(start: number, end: number): Buffer {
    const from = start - (start % 4);
    const words = Buffer.alloc(end - from + 4);
    for (let at = 0; at + 4 <= words.length; at += 4) words.writeUInt32LE(((from + at) / 4) >>> 0, at);
    return words.subarray(start - from, end - from);
  }

  /**
   * A window over one file larger than the budget, with a stand-in download
   * that writes every selected piece into the ring file at once (the worst
   * case: as far ahead as the window lets it).
   */
  async function ringWindow(
    name: string,
    size: number,
    opts: { budget: number; stored?: [number, number][]; part?: number },
  ) {
    const localPath = join(dir, name);
    const budget = new ScratchBudget(opts.budget);
    let share = opts.budget;
    let ring: Ring | undefined;
    let fd: number | undefined;
    const selected: [number, number][] = [];
    const window = new Window({
      files: [{ index: 0, size, offset: 0, localPath, stored: opts.stored, part: opts.part }],
      pieceLength,
      budget,
      select: (_index, start, end) => {
        selected.push([start, end]);
        if (!ring) return;
        // Whole pieces, as the download fetches them.
        const from = Math.floor(start / pieceLength) * pieceLength;
        const to = Math.min(size, Math.ceil(end / pieceLength) * pieceLength);
        fd ??= openSync(ringPath(localPath), "w");
        for (const [position, at, length] of ring.runs(from, to))
          writeSync(fd, content(at, at + length), 0, length, position);
      },
      holes,
      useRing: (_index, r) => {
        ring = r;
        return ringPath(localPath);
      },
      share: () => share,
      onWait: () => {},
      signal: new AbortController().signal,
      log: silent,
    });
    await window.start();
    return {
      window,
      budget,
      selected,
      setShare: (bytes: number) => {
        share = bytes;
      },
      close: () => fd !== undefined && closeSync(fd),
    };
  }

  /** Uploads the file part by part, two parts in flight, checking each part's bytes when read and again when stored. */
  async function upload(
    window: Window,
    size: number,
    from: number,
    onPart?: (n: number) => void,
  ): Promise<void> {
    const file = window.ringOf(0)!;
    let reader: LocalReader | undefined;
    const inFlight: [number, number][] = [];
    const check = async (start: number, end: number) => {
      const bytes = Buffer.alloc(end - start);
      reader ??= await LocalReader.open({ localPath: file.path, ring: file.ring });
      await reader.read(bytes, start);
      expect(bytes.equals(content(start, end)), `bytes ${start}-${end}`).toBe(true);
    };
    let n = 0;
    for (let start = from; start < size; start += part) {
      const end = Math.min(size, start + part);
      await window.need(0, start, end);
      await check(start, end);
      inFlight.push([start, end]);
      if (inFlight.length === 2) {
        const [a, b] = inFlight.shift()!;
        await check(a, b);
        await window.stored(0, a, b);
      }
      onPart?.(n++);
    }
    for (const [a, b] of inFlight) {
      await check(a, b);
      await window.stored(0, a, b);
    }
    await reader?.close();
  }

  it("rewrites the ring in place, never over a byte its upload has not stored", async () => {
    const size = 64 * MiB + 12_345;
    const { window, budget, close } = await ringWindow("ring-whole", size, { budget: 16 * MiB });
    expect(window.streaming).toBe(true);
    const file = window.ringOf(0)!;
    expect(file.path).toBe(ringPath(join(dir, "ring-whole")));
    let peak = 0;
    await upload(window, size, 0, () => {
      peak = Math.max(peak, budget.used);
    });
    // It went round several times, in one ring file no larger than the budget.
    expect(file.ring.cycles.length).toBeGreaterThan(3);
    expect((await stat(file.path)).size).toBeLessThanOrEqual(16 * MiB);
    expect(peak).toBeLessThanOrEqual(16 * MiB);
    await window.fileDone(0);
    await expect(stat(file.path)).rejects.toMatchObject({ code: "ENOENT" });
    // What is left is the window's piece of slack, until the job ends.
    expect(budget.used).toBe(pieceLength);
    // The plain scratch file, which a restart re-verifies, was never written.
    await expect(stat(join(dir, "ring-whole"))).rejects.toMatchObject({ code: "ENOENT" });
    window.close();
    expect(budget.used).toBe(0);
    close();
  });

  it("shrinks its next cycle when the job's share shrinks, and gives the rest back once stored", async () => {
    const size = 96 * MiB;
    const { window, budget, setShare, close } = await ringWindow("ring-shrink", size, { budget: 24 * MiB });
    const used: number[] = [];
    await upload(window, size, 0, (n) => {
      if (n === 2) setShare(12 * MiB);
      used.push(budget.used);
    });
    const file = window.ringOf(0)!;
    const sizes = file.ring.cycles.map((c) => c.size);
    expect(sizes[0]).toBeGreaterThan(20 * MiB);
    expect(Math.min(...sizes.slice(0, -1))).toBeLessThanOrEqual(12 * MiB);
    // The budget held fell with the ring, and so did the ring file.
    expect(used.at(-1)).toBeLessThanOrEqual(12 * MiB);
    expect((await stat(file.path)).size).toBeLessThanOrEqual(12 * MiB);
    await window.fileDone(0);
    expect(budget.used).toBe(pieceLength);
    window.close();
    close();
  });

  it("skips what an earlier attempt stored: selects nothing there and starts its ring past it", async () => {
    const size = 48 * MiB;
    // Stored up to a part's end, inside a piece.
    const storedEnd = 20 * MiB + 100 * KiB;
    const { window, selected, close } = await ringWindow("ring-resumed", size, {
      budget: 16 * MiB,
      stored: [[0, storedEnd]],
    });
    await upload(window, size, storedEnd);
    expect(selected.every(([a]) => a >= storedEnd)).toBe(true);
    // The ring starts with the piece holding the first byte not stored: the download writes all of it.
    expect(window.ringOf(0)!.ring.cycles[0]!.base).toBe(20 * MiB);
    await window.fileDone(0);
    window.close();
    close();
  });

  it("hears of a part stored before its bytes were selected, and moves past it", async () => {
    const size = 48 * MiB;
    // The journal read at the start had parts up to 15 MiB; the upload then finds
    // the next part stored too (the provider listed it) and says so first thing.
    const { window, selected, close } = await ringWindow("ring-listed", size, {
      budget: 16 * MiB,
      stored: [[0, 15 * MiB]],
    });
    await window.stored(0, 15 * MiB, 20 * MiB);
    await upload(window, size, 20 * MiB);
    expect(selected.every(([a]) => a >= 20 * MiB)).toBe(true);
    await window.fileDone(0);
    window.close();
    close();
  });

  it("refuses a part larger than the ring, saying what to change", async () => {
    const size = 64 * MiB;
    const { window, close } = await ringWindow("ring-small", size, { budget: 16 * MiB });
    await window.need(0, 0, part);
    await expect(window.need(0, part, part + 20 * MiB)).rejects.toThrow(RingTooSmallError);
    await expect(window.need(0, part, part + 20 * MiB)).rejects.toThrow(/WORKER_SCRATCH_BUDGET_BYTES/);
    window.close();
    close();
  });

  it("takes a file into a ring only where the share holds two of its upload's parts", async () => {
    // 8 MiB: not two of S3's smallest parts (5 MiB), but many of Drive's 512 KiB chunks.
    const s3 = await ringWindow("ring-s3", 32 * MiB, { budget: 8 * MiB });
    expect(s3.window.streaming).toBe(true);
    expect(s3.window.ringOf(0)).toBeUndefined();
    s3.window.close();
    const drive = await ringWindow("ring-drive", 32 * MiB, { budget: 8 * MiB, part: 512 * KiB });
    expect(drive.window.ringOf(0)).toBeDefined();
    drive.window.close();
  });
});
