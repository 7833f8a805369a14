import { describe, expect, it } from "vitest";
import { browserTransferText, laterState, resolvingText, timelineReason } from "./status.ts";

describe("laterState", () => {
  it("takes whichever report is further along", () => {
    expect(laterState("queued", "downloading")).toBe("downloading");
    expect(laterState("uploading", "downloading")).toBe("uploading");
    expect(laterState("downloading", "cancelled")).toBe("cancelled");
    expect(laterState("completed", "uploading")).toBe("completed");
    expect(laterState("resolving", "awaiting_selection")).toBe("awaiting_selection");
    expect(laterState("awaiting_selection", "cancelled")).toBe("cancelled");
  });
});

describe("timelineReason", () => {
  it("drops a reason that only repeats the state and its cause", () => {
    expect(
      timelineReason({ to: "cancelled", cause: "user", reason: "cancelled by the user" }),
    ).toBeUndefined();
    expect(timelineReason({ to: "cancelled", cause: "user", reason: "Cancelled by user." })).toBeUndefined();
    expect(timelineReason({ to: "queued", cause: "user", reason: null })).toBeUndefined();
  });

  it("keeps one that says more", () => {
    expect(timelineReason({ to: "failed", cause: "worker", reason: "The bucket refused the upload." })).toBe(
      "The bucket refused the upload.",
    );
    expect(timelineReason({ to: "queued", cause: "system", reason: "worker lease lapsed" })).toBe(
      "worker lease lapsed",
    );
  });
});

describe("resolvingText", () => {
  it("says what the search for metadata has found, for how long, and where it asks", () => {
    expect(resolvingText(0, 40)).toBe("Finding metadata — no peers found yet, 40 s");
    expect(resolvingText(2, 75, ["tracker.example"])).toBe(
      "Finding metadata — 2 peers found, waiting for the metadata, 1 min 15 s · asking tracker tracker.example",
    );
    expect(resolvingText(1, 5, ["a", "b", "c", "d", "e"])).toBe(
      "Finding metadata — 1 peer found, waiting for the metadata, 5 s · asking trackers a, b, c and 2 more",
    );
  });
});

describe("browserTransferText", () => {
  it("says what this tab does with a browser job, or that the job waits for one", () => {
    expect(browserTransferText({ status: "running", attempt: 2 }, "downloading")).toMatch(
      /Keep this tab open: closing it pauses the job/,
    );
    expect(browserTransferText(undefined, "queued")).toMatch(/^Paused: .*hand it to the fleet/);
    expect(browserTransferText({ status: "stopped" }, "queued")).toMatch(/^Paused/);
    expect(browserTransferText(undefined, "uploading")).toMatch(/resume it here/);
    expect(browserTransferText(undefined, "completed")).toBeUndefined();
    expect(browserTransferText({ status: "failed", reason: "x" }, "failed")).toBeUndefined();
    expect(browserTransferText({ status: "failed", reason: "No peer." }, "downloading")).toBe(
      "The transfer in this browser stopped: No peer.",
    );
  });
});
