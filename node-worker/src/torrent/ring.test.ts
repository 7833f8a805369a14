import { describe, expect, it } from "vitest";
import { Ring } from "./ring.ts";

const KiB = 1024;

describe("a ring's layout", () => {
  it("keeps the bytes a file shares with its neighbours' pieces apart, before the ring proper", () => {
    // File at torrent offset 100 KiB, 1000 KiB long, pieces of 256 KiB: its
    // first piece starts 100 KiB before it, and its last 76 KiB share a piece
    // with whatever follows.
    const ring = new Ring(1000 * KiB, 100 * KiB, 256 * KiB);
    expect(ring.headEnd).toBe(156 * KiB);
    expect(ring.tailStart).toBe(1000 * KiB - 76 * KiB);
    expect(ring.edges).toBe(156 * KiB + 76 * KiB);
    ring.addCycle(512 * KiB);
    expect(ring.runs(0, 10)).toEqual([[0, 0, 10]]);
    // Tail bytes sit right after the head's.
    expect(ring.runs(ring.tailStart, 1000 * KiB)).toEqual([[156 * KiB, ring.tailStart, 76 * KiB]]);
    // The ring proper starts after both.
    expect(ring.runs(156 * KiB, 160 * KiB)).toEqual([[ring.edges, 156 * KiB, 4 * KiB]]);
  });

  it("maps each cycle onto the same positions, splitting a range where a cycle ends", () => {
    const ring = new Ring(10_000, 0, 100);
    expect(ring.edges).toBe(0);
    ring.addCycle(1000);
    ring.addCycle(1000);
    // Bytes 900-1100 straddle the first wrap: positions 900-1000, then 0-100.
    expect(ring.runs(900, 1100)).toEqual([
      [900, 900, 100],
      [0, 1000, 100],
    ]);
    expect(ring.end).toBe(2000);
    // Bytes no cycle has reached are not in the ring.
    expect(() => ring.runs(1900, 2100)).toThrow(/not in its scratch ring/);
  });

  it("starts a cycle past stored bytes, and never lets one grow", () => {
    const ring = new Ring(10_000, 0, 100);
    ring.addCycle(1000, 3000);
    expect(ring.runs(3000, 3100)).toEqual([[0, 3000, 100]]);
    expect(() => ring.runs(2000, 2100)).toThrow();
    ring.addCycle(500);
    expect(ring.runs(4000, 4500)).toEqual([[0, 4000, 500]]);
    expect(() => ring.addCycle(600)).toThrow(/cannot grow/);
    expect(() => ring.addCycle(100, 4000)).toThrow(/overlap/);
  });

  it("clips the last cycle to the ring proper", () => {
    const ring = new Ring(2500, 0, 100);
    ring.addCycle(1000);
    ring.addCycle(1000);
    expect(ring.addCycle(1000)).toEqual({ base: 2000, size: 500 });
    expect(ring.end).toBe(2500);
  });
});
