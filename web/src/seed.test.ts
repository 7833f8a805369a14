import { describe, expect, it } from "vitest";
import { seedRequest } from "./seed.ts";

describe("seedRequest", () => {
  it("reads a ratio and hours into the API's ratio and minutes", () => {
    expect(seedRequest("1", "24")).toEqual({ ratio: 1, minutes: 1440 });
    expect(seedRequest("0.5", "1.5")).toEqual({ ratio: 0.5, minutes: 90 });
    expect(seedRequest("2", "0.001")).toEqual({ ratio: 2, minutes: 1 });
  });

  it("says what is wrong with a field instead of sending it", () => {
    expect(seedRequest("0", "24")).toMatch(/ratio above 0/);
    expect(seedRequest("", "24")).toMatch(/ratio above 0/);
    expect(seedRequest("abc", "24")).toMatch(/ratio above 0/);
    expect(seedRequest("1", "-3")).toMatch(/hours above 0/);
    expect(seedRequest("1", "")).toMatch(/hours above 0/);
    expect(seedRequest("1", String(400 * 24))).toMatch(/up to a year/);
  });
});
