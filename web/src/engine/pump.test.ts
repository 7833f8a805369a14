import { describe, expect, it } from "vitest";
import { partsToUpload } from "./layout.ts";
import { type ByteSource, pumpFile, READ_AHEAD } from "./pump.ts";

/** A file in memory; records which slices are asked for and what was released. */
function memorySource(file: Uint8Array) {
  const open = new Set<number>();
  let maxOpen = 0;
  const released: number[] = [];
  const source: ByteSource = {
    open(_index, slice) {
      open.add(slice.start);
      maxOpen = Math.max(maxOpen, open.size);
      return {
        read: async () => {
          open.delete(slice.start);
          return file.slice(slice.start, slice.end);
        },
        cancel: () => open.delete(slice.start),
      };
    },
    release: (_index, upTo) => released.push(upTo),
  };
  return { source, released, maxOpen: () => maxOpen, open };
}

describe("pumpFile", () => {
  const file = Uint8Array.from({ length: 23 }, (_, i) => i);
  const slices = partsToUpload(file.length, 5, [{ partNumber: 2, size: 5 }]);

  it("uploads each slice's bytes in order, never more than inFlight at once, nor more than READ_AHEAD asked for", async () => {
    const { source, released, maxOpen } = memorySource(file);
    const got = new Map<number, number[]>();
    let running = 0;
    let maxRunning = 0;
    const gates: (() => void)[] = [];
    let arrived: (() => void) | undefined;
    let stored: (() => void) | undefined;
    const pumping = pumpFile({
      source,
      fileIndex: 0,
      slices,
      inFlight: 2,
      signal: new AbortController().signal,
      upload: async (part, bytes) => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        const gated = new Promise<void>((open) => gates.push(open));
        arrived?.();
        await gated;
        got.set(part.partNumber, [...bytes]);
        running--;
        stored?.();
      },
    });
    // Open the gates one by one, each once as many uploads wait as may run at once.
    while (got.size < slices.length) {
      const waiting = Math.min(2, slices.length - got.size);
      while (gates.length < waiting) await new Promise<void>((r) => (arrived = r));
      const before = got.size;
      gates.shift()?.();
      while (got.size === before) await new Promise<void>((r) => (stored = r));
    }
    await pumping;
    expect([...got.keys()].sort()).toEqual([1, 3, 4, 5]);
    expect(got.get(3)).toEqual([10, 11, 12, 13, 14]);
    expect(got.get(5)).toEqual([20, 21, 22]);
    expect(maxRunning).toBe(2);
    expect(maxOpen()).toBeLessThanOrEqual(READ_AHEAD);
    expect(released).toEqual([5, 15, 20, 23]);
  });

  it("stops at the first failed upload and lets go of what it asked for", async () => {
    const { source, open } = memorySource(file);
    await expect(
      pumpFile({
        source,
        fileIndex: 0,
        slices,
        inFlight: 1,
        signal: new AbortController().signal,
        upload: async (part) => {
          if (part.partNumber === 3) throw new Error("refused");
        },
      }),
    ).rejects.toThrow("refused");
    expect(open.size).toBe(0);
  });
});
