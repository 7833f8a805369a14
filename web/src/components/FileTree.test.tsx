import { cleanup, fireEvent, render, screen } from "@solidjs/testing-library";
import { createSignal } from "solid-js";
import { afterEach, describe, expect, it } from "vitest";
import { buildTree, selectAll } from "../tree.ts";
import { FileTree } from "./FileTree.tsx";

const files = [
  { index: 0, path: "README.txt", size: 275 },
  { index: 1, path: "video/sample-a.bin", size: 3_158_073 },
  { index: 2, path: "audio/sample-b.bin", size: 2_096_375 },
  { index: 3, path: "video/extras/clip.bin", size: 1000 },
];

function setup() {
  const [selected, setSelected] = createSignal(selectAll(files));
  render(() => <FileTree root={buildTree(files)} selected={selected} onChange={setSelected} />);
  const box = (name: RegExp) => screen.getByRole("checkbox", { name }) as HTMLInputElement;
  return { selected, box };
}

afterEach(cleanup);

describe("FileTree", () => {
  it("shows every file and folder with its size, all checked at first", () => {
    const { box } = setup();
    expect(box(/^README\.txt, 275 B$/).checked).toBe(true);
    expect(box(/^Folder video, 2 files, 3\.01 MiB$/).checked).toBe(true);
    expect(box(/^video\/extras\/clip\.bin,/).checked).toBe(true);
  });

  it("marks a folder mixed when only some files below it are selected", () => {
    const { box, selected } = setup();
    fireEvent.click(box(/^video\/extras\/clip\.bin,/));
    const video = box(/^Folder video,/);
    expect(video.indeterminate).toBe(true);
    expect(video.getAttribute("aria-checked")).toBe("mixed");
    expect(box(/^Folder video\/extras,/).checked).toBe(false);
    expect([...selected()].sort()).toEqual([0, 1, 2]);
  });

  it("selects everything below a mixed folder, then clears it", () => {
    const { box, selected } = setup();
    fireEvent.click(box(/^video\/sample-a\.bin,/));
    fireEvent.click(box(/^Folder video,/));
    expect([...selected()].sort()).toEqual([0, 1, 2, 3]);
    expect(box(/^Folder video,/).indeterminate).toBe(false);
    fireEvent.click(box(/^Folder video,/));
    expect([...selected()].sort()).toEqual([0, 2]);
    expect(box(/^video\/sample-a\.bin,/).checked).toBe(false);
  });

  it("folds a folder away and back with its button", () => {
    setup();
    const fold = screen.getByRole("button", { name: "Fold audio" });
    expect(fold.getAttribute("aria-expanded")).toBe("true");
    fireEvent.click(fold);
    expect(screen.queryByRole("checkbox", { name: /^audio\/sample-b\.bin,/ })).toBeNull();
    fireEvent.click(screen.getByRole("button", { name: "Unfold audio" }));
    expect(screen.getByRole("checkbox", { name: /^audio\/sample-b\.bin,/ })).toBeTruthy();
  });
});
