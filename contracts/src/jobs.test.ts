import { describe, expect, it } from "vitest";
import {
  assertTransition,
  canTransition,
  IllegalTransitionError,
  isTerminal,
  jobStates,
  transitions,
  workerStates,
} from "./jobs.ts";

describe("job transitions", () => {
  it("follows the happy path", () => {
    const path = ["queued", "resolving", "downloading", "uploading", "completed"] as const;
    for (let i = 1; i < path.length; i++) expect(canTransition(path[i - 1]!, path[i]!)).toBe(true);
  });

  it("lets a magnet job wait for the user's choice of files, held by no worker", () => {
    const path = ["queued", "resolving", "awaiting_selection", "queued", "downloading"] as const;
    for (let i = 1; i < path.length; i++) expect(canTransition(path[i - 1]!, path[i]!)).toBe(true);
    expect(transitions.awaiting_selection).toEqual(["queued", "failed", "cancelled"]);
    // Only the metadata's arrival leads there: a worker's (resolving) or the submitter's
    // browser's, found before any worker had the job (queued). The wait ends only through
    // the queue (or cancel).
    for (const state of jobStates)
      expect(canTransition(state, "awaiting_selection")).toBe(state === "resolving" || state === "queued");
    expect(canTransition("awaiting_selection", "downloading")).toBe(false);
    expect(workerStates).not.toContain("awaiting_selection");
  });

  it("lets no terminal state move except by retry", () => {
    expect(transitions.completed).toEqual([]);
    expect(transitions.failed).toEqual(["queued"]);
    expect(transitions.cancelled).toEqual(["queued"]);
    expect(isTerminal("completed") && isTerminal("failed") && isTerminal("cancelled")).toBe(true);
    expect(isTerminal("uploading")).toBe(false);
  });

  it("rejects moves that are not in the table", () => {
    expect(canTransition("queued", "completed")).toBe(false);
    expect(canTransition("completed", "queued")).toBe(false);
    expect(() => assertTransition("uploading", "resolving")).toThrow(IllegalTransitionError);
  });

  it("lets every live state fail or be cancelled", () => {
    for (const state of jobStates) {
      if (isTerminal(state)) continue;
      expect(canTransition(state, "failed")).toBe(true);
      expect(canTransition(state, "cancelled")).toBe(true);
    }
  });
});
