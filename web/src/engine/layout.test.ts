import { describe, expect, it } from "vitest";
import {
  driveChunk,
  driveContentRange,
  driveOffsetFromRange,
  partsToUpload,
  piecesOf,
  RateMeter,
  retryDelay,
  storedBytes,
} from "./layout.ts";

const MiB = 1024 * 1024;

describe("S3 parts", () => {
  it("cuts a file into parts of partSize, the last one shorter", () => {
    expect(partsToUpload(12 * MiB, 5 * MiB, [])).toEqual([
      { partNumber: 1, start: 0, end: 5 * MiB },
      { partNumber: 2, start: 5 * MiB, end: 10 * MiB },
      { partNumber: 3, start: 10 * MiB, end: 12 * MiB },
    ]);
    expect(partsToUpload(0, 5 * MiB, [])).toEqual([{ partNumber: 1, start: 0, end: 0 }]);
  });

  it("skips the parts S3 holds, and sends again one stored with another size", () => {
    const stored = [
      { partNumber: 1, size: 5 * MiB },
      { partNumber: 3, size: 1 * MiB },
    ];
    expect(partsToUpload(12 * MiB, 5 * MiB, stored).map((p) => p.partNumber)).toEqual([2, 3]);
    expect(storedBytes(12 * MiB, 5 * MiB, stored)).toBe(5 * MiB);
    expect(storedBytes(12 * MiB, 5 * MiB, [...stored, { partNumber: 2, size: 5 * MiB }])).toBe(10 * MiB);
  });
});

describe("Drive chunks", () => {
  it("goes on from the session's offset, a chunk at a time", () => {
    expect(driveChunk(0, 600_000, 262_144)).toEqual({ start: 0, end: 262_144 });
    expect(driveChunk(524_288, 600_000, 262_144)).toEqual({ start: 524_288, end: 600_000 });
  });

  it("reads a 308's Range and writes Content-Range, or a status query", () => {
    expect(driveOffsetFromRange(null)).toBe(0);
    expect(driveOffsetFromRange("bytes=0-262143")).toBe(262_144);
    expect(() => driveOffsetFromRange("bytes=5-9")).toThrow(/Range/);
    expect(driveContentRange({ start: 262_144, end: 600_000 }, 600_000)).toBe("bytes 262144-599999/600000");
    expect(driveContentRange({ start: 0, end: 0 }, 600_000)).toBe("bytes */600000");
  });
});

describe("pieces of a range", () => {
  it("names the pieces a part needs, counting the file's place in the torrent", () => {
    expect(piecesOf(0, { start: 0, end: 16_384 }, 16_384)).toEqual({ first: 0, last: 0 });
    expect(piecesOf(10_000, { start: 0, end: 16_384 }, 16_384)).toEqual({ first: 0, last: 1 });
    expect(piecesOf(0, { start: 16_384, end: 16_384 }, 16_384)).toEqual({ first: 1, last: 1 });
  });
});

describe("retryDelay", () => {
  it("doubles up to a bound, and follows Retry-After", () => {
    expect([1, 2, 3, 4, 10].map((n) => retryDelay(n))).toEqual([1000, 2000, 4000, 8000, 30_000]);
    expect(retryDelay(1, 1000, 30_000, 7)).toBe(7000);
  });
});

describe("RateMeter", () => {
  it("measures bytes per second over its window", () => {
    const meter = new RateMeter(5000);
    expect(meter.sample(0, 0)).toBe(0);
    expect(meter.sample(1000, 1000)).toBe(1000);
    expect(meter.sample(2000, 3000)).toBe(1500);
    // Old samples leave the window: only the last 5 s count.
    meter.sample(6000, 3000);
    expect(meter.sample(8000, 3000)).toBe(0);
  });
});
