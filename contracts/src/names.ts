// One mapping from a file's path inside a torrent, under the job's folder, to
// the name it is stored as: an S3 object key or a Google Drive path. Every
// destination uses it, so a file is named the same way wherever it goes.
//
// S3 keys and Drive names take any Unicode text, so the mapping keeps every
// folder and file name exactly as the torrent spells it: spaces (leading and
// trailing too), `?`, `#`, `%`, `+`, any script, no Unicode normalisation.
// Paths the torrent parser accepted (no empty, `.` or `..` names, no control
// characters or backslashes, no duplicates, no file that is also a folder)
// therefore map one-to-one. A destination with stricter rules (names compared
// without case, characters it forbids replaced) describes them as NameRules,
// and findNameClash tells whether two files of one torrent would meet under
// one name there. OneDrive and Dropbox refuse a few characters: those are
// replaced by look-alikes, always the same way (oneDriveNames, dropboxNames).

/** How a destination names things. */
export interface NameRules {
  /** The destination, for messages (e.g. "S3"). */
  readonly label: string;
  /** The name the destination stores one folder or file name under. */
  name(component: string): string;
  /** Equal for two stored names the destination cannot tell apart (e.g. lower-cased where case is ignored). */
  same(stored: string): string;
}

const keep = (name: string) => name;

/** Names kept exactly as they are, compared exactly: S3 keys and Drive names. */
export const exactNames: NameRules = { label: "storage", name: keep, same: keep };

const FULLWIDTH: Record<string, string> = {
  '"': "\uFF02",
  "*": "\uFF0A",
  ":": "\uFF1A",
  "<": "\uFF1C",
  ">": "\uFF1E",
  "?": "\uFF1F",
  "|": "\uFF5C",
};
/** Shown for a space a provider refuses at the start or end of a name. */
const SPACE_SYMBOL = "\u2420";

/**
 * OneDrive refuses `" * : < > ? |` anywhere, spaces at either end, a period
 * at the end and `~` at the start. Each is replaced by its full-width (or
 * symbol) look-alike, always the same way, so a name maps to one name; names
 * are compared without case, as OneDrive does. A torrent whose files would
 * meet under one name is refused before it runs (findNameClash).
 */
