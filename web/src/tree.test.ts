import { describe, expect, it } from "vitest";
import {
  buildTree,
  checkState,
  type FolderNode,
  selectAll,
  selectedIndices,
  selectedSize,
  toggle,
} from "./tree.ts";

const files = [
  { index: 0, path: "README.txt", size: 100 },
  { index: 1, path: "video/sample-a.bin", size: 3000 },
  { index: 2, path: "audio/sample-b.bin", size: 2000 },
  { index: 3, path: "video/extras/clip.bin", size: 500 },
];

function folder(root: FolderNode, name: string): FolderNode {
  const found = root.children.find((child) => child.kind === "folder" && child.name === name);
  if (found?.kind !== "folder") throw new Error(`no folder ${name}`);
  return found;
}

describe("buildTree", () => {
  it("nests files under their folders, folders first, with sizes summed", () => {
    const root = buildTree(files);
    expect(root.children.map((child) => `${child.kind}:${child.name}`)).toEqual([
      "folder:audio",
      "folder:video",
      "file:README.txt",
    ]);
    const video = folder(root, "video");
    expect(video.size).toBe(3500);
    expect(video.indices.sort()).toEqual([1, 3]);
    expect(video.children.map((child) => child.path)).toEqual(["video/extras", "video/sample-a.bin"]);
    expect(root.size).toBe(5600);
  });

  it("accepts paths given as segments", () => {
    const root = buildTree([{ index: 0, path: ["a", "b", "c.txt"], size: 1 }]);
    expect(folder(folder(root, "a"), "b").children[0]).toMatchObject({ kind: "file", path: "a/b/c.txt" });
  });

  it("sorts names the way people count", () => {
    const root = buildTree([
      { index: 0, path: "ep10.mkv", size: 1 },
      { index: 1, path: "ep2.mkv", size: 1 },
    ]);
    expect(root.children.map((child) => child.name)).toEqual(["ep2.mkv", "ep10.mkv"]);
  });
});

describe("selection", () => {
  const root = buildTree(files);
  const video = folder(root, "video");

  it("shows a folder checked, unchecked or mixed", () => {
    expect(checkState(video, new Set())).toBe("unchecked");
    expect(checkState(video, new Set([1]))).toBe("mixed");
    expect(checkState(video, new Set([1, 3]))).toBe("checked");
    expect(checkState(root, new Set([0, 1, 2, 3]))).toBe("checked");
  });

  it("selects a whole folder from unchecked or mixed and clears it from checked", () => {
    const some = toggle(video, new Set([0, 1]));
    expect(selectedIndices(some)).toEqual([0, 1, 3]);
    const none = toggle(video, some);
    expect(selectedIndices(none)).toEqual([0]);
  });

  it("toggles a single file", () => {
    const file = video.children.find((child) => child.kind === "file")!;
    expect(selectedIndices(toggle(file, new Set()))).toEqual([1]);
    expect(selectedIndices(toggle(file, new Set([1, 2])))).toEqual([2]);
  });

  it("does not change the set it was given", () => {
    const before = new Set([1]);
    toggle(video, before);
    expect([...before]).toEqual([1]);
  });

  it("selects all and totals the selected size", () => {
    const all = selectAll(files);
    expect(selectedIndices(all)).toEqual([0, 1, 2, 3]);
    expect(selectedSize(files, all)).toBe(5600);
    expect(selectedSize(files, new Set([0, 2]))).toBe(2100);
  });
});
