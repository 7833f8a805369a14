import { describe, expect, it } from "vitest";
import {
  formatBytes,
  formatDuration,
  formatPercent,
  formatRate,
  formatRelative,
  fraction,
  plural,
} from "./format.ts";

describe("formatBytes", () => {
  it("keeps small sizes in bytes", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(1)).toBe("1 B");
    expect(formatBytes(1023)).toBe("1023 B");
  });

  it("uses binary units with about three significant figures", () => {
    expect(formatBytes(1024)).toBe("1.0 KiB");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(3 * 1024 * 1024 + 12_345)).toBe("3.01 MiB");
    expect(formatBytes(12.34 * 1024 * 1024)).toBe("12.3 MiB");
    expect(formatBytes(123.4 * 1024 * 1024)).toBe("123 MiB");
    expect(formatBytes(1.5 * 1024 ** 3)).toBe("1.50 GiB");
  });

  it("never shows 1024 of a unit", () => {
    expect(formatBytes(1024 * 1024 - 1)).toBe("1.00 MiB");
    expect(formatBytes(1024 ** 3 - 1)).toBe("1.00 GiB");
  });

  it("shows a dash for impossible values", () => {
    expect(formatBytes(-1)).toBe("—");
    expect(formatBytes(Number.NaN)).toBe("—");
  });
});

describe("formatRate", () => {
  it("adds per second and treats idle as zero", () => {
    expect(formatRate(2.5 * 1024 * 1024)).toBe("2.50 MiB/s");
    expect(formatRate(0)).toBe("0 B/s");
    expect(formatRate(-5)).toBe("0 B/s");
  });
});

describe("formatDuration", () => {
  it("reads naturally at every scale", () => {
    expect(formatDuration(0)).toBe("0 s");
    expect(formatDuration(45.4)).toBe("45 s");
    expect(formatDuration(185)).toBe("3 min 05 s");
    expect(formatDuration(2 * 3600 + 7 * 60)).toBe("2 h 07 min");
    expect(formatDuration(3 * 86_400 + 4 * 3600)).toBe("3 d 4 h");
  });

  it("shows a dash when unknown", () => {
    expect(formatDuration(null)).toBe("—");
    expect(formatDuration(undefined)).toBe("—");
    expect(formatDuration(Number.POSITIVE_INFINITY)).toBe("—");
  });
});

describe("formatPercent and fraction", () => {
  it("rounds down so 100% means done", () => {
    expect(formatPercent(999, 1000)).toBe("99%");
    expect(formatPercent(1000, 1000)).toBe("100%");
    expect(formatPercent(1, 3)).toBe("33%");
    expect(formatPercent(0, 0)).toBe("0%");
  });

  it("clamps the ratio", () => {
    expect(fraction(5, 10)).toBe(0.5);
    expect(fraction(20, 10)).toBe(1);
    expect(fraction(5, 0)).toBe(0);
  });
});

describe("formatRelative", () => {
  const now = Date.parse("2025-11-25T12:00:00Z");
  it("says how long ago", () => {
    expect(formatRelative(now - 10_000, now)).toBe("just now");
    expect(formatRelative(now - 5 * 60_000, now)).toBe("5 min ago");
    expect(formatRelative(now - 3 * 3_600_000, now)).toBe("3 h ago");
    expect(formatRelative(new Date(now - 2 * 86_400_000).toISOString(), now)).toBe("2 d ago");
  });
});

describe("plural", () => {
  it("counts", () => {
    expect(plural(1, "file")).toBe("1 file");
    expect(plural(3, "file")).toBe("3 files");
    expect(plural(0, "entry", "entries")).toBe("0 entries");
  });
});