export const oneDriveNames: NameRules = {
  label: "OneDrive",
  name(component) {
    let out = component.replace(/["*:<>?|]/g, (c) => FULLWIDTH[c]!);
    out = out.replace(/^ +| +$/g, (spaces) => SPACE_SYMBOL.repeat(spaces.length));
    if (out.endsWith(".")) out = `${out.slice(0, -1)}\uFF0E`;
    if (out.startsWith("~")) out = `\uFF5E${out.slice(1)}`;
    return out;
  },
  same: (stored) => stored.toLowerCase(),
};

/**
 * Dropbox keeps every character but refuses spaces at the end of a name (its
 * desktop clients cannot sync them): those become `␠`. Names are compared
 * without case, as Dropbox does.
 */
export const dropboxNames: NameRules = {
  label: "Dropbox",
  name: (component) => component.replace(/ +$/g, (spaces) => SPACE_SYMBOL.repeat(spaces.length)),
  same: (stored) => stored.toLowerCase(),
};

/** Each kind of destination's rules, keyed like a storage profile's `kind`. */
export const destinationNameRules = {
  s3: { label: "S3", name: keep, same: keep },
  gdrive: { label: "Google Drive", name: keep, same: keep },
  onedrive: oneDriveNames,
  dropbox: dropboxNames,
} as const satisfies Record<string, NameRules>;

/**
 * The rules every torrent is checked against at analysis, before a
 * destination is chosen: those that keep every name (S3, Drive). A stricter
 * destination's rules are checked when a job is sent there.
 */
export const analysisNameRules: readonly NameRules[] = [destinationNameRules.s3, destinationNameRules.gdrive];

/** The stored names of paths that a destination's rules change, for telling the user. */
export function renamedPaths(paths: readonly string[], rules: NameRules): { path: string; stored: string }[] {
  const out: { path: string; stored: string }[] = [];
  for (const path of paths) {
    const stored = path
      .split("/")
      .map((c) => rules.name(c))
      .join("/");
    if (stored !== path) out.push({ path, stored });
  }
  return out;
}

/** A folder or file name that cannot be stored as it is. */
export class UnsafeNameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnsafeNameError";
  }
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it finds
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Why one folder or file name has no one-to-one stored name, or undefined when it has. */
export function nameProblem(component: string): string | undefined {
  if (component === "") return "is empty";
  if (component === "." || component === "..") return `is "${component}"`;
  if (component.includes("/")) return 'contains "/"';
  if (component.includes("\\")) return "contains a backslash";
  if (CONTROL.test(component)) return "contains a control character";
  if (LONE_SURROGATE.test(component)) return "is not valid Unicode text";
  return undefined;
}

function components(path: string, what: string): string[] {
  const parts = path.split("/");
  for (const part of parts) {
    const problem = nameProblem(part);
    if (problem !== undefined)
      throw new UnsafeNameError(`The ${what} "${printable(path)}" has a name that ${problem}.`);
  }
  return parts;
}

function printable(s: string): string {
  const clean = s.replace(new RegExp(CONTROL.source, "g"), "?");
  return clean.length > 80 ? `${clean.slice(0, 80)}…` : clean;
}

/** The job folder (`/`-separated, as the edge normalised it) as stored names; "" is the destination's own folder. */
export function storageFolder(folder: string, rules: NameRules = exactNames): string[] {
  if (folder === "") return [];
  return components(folder, "folder").map((c) => rules.name(c));
}

/**
 * The folder a job's files go under when the person names none: one named
 * after the torrent. A multi-file torrent's paths already begin with its name,
 * so it needs no folder of its own (""); a one-file torrent gets its file's
 * name without the extension ("ubuntu.iso" goes to "ubuntu/ubuntu.iso").
 * Undefined while the files are unknown (a magnet before its metadata).
 */
export function defaultFolder(files: readonly { path: string }[]): string | undefined {
  const [only, ...rest] = files;
  if (only === undefined) return undefined;
  if (rest.length > 0 || only.path.includes("/")) return "";
  const stem = only.path.replace(/\.[^.]*$/, "").replace(/[. ]+$/, "");
  return stem === "" || nameProblem(stem) !== undefined ? only.path : stem;
}

/**
 * The stored path of a torrent file, as names: the job folder's, then the
 * torrent path's. Throws UnsafeNameError for a name the parser would have
 * refused.
 */
export function storagePath(folder: string, path: string, rules: NameRules = exactNames): string[] {
  return [...storageFolder(folder, rules), ...components(path, "file path").map((c) => rules.name(c))];
}

/** The stored path joined with `/`: an object key (before any profile prefix). */
export function storageKey(folder: string, path: string, rules: NameRules = exactNames): string {
  return storagePath(folder, path, rules).join("/");
}

/**
 * The folder a job's files go under, as the worker and the edge name it: the
 * job's target folder, or (jobs from before folders had defaults) its id.
 */
export function jobFolder(job: { id: string; targetFolder: string | null }): string {
  return job.targetFolder ?? job.id;
}

/**
 * The S3 object key of a torrent file: the profile's prefix, then the job
 * folder and the path as S3 names them. Throws UnsafeNameError like storagePath.
 */
export function s3ObjectKey(prefix: string | undefined, folder: string, path: string): string {
  return [prefix ?? "", storageKey(folder, path, destinationNameRules.s3)]
    .map((s) => s.replace(/^\/+|\/+$/g, ""))
    .filter((s) => s !== "")
    .join("/");
}

export interface NameClash {
  /** The two torrent paths, in the order they are listed. */
  paths: [string, string];
  /** `file`: both would be stored under one name; `folder`: the second needs the first's name as a folder. */
  kind: "file" | "folder";
  /** The stored name they meet at. */
  name: string;
}

/**
 * The first two paths of one torrent that one destination would store under
 * one name (or one of which would need the other's name as a folder), or
 * undefined when every file gets a name of its own.
 */
export function findNameClash(paths: readonly string[], rules: NameRules): NameClash | undefined {
  // Keys are JSON arrays of compared names, so a `/` a rule puts inside a name cannot fake a folder.
  const files = new Map<string, string>();
  const folders = new Map<string, string>();
  const keyOf = (names: string[]) => JSON.stringify(names.map((n) => rules.same(n)));
  for (const path of paths) {
    const names = path.split("/").map((c) => rules.name(c));
    const key = keyOf(names);
    const file = files.get(key);
    if (file !== undefined) return { paths: [file, path], kind: "file", name: names.join("/") };
    const inFolder = folders.get(key);
    if (inFolder !== undefined) return { paths: [inFolder, path], kind: "folder", name: names.join("/") };
    for (let depth = 1; depth < names.length; depth++) {
      const prefix = names.slice(0, depth);
      const folderKey = keyOf(prefix);
      const asFile = files.get(folderKey);
      if (asFile !== undefined) return { paths: [asFile, path], kind: "folder", name: prefix.join("/") };
      if (!folders.has(folderKey)) folders.set(folderKey, path);
    }
    files.set(key, path);
  }
  return undefined;
}

/** A sentence naming both paths of a clash, for the person who sent the torrent. */
export function describeNameClash(clash: NameClash, rules: NameRules): string {
  const [first, second] = clash.paths.map((p) => `"${printable(p)}"`);
  return clash.kind === "file"
    ? `The torrent's files ${first} and ${second} would both be stored as "${printable(clash.name)}" in ${rules.label}.`
    : `The torrent's files ${first} and ${second} clash in ${rules.label}: "${printable(clash.name)}" would be both a file and a folder.`;
}
