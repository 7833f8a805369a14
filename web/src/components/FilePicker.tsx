// A torrent's files to pick from: the tree of checkboxes with "Select all" and
// "Select none", and the running count and size of what is picked. The
// new-job page shows it for a .torrent, a magnet job's page once its file list
// is known.
import { createMemo } from "solid-js";
import { formatBytes, plural } from "../format.ts";
import { buildTree, selectAll, selectedSize } from "../tree.ts";
import { FileTree } from "./FileTree.tsx";

interface PickableFile {
  index: number;
  path: string;
  size: number;
}

export function FilePicker(props: {
  files: readonly PickableFile[];
  selected: () => Set<number>;
  onChange: (selected: Set<number>) => void;
  /** Id of the "Files to download" label, for a form that names its parts. */
  labelId?: string;
}) {
  const tree = createMemo(() => buildTree([...props.files]));
  const size = () => selectedSize([...props.files], props.selected());
  return (
    <div>
      <div class="tree-tools">
        <span class="label" id={props.labelId}>
          Files to download
        </span>
        <span class="row">
          <button
            type="button"
            class="button small"
            onClick={() => props.onChange(selectAll([...props.files]))}
          >
            Select all
          </button>
          <button type="button" class="button small" onClick={() => props.onChange(new Set<number>())}>
            Select none
          </button>
        </span>
      </div>
      <FileTree
        root={tree()}
        selected={props.selected}
        onChange={props.onChange}
        collapsed={props.files.length > 200}
      />
      <p class="muted small num" role="status" aria-live="polite" data-testid="selected-total">
        {props.selected().size} of {plural(props.files.length, "file")} selected · {formatBytes(size())}
      </p>
    </div>
  );
}
