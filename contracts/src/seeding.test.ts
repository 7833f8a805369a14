// What a job's seeding request becomes under the operator's limits, and the
// line the job page shows for it.
import { describe, expect, it } from "vitest";
import { boundSeed, describeSeeding, type SeedingProgress } from "./seeding.ts";

const policy = { maxRatio: 2, maxMinutes: 1440, defaultRatio: 0, defaultMinutes: 0 };

describe("boundSeed", () => {
  it("caps each limit, fills a missing one with the cap, and grants none for 0", () => {
    expect(boundSeed({ ratio: 5, minutes: 9999 }, policy)).toEqual({ ratio: 2, minutes: 1440 });
    expect(boundSeed({ ratio: 1 }, policy)).toEqual({ ratio: 1, minutes: 1440 });
    expect(boundSeed({ ratio: 0 }, policy)).toBeNull();
  });

  it("gives the operator's default to a job that asks nothing", () => {
    expect(boundSeed(undefined, policy)).toBeNull();
    expect(boundSeed(undefined, { ...policy, defaultRatio: 1, defaultMinutes: 60 })).toEqual({
      ratio: 1,
      minutes: 60,
    });
  });
});

describe("describeSeeding", () => {
  const base: SeedingProgress = {
    source: "disk",
    uploaded: 120 * 1024 * 1024,
    ratio: 0.42,
    peers: 3,
    ratioLimit: 1,
    until: 0,
    since: 0,
  };
  const mib = (n: number) => `${Math.round(n / 1024 / 1024)} MiB`;

  it("says how it goes, and why it ended", () => {
    expect(describeSeeding(base, mib)).toBe("Seeding · ratio 0.42 · 3 peers · uploaded 120 MiB");
    expect(
      describeSeeding({ ...base, ended: { reason: "ratio", message: "ratio reached", at: 1 } }, mib),
    ).toBe("Seeded · ratio 0.42 · uploaded 120 MiB · ended: ratio reached");
  });
});
