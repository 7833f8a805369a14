import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ScratchBudget } from "../scratch.ts";
import { HolePuncher } from "./holes.ts";
import { Window } from "./window.ts";

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
