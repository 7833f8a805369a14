import { describe, expect, it } from "vitest";
import { atLimit, usageParts } from "./usage.ts";

const month = { start: "2026-11-01T00:00:00.000Z", resetsAt: "2026-12-01T00:00:00.000Z" };

describe("usageParts", () => {
  it("says each quota as used of limit, and when the monthly one renews", () => {
    expect(
      usageParts({
        limits: { runningJobs: 5, queuedJobs: 100, monthlyBytes: 50 * 1024 ** 3 },
        usage: { runningJobs: 3, queuedJobs: 12, monthlyBytes: 4.2 * 1024 ** 3 },
        month,
      }),
    ).toEqual(["3 of 5 running", "12 of 100 queued", "4.20 GiB of 50.0 GiB this month, renews 1 Dec"]);
  });

  it("leaves out the limits the operator did not set", () => {
    const view = {
      limits: { runningJobs: null, queuedJobs: null, monthlyBytes: null },
      usage: { runningJobs: 1, queuedJobs: 0, monthlyBytes: 0 },
      month,
    };
    expect(usageParts(view)).toEqual(["1 running", "0 queued", "0 B this month"]);
    expect(atLimit(view)).toEqual({ queued: false, monthly: false });
  });

  it("knows when a quota that refuses new jobs is reached", () => {
    expect(
      atLimit({
        limits: { runningJobs: 1, queuedJobs: 2, monthlyBytes: 100 },
        usage: { runningJobs: 1, queuedJobs: 2, monthlyBytes: 100 },
        month,
      }),
    ).toEqual({ queued: true, monthly: true });
  });
});
