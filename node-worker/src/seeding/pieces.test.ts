// Which pieces a seeding torrent offers, and the read-only store that serves
// them: a piece reaching into a file the user did not select is never offered;
// padding is zeros; peers' block requests for one piece cost one read.
import { describe, expect, it } from "vitest";
import { type Layout, offeredPieces, spansOf } from "./pieces.ts";
import { SeedStore } from "./store.ts";

// Three files over 10-byte pieces: [0,25) [25,30) [30,52).
const layout: Layout = {
  files: [
    { index: 0, offset: 0, length: 25 },
    { index: 1, offset: 25, length: 5 },
    { index: 2, offset: 30, length: 22 },
  ],
  pieceLength: 10,
  length: 52,
};

const offered = (bits: Uint8Array, count: number) =>
  Array.from({ length: count }, (_, i) => ((bits[i >> 3]! >> (7 - (i & 7))) & 1) === 1);

describe("offered pieces", () => {
  it("lays a piece out over the files it spans", () => {
    expect(spansOf(layout, 2)).toEqual([
      { file: 0, start: 20, end: 25 },
      { file: 1, start: 0, end: 5 },
    ]);
    expect(spansOf(layout, 5)).toEqual([{ file: 2, start: 20, end: 22 }]);
  });

  it("never offers a piece that spans a file not stored", () => {
    // File 1 was not selected: piece 2 (bytes 20-29) reaches into it.
    const { bitfield, count } = offeredPieces(layout, (file) => file !== 1);
    expect(offered(bitfield, 6)).toEqual([true, true, false, true, true, true]);
    expect(count).toBe(5);
  });
});

describe("the seed store", () => {
  it("reads a whole piece once for many block requests, and refuses writes", async () => {
    const reads: string[] = [];
    const store = new SeedStore(10, {
      seed: {
        layout,
        signal: new AbortController().signal,
        cachePieces: 2,
        reader: {
          async read(file: number, start: number, end: number) {
            reads.push(`${file}:${start}-${end}`);
            return new Uint8Array(end - start).fill(file + 1);
          },
        },
      },
    });
    const get = (index: number, offset: number, length: number) =>
      new Promise<Uint8Array>((resolve, reject) =>
        store.get(index, { offset, length }, (error, buf) => (error ? reject(error) : resolve(buf!))),
      );
    const blocks = await Promise.all([get(2, 0, 5), get(2, 5, 5), get(2, 2, 4)]);
    expect([...blocks[0]!]).toEqual([1, 1, 1, 1, 1]);
    expect([...blocks[1]!]).toEqual([2, 2, 2, 2, 2]);
    expect([...blocks[2]!]).toEqual([1, 1, 1, 2]);
    expect(reads).toEqual(["0:20-25", "1:0-5"]);
    await get(2, 0, 10);
    expect(reads).toHaveLength(2);
    const refused = await new Promise<Error | null>((resolve) => store.put(0, new Uint8Array(10), resolve));
    expect(refused?.message).toMatch(/read-only/);
  });
});
