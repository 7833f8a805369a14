// The file chooser of a magnet job that waits for its user: the same tree of
// checkboxes as the new-job page shows for a .torrent, started from the files
// the job has selected (all, or those the magnet's so= picked), an optional
// folder, and the button that starts the download.
import { createMemo, createSignal, Show } from "solid-js";
import { formatBytes, formatDate } from "../format.ts";
import { selectedIndices, selectedSize } from "../tree.ts";
import { FilePicker } from "./FilePicker.tsx";

interface ChoosableFile {
  index: number;
  path: string;
  size: number;
  selected: boolean;
}

interface Props {
  files: readonly ChoosableFile[];
  targetFolder: string | null;
  deadline: string | null;
  busy: boolean;
  error: string | undefined;
  onStart: (files: number[], targetFolder: string | undefined) => void;
}

/** Paths without the torrent's own name in front, when every file has it (as on the new-job page). */
function relative(files: readonly ChoosableFile[]) {
  const first = files[0]?.path.split("/")[0];
  const prefix = `${first}/`;
  const all = first !== undefined && files.every((f) => f.path.startsWith(prefix));
  return {
    name: all ? first : undefined,
    files: files.map((f) => ({
      index: f.index,
      size: f.size,
      path: all ? f.path.slice(prefix.length) : f.path,
    })),
  };
}

export function ChooseFiles(props: Props) {
  const shown = createMemo(() => relative(props.files));
  const [selected, setSelected] = createSignal<Set<number>>(
    new Set(props.files.filter((f) => f.selected).map((f) => f.index)),
  );
  const [folder, setFolder] = createSignal(props.targetFolder ?? "");
  const size = () => selectedSize(shown().files, selected());
  return (
    <form
      class="card stack"
      aria-labelledby="choose-heading"
      data-testid="choose-files-form"
      onSubmit={(e) => {
        e.preventDefault();
        if (selected().size === 0) return;
        props.onStart(selectedIndices(selected()), folder().trim() || undefined);
      }}
    >
      <h2 id="choose-heading">Choose the files to download</h2>
      <p class="muted">
        The torrent's file list is here{shown().name ? ` (${shown().name})` : ""}: nothing is downloaded until
        you start.
        <Show when={props.deadline}>
          {(at) => (
            <>
              {" "}
              Choose by <time datetime={at()}>{formatDate(at())}</time>, or the job is cancelled.
            </>
          )}
        </Show>
      </p>
      <FilePicker files={shown().files} selected={selected} onChange={setSelected} />
      <div class="field">
        <label for="choose-folder">Folder in the destination</label>
        <input
          id="choose-folder"
          type="text"
          spellcheck={false}
          placeholder="Optional, e.g. movies/2025"
          value={folder()}
          onInput={(e) => setFolder(e.currentTarget.value)}
        />
      </div>
      <Show when={props.error}>
        <div class="alert error" role="alert">
          <p>{props.error}</p>
        </div>
      </Show>
      <div class="submit-bar">
        <button
          type="submit"
          class="button primary"
          disabled={props.busy || selected().size === 0}
          data-testid="start-selection"
        >
          {props.busy ? "Starting…" : `Start job · ${formatBytes(size())}`}
        </button>
      </div>
    </form>
  );
}
