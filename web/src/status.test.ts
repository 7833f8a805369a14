import { describe, expect, it } from "vitest";
import { laterState, timelineReason } from "./status.ts";

describe("laterState", () => {
  it("takes whichever report is further along", () => {
    expect(laterState("queued", "downloading")).toBe("downloading");
    expect(laterState("uploading", "downloading")).toBe("uploading");
    expect(laterState("downloading", "cancelled")).toBe("cancelled");
    expect(laterState("completed", "uploading")).toBe("completed");
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
