// The file tree of a torrent and the selection logic behind its checkboxes:
// folders are built from `/`-separated paths, a folder's checkbox is checked,
// unchecked or mixed from the files below it, and toggling a folder selects
// or clears everything below it.

export interface TreeFile {
  index: number;
  /** Path inside the torrent, `/`-separated (or already split). */
  path: string | readonly string[];
  size: number;
}

export interface FileNode {
  kind: "file";
  name: string;
  /** Full path, `/`-joined, unique in the tree. */
  path: string;
  index: number;
  size: number;
}

export interface FolderNode {
  kind: "folder";
  name: string;
  path: string;
  children: TreeNode[];
  /** Indices of every file below this folder. */
  indices: number[];
  size: number;
}

export type TreeNode = FileNode | FolderNode;

export type CheckState = "checked" | "unchecked" | "mixed";

function segments(path: string | readonly string[]): string[] {
  const parts = typeof path === "string" ? path.split("/") : [...path];
  return parts.filter((part) => part !== "");
}

/** A tree with folders first, then files, each sorted by name. */
export function buildTree(files: readonly TreeFile[]): FolderNode {
  const root: FolderNode = { kind: "folder", name: "", path: "", children: [], indices: [], size: 0 };
  for (const file of files) {
    const parts = segments(file.path);
    const fileName = parts.pop() ?? `file ${file.index + 1}`;
    let folder = root;
    const trail: FolderNode[] = [root];
    for (const part of parts) {
      const path = folder.path ? `${folder.path}/${part}` : part;
      let next = folder.children.find(
        (child): child is FolderNode => child.kind === "folder" && child.name === part,
      );
      if (!next) {
        next = { kind: "folder", name: part, path, children: [], indices: [], size: 0 };
        folder.children.push(next);
      }
      folder = next;
      trail.push(folder);
    }
    folder.children.push({
      kind: "file",
      name: fileName,
      path: folder.path ? `${folder.path}/${fileName}` : fileName,
      index: file.index,
      size: file.size,
    });
    for (const node of trail) {
      node.indices.push(file.index);
      node.size += file.size;
    }
  }
  sortTree(root);
  return root;
}

function sortTree(folder: FolderNode): void {
  folder.children.sort((a, b) =>
    a.kind !== b.kind
      ? a.kind === "folder"
        ? -1
        : 1
      : a.name.localeCompare(b.name, undefined, { numeric: true }),
  );
  for (const child of folder.children) if (child.kind === "folder") sortTree(child);
}

/** A file is checked or not; a folder is checked, unchecked or mixed from the files below it. */
export function checkState(node: TreeNode, selected: ReadonlySet<number>): CheckState {
  if (node.kind === "file") return selected.has(node.index) ? "checked" : "unchecked";
  let count = 0;
  for (const index of node.indices) if (selected.has(index)) count++;
  if (count === 0) return "unchecked";
  return count === node.indices.length ? "checked" : "mixed";
}

/** Toggling a fully checked node clears it; anything else (unchecked or mixed) selects all of it. */
export function toggle(node: TreeNode, selected: ReadonlySet<number>): Set<number> {
  const next = new Set(selected);
  const indices = node.kind === "file" ? [node.index] : node.indices;
  if (checkState(node, selected) === "checked") for (const index of indices) next.delete(index);
  else for (const index of indices) next.add(index);
  return next;
}

export function selectAll(files: readonly TreeFile[]): Set<number> {
  return new Set(files.map((file) => file.index));
}

export function selectedSize(files: readonly TreeFile[], selected: ReadonlySet<number>): number {
  let total = 0;
  for (const file of files) if (selected.has(file.index)) total += file.size;
  return total;
}

/** Selected indices in ascending order, as the API takes them. */
export function selectedIndices(selected: ReadonlySet<number>): number[] {
  return [...selected].sort((a, b) => a - b);
}
