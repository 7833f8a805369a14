// The torrent's files as a tree of checkboxes: a folder's box is checked,
// unchecked or mixed from the files below it; folders fold open and shut.
import { createEffect, createSignal, For, Show } from "solid-js";
import { formatBytes } from "../format.ts";
import { type CheckState, checkState, type FolderNode, type TreeNode, toggle } from "../tree.ts";

interface Props {
  root: FolderNode;
  selected: () => ReadonlySet<number>;
  onChange: (next: Set<number>) => void;
  /** Start with folders folded (large torrents). */
  collapsed?: boolean;
}

export function FileTree(props: Props) {
  return (
    <ul class="tree" aria-label="Files in the torrent">
      <For each={props.root.children}>{(node) => <Node node={node} {...props} depth={0} />}</For>
    </ul>
  );
}

function Box(props: { state: CheckState; label: string; onToggle: () => void; id: string }) {
  let ref: HTMLInputElement | undefined;
  createEffect(() => {
    if (ref) ref.indeterminate = props.state === "mixed";
  });
  return (
    <input
      ref={ref}
      id={props.id}
      type="checkbox"
      checked={props.state === "checked"}
      aria-checked={props.state === "mixed" ? "mixed" : props.state === "checked" ? "true" : "false"}
      onChange={() => props.onToggle()}
      aria-label={props.label}
    />
  );
}

let ids = 0;

function Node(props: Props & { node: TreeNode; depth: number }) {
  const id = `tree-${++ids}`;
  const state = () => checkState(props.node, props.selected());
  const onToggle = () => props.onChange(toggle(props.node, props.selected()));
  const node = props.node;
  if (node.kind === "file") {
    return (
      <li>
        <div class="node">
          <span class="twisty-spacer" />
          <Box
            id={id}
            state={state()}
            label={`${node.path}, ${formatBytes(node.size)}`}
            onToggle={onToggle}
          />
          <label for={id} class="name" aria-hidden="true">
            {node.name}
          </label>
          <span class="size num">{formatBytes(node.size)}</span>
        </div>
      </li>
    );
  }
  const [open, setOpen] = createSignal(!props.collapsed);
  return (
    <li>
      <div class="node">
        <button
          type="button"
          class="twisty"
          aria-expanded={open()}
          aria-label={`${open() ? "Fold" : "Unfold"} ${node.name}`}
          onClick={() => setOpen(!open())}
        >
          {open() ? "▾" : "▸"}
        </button>
        <Box
          id={id}
          state={state()}
          label={`Folder ${node.path}, ${node.indices.length} files, ${formatBytes(node.size)}`}
          onToggle={onToggle}
        />
        <label for={id} class="name folder-name" aria-hidden="true">
          {node.name}/
        </label>
        <span class="size num">
          {node.indices.length} · {formatBytes(node.size)}
        </span>
      </div>
      <Show when={open()}>
        <ul>
          <For each={node.children}>
            {(child) => <Node {...props} node={child} depth={props.depth + 1} />}
          </For>
        </ul>
      </Show>
    </li>
  );
}
