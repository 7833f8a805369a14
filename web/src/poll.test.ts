import { describe, expect, it } from "vitest";
import { nextDelay } from "./poll.ts";

describe("nextDelay", () => {
  const options = { interval: 1000, hiddenInterval: 10_000 };

  it("polls slower while the page is hidden", () => {
    expect(nextDelay(options, false, 0)).toBe(1000);
    expect(nextDelay(options, true, 0)).toBe(10_000);
  });

  it("backs off after failures, up to a minute", () => {
    expect(nextDelay(options, false, 1)).toBe(2000);
    expect(nextDelay(options, false, 3)).toBe(8000);
    expect(nextDelay(options, false, 20)).toBe(60_000);
    expect(nextDelay(options, true, 2)).toBe(40_000);
  });
});
