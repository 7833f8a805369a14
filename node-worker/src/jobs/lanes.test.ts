import { describe, expect, it } from "vitest";
import { uploadLanes } from "./lanes.ts";

/** Uploads that run until the test lets each one finish. */
function heldUploads() {
  const started: string[] = [];
  const finish = new Map<string, () => void>();
  const upload = (file: string) =>
    new Promise<void>((resolve) => {
      started.push(file);
      finish.set(file, resolve);
    });
  return { started, finish, upload };
}

/** A download that reaches each file when the test says so. */
function heldDownload() {
  const reachedOnce = new Map<string, () => void>();
  const reached = (file: string) => new Promise<void>((resolve) => reachedOnce.set(file, resolve));
  return { reachedOnce, reached };
}

/** Lets queued promise callbacks run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("upload lanes", () => {
  it("upload two files at a time, in order", async () => {
    const { started, finish, upload } = heldUploads();
    const lanes = uploadLanes(["a", "b", "c"], { upload });
    await settle();
    expect(started).toEqual(["a", "b"]);
    finish.get("b")!();
    await settle();
    expect(started).toEqual(["a", "b", "c"]);
    finish.get("a")!();
    finish.get("c")!();
    await Promise.all(lanes);
  });

  it("start the next file once the download reaches the one before it, with both lanes busy", async () => {
    const { started, finish, upload } = heldUploads();
    const { reachedOnce, reached } = heldDownload();
    const lanes = uploadLanes(["a", "b", "c", "d"], { upload, reached });
    await settle();
    // The lanes hold a and b; the third waits for the download to reach b.
    expect(started).toEqual(["a", "b"]);
    reachedOnce.get("b")!();
    await settle();
    expect(started).toEqual(["a", "b", "c"]);
    // A lane that frees takes d; the third lane, done with c, finds nothing left.
    finish.get("a")!();
    await settle();
    expect(started).toEqual(["a", "b", "c", "d"]);
    for (const file of ["b", "c", "d"]) finish.get(file)!();
    await Promise.all(lanes);
    expect(started).toEqual(["a", "b", "c", "d"]);
  });

  it("leave a file to a lane that took it while the download had not reached the one before", async () => {
    const { started, finish, upload } = heldUploads();
    const { reachedOnce, reached } = heldDownload();
    const lanes = uploadLanes(["a", "b", "c", "d"], { upload, reached });
    await settle();
    finish.get("a")!(); // the lane takes c, which the third lane waited to start
    await settle();
    expect(started).toEqual(["a", "b", "c"]);
    reachedOnce.get("b")!(); // now it waits for the download to reach c, for d
    await settle();
    expect(started).toEqual(["a", "b", "c"]);
    reachedOnce.get("c")!();
    await settle();
    expect(started).toEqual(["a", "b", "c", "d"]);
    for (const file of ["b", "c", "d"]) finish.get(file)!();
    await Promise.all(lanes);
  });
});
