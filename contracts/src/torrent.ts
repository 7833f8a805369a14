// Reading .torrent files and magnet links, the same way in the edge (workerd)
// and the browser: Uint8Array and WebCrypto only, no Node APIs.
//
// A .torrent comes from a stranger, so it is decoded with a strict, bounded
// bencode reader (no recursion past a fixed depth, lengths checked against the
// bytes actually present, no duplicate keys) and every file path is checked
// before anything downstream turns it into an object key or a local file.
// The v1 info hash is the SHA-1 of the info dictionary's raw bytes as they
// appear in the file, so it matches what peers and trackers use even when the
// file's encoding is not canonical.
// @ts-expect-error magnet-uri ships no type declarations; the part used here is typed as MagnetUriResult below.
import magnetDecode from "magnet-uri";
import { analysisNameRules, describeNameClash, findNameClash, type NameRules } from "./names.ts";

/** Largest .torrent accepted, in bytes. */
export const MAX_TORRENT_BYTES = 8 * 1024 * 1024;
/** Most files (including BEP 47 padding files) one torrent may list. */
export const MAX_TORRENT_FILES = 20_000;
/** Longest file or folder name, in UTF-8 bytes (the common file-system limit). */
export const MAX_PATH_COMPONENT_BYTES = 255;
/** Most folders + file name in one path inside the torrent (the torrent name not counted). */
export const MAX_PATH_DEPTH = 32;
/** Longest full path (torrent name + folders + file name, `/`-separated), in UTF-8 bytes. */
export const MAX_PATH_BYTES = 4096;
/** Deepest nesting of bencode lists and dictionaries. */
export const MAX_BENCODE_DEPTH = 64;
/** Largest piece length accepted. */
export const MAX_PIECE_LENGTH = 256 * 1024 * 1024;
/** Trackers kept per torrent or magnet; further ones are ignored. */
export const MAX_TRACKERS = 100;
/** Longest magnet link accepted, in characters. */
export const MAX_MAGNET_LENGTH = 16 * 1024;

export const torrentErrorCodes = [
  "empty",
  "too_large",
  "invalid_bencode",
  "not_a_torrent",
  "invalid_name",
  "unsafe_path",
  "duplicate_path",
  "name_clash",
  "too_many_files",
  "invalid_size",
  "invalid_piece_length",
  "invalid_pieces",
  "unsupported_version",
  "v2_only",
  "invalid_magnet",
] as const;
export type TorrentErrorCode = (typeof torrentErrorCodes)[number];

/** Why a .torrent or magnet was refused; `message` is meant for the person who sent it. */
export class TorrentError extends Error {
  readonly code: TorrentErrorCode;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: TorrentErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = "TorrentError";
    this.code = code;
    this.details = details;
  }
}

export interface TorrentFileEntry {
  /** Position in the torrent's file list (what BitTorrent clients select by). Padding files are left out, so indexes can skip. */
  index: number;
  /** `/`-separated; starts with the torrent name for a multi-file torrent, is the name for a one-file torrent. */
  path: string;
  size: number;
}

export interface TorrentInfo {
  /** Lowercase hex SHA-1 of the info dictionary (BitTorrent v1). */
  infoHash: string;
  /** Lowercase hex SHA-256 of the info dictionary, for a hybrid v1 + v2 torrent. */
  infoHashV2?: string;
  name: string;
  files: TorrentFileEntry[];
  /** Bytes of the listed files (padding excluded). */
  totalSize: number;
  pieceLength: number;
  pieceCount: number;
  trackers: string[];
  private: boolean;
}

export interface MagnetInfo {
  /** Lowercase hex v1 info hash (a hybrid magnet's btih; a v2-only magnet is refused). */
  infoHash: string;
  infoHashV2?: string;
  name?: string;
  trackers: string[];
  /**
   * BEP 53 `so=` (select only): the file indexes the link pre-selects, sorted,
   * each once. Checked against the file count once the metadata is known.
   */
  selectOnly?: number[];
}

// ---------------------------------------------------------------------------
// Bencode

interface BDict {
  readonly entries: Map<string, BValue>;
  /** Byte span of the whole dictionary in the source, `d` to `e` inclusive. */
  readonly start: number;
  readonly end: number;
}
type BValue = number | Uint8Array | BValue[] | BDict;

const isDict = (v: BValue | undefined): v is BDict =>
  v !== undefined && typeof v === "object" && !(v instanceof Uint8Array) && !Array.isArray(v);
const isBytes = (v: BValue | undefined): v is Uint8Array => v instanceof Uint8Array;
const isInt = (v: BValue | undefined): v is number => typeof v === "number";

const D = 0x64; // d
const L = 0x6c; // l
const I = 0x69; // i
const E = 0x65; // e
const COLON = 0x3a;
const MINUS = 0x2d;
const ZERO = 0x30;
const NINE = 0x39;
/** Dictionary keys longer than this are refused: real keys are field names or file names. */
const MAX_KEY_BYTES = 1024;

class Decoder {
  pos = 0;
  readonly bytes: Uint8Array;
  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
  }

  fail(problem: string): never {
    throw new TorrentError(
      "invalid_bencode",
      `This is not a valid .torrent file: ${problem} (at byte ${this.pos}).`,
      {
        offset: this.pos,
      },
    );
  }

  value(depth: number): BValue {
    const b = this.bytes[this.pos];
    if (b === undefined) this.fail("it ends too early");
    if (b === I) return this.integer();
    if (b >= ZERO && b <= NINE) return this.string();
    if (b === L || b === D) {
      if (depth >= MAX_BENCODE_DEPTH)
        this.fail(`lists and dictionaries nest deeper than ${MAX_BENCODE_DEPTH} levels`);
      return b === L ? this.list(depth + 1) : this.dict(depth + 1);
    }
    return this.fail(`unexpected byte 0x${b.toString(16).padStart(2, "0")}`);
  }

  /** Digits up to `stop`; no sign, no leading zeros (bencode is canonical). */
  digits(stop: number, max: number): number {
    const from = this.pos;
    let value = 0;
    for (;;) {
      const b = this.bytes[this.pos];
      if (b === undefined) this.fail("it ends too early");
      if (b === stop) break;
      if (b < ZERO || b > NINE) this.fail("a number contains a non-digit");
      if (this.pos - from >= max) this.fail("a number is too long");
      value = value * 10 + (b - ZERO);
      this.pos++;
    }
    const count = this.pos - from;
    if (count === 0) this.fail("a number has no digits");
    if (count > 1 && this.bytes[from] === ZERO) this.fail("a number has a leading zero");
    this.pos++; // the stop byte
    return value;
  }

  integer(): number {
    this.pos++; // i
    const negative = this.bytes[this.pos] === MINUS;
    if (negative) this.pos++;
    const at = this.pos;
    const value = this.digits(E, 20);
    if (negative && value === 0) {
      this.pos = at;
      this.fail("negative zero");
    }
    if (!Number.isSafeInteger(value)) {
      this.pos = at;
      this.fail("an integer is too large");
    }
    return negative ? -value : value;
  }

  string(): Uint8Array {
    const length = this.digits(COLON, 10);
    const end = this.pos + length;
    if (end > this.bytes.length) this.fail(`a ${length}-byte string runs past the end of the file`);
    const out = this.bytes.subarray(this.pos, end);
    this.pos = end;
    return out;
  }

  list(depth: number): BValue[] {
    this.pos++; // l
    const out: BValue[] = [];
    while (this.bytes[this.pos] !== E) out.push(this.value(depth));
    this.pos++;
    return out;
  }

  dict(depth: number): BDict {
    const start = this.pos;
    this.pos++; // d
    const entries = new Map<string, BValue>();
    while (this.bytes[this.pos] !== E) {
      const b = this.bytes[this.pos];
      if (b === undefined) this.fail("it ends too early");
      if (b < ZERO || b > NINE) this.fail("a dictionary key is not a string");
      const keyAt = this.pos;
      const raw = this.string();
      if (raw.length > MAX_KEY_BYTES) {
        this.pos = keyAt;
        this.fail("a dictionary key is too long");
      }
      const key = binaryString(raw);
      if (entries.has(key)) {
        this.pos = keyAt;
        this.fail(`the key "${printable(key)}" appears twice in one dictionary`);
      }
      entries.set(key, this.value(depth));
    }
    this.pos++;
    return { entries, start, end: this.pos };
  }
}

/** One char per byte, so keys compare exactly whatever their encoding. */
function binaryString(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}

const isControl = (code: number) => code < 0x20 || (code >= 0x7f && code <= 0x9f);

function replaceControl(s: string, by: string): string {
  let out = "";
  for (const char of s) out += isControl(char.codePointAt(0)!) ? by : char;
  return out;
}

function printable(s: string): string {
  const clean = replaceControl(s, "?");
  return clean.length > 60 ? `${clean.slice(0, 60)}…` : clean;
}

function decodeBencode(bytes: Uint8Array): BValue {
  const decoder = new Decoder(bytes);
  const value = decoder.value(0);
  if (decoder.pos !== bytes.length) decoder.fail("there is data after the end of the torrent");
  return value;
}

// ---------------------------------------------------------------------------
// Text and paths

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

function toHex(bytes: ArrayBuffer | Uint8Array): string {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let hex = "";
  for (const b of view) hex += b.toString(16).padStart(2, "0");
  return hex;
}

async function digest(algorithm: "SHA-1" | "SHA-256", bytes: Uint8Array): Promise<string> {
  // A copy into a plain ArrayBuffer: subtle.digest rejects views of shared or resizable buffers.
  return toHex(await crypto.subtle.digest(algorithm, bytes.slice()));
}

function decodeText(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** `what` names the field for the message, e.g. `file 3's path`. */
function checkComponent(component: string, bytes: number, what: string, code: TorrentErrorCode): void {
  const fail = (problem: string): never => {
    throw new TorrentError(code, `The torrent's ${what} ${problem}.`, { component: printable(component) });
  };
  if (component === "") fail("has an empty name");
  if (component === "." || component === "..") fail(`contains "${component}", which could escape its folder`);
  if (component.includes("/")) fail(`contains "/" inside a name ("${printable(component)}")`);
  if (component.includes("\\")) fail(`contains a backslash ("${printable(component)}")`);
  for (const char of component) if (isControl(char.codePointAt(0)!)) fail("contains a control character");
  if (bytes > MAX_PATH_COMPONENT_BYTES)
    fail(`has a name longer than ${MAX_PATH_COMPONENT_BYTES} bytes ("${printable(component)}")`);
}

/** Prefers the `<key>.utf-8` variant some clients write next to a legacy-encoded `<key>`. */
function textField(dict: BDict, key: string): { text: string; bytes: number } | "invalid" | undefined {
  const raw = dict.entries.get(`${key}.utf-8`) ?? dict.entries.get(key);
  if (raw === undefined) return undefined;
  if (!isBytes(raw)) return "invalid";
  const text = decodeText(raw);
  return text === undefined ? "invalid" : { text, bytes: raw.length };
}

function readName(info: BDict): string {
  const name = textField(info, "name");
  if (name === undefined) throw new TorrentError("invalid_name", "The torrent has no name.");
  if (name === "invalid")
    throw new TorrentError("invalid_name", "The torrent's name is not valid UTF-8 text.");
  checkComponent(name.text, name.bytes, "name", "invalid_name");
  return name.text;
}

function readPath(file: BDict, index: number): string[] {
  const raw = file.entries.get("path.utf-8") ?? file.entries.get("path");
  const what = `file #${index}`;
  if (!Array.isArray(raw))
    throw new TorrentError("unsafe_path", `The torrent's ${what} has no path.`, { index });
  if (raw.length === 0)
    throw new TorrentError("unsafe_path", `The torrent's ${what} has an empty path.`, { index });
  if (raw.length > MAX_PATH_DEPTH)
    throw new TorrentError(
      "unsafe_path",
      `The torrent's ${what} is nested more than ${MAX_PATH_DEPTH} folders deep.`,
      {
        index,
      },
    );
  return raw.map((part) => {
    const text = isBytes(part) ? decodeText(part) : undefined;
    if (text === undefined || !isBytes(part))
      throw new TorrentError(
        "unsafe_path",
        `The torrent's ${what} has a path that is not valid UTF-8 text.`,
        { index },
      );
    checkComponent(text, part.length, `${what} path`, "unsafe_path");
    return text;
  });
}

function checkSize(value: BValue | undefined, what: string): number {
  if (!isInt(value)) throw new TorrentError("invalid_size", `The torrent's ${what} has no length.`);
  if (value < 0) throw new TorrentError("invalid_size", `The torrent's ${what} has a negative length.`);
  return value;
}

const TRACKER = /^(https?|udp|wss?):\/\/[^\s/?#]+[^\s]*$/i;

function addTracker(out: string[], seen: Set<string>, url: string | undefined): void {
  if (url === undefined || out.length >= MAX_TRACKERS) return;
  const trimmed = url.trim();
  if (trimmed.length > 2048 || !TRACKER.test(trimmed) || seen.has(trimmed)) return;
  seen.add(trimmed);
  out.push(trimmed);
}

function readTrackers(root: BDict): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  const text = (v: BValue | undefined) => (isBytes(v) ? decodeText(v) : undefined);
  addTracker(out, seen, text(root.entries.get("announce")));
  const list = root.entries.get("announce-list");
  if (Array.isArray(list)) {
    for (const tier of list) {
      if (Array.isArray(tier)) for (const url of tier) addTracker(out, seen, text(url));
      else addTracker(out, seen, text(tier));
    }
  }
  return out;
}

function isPadding(file: BDict, path: string[]): boolean {
  const attr = file.entries.get("attr");
  if (isBytes(attr) && attr.includes(0x70)) return true; // BEP 47 "p"
  // Older clients mark padding only by name.
  return path.length === 2 && path[0] === ".pad";
}

// ---------------------------------------------------------------------------
// .torrent files

export interface ParseOptions {
  /** Destinations whose naming every file must survive (default: those that keep every name, analysisNameRules). */
  names?: readonly NameRules[];
}

/** Refuses (name_clash) a torrent two of whose files one destination would store under one name. */
function checkNames(files: TorrentFileEntry[], rules: readonly NameRules[]): void {
  const paths = files.map((f) => f.path);
  for (const rule of rules) {
    const clash = findNameClash(paths, rule);
    if (clash)
      throw new TorrentError("name_clash", describeNameClash(clash, rule), {
        paths: clash.paths,
        destination: rule.label,
      });
  }
}

/**
 * Reads and checks a .torrent file. Throws TorrentError naming the first
 * problem found. Supports v1 and hybrid (v1 + v2) torrents; v2-only torrents
 * are refused with code `v2_only` (BitTorrent clients in the fleet speak v1).
 */
export async function parseTorrentFile(bytes: Uint8Array, options: ParseOptions = {}): Promise<TorrentInfo> {
  if (bytes.length === 0) throw new TorrentError("empty", "The .torrent file is empty.");
  if (bytes.length > MAX_TORRENT_BYTES) {
    throw new TorrentError(
      "too_large",
      `The .torrent file is ${bytes.length} bytes; the limit is ${MAX_TORRENT_BYTES} bytes (${MAX_TORRENT_BYTES / 1024 / 1024} MiB).`,
      { size: bytes.length, limit: MAX_TORRENT_BYTES },
    );
  }
  const root = decodeBencode(bytes);
  if (!isDict(root))
    throw new TorrentError("not_a_torrent", "This is not a .torrent file: it is not a bencoded dictionary.");
  const info = root.entries.get("info");
  if (!isDict(info))
    throw new TorrentError("not_a_torrent", 'This is not a .torrent file: it has no "info" dictionary.');
  const infoBytes = bytes.subarray(info.start, info.end);

  const metaVersion = info.entries.get("meta version");
  if (metaVersion !== undefined && metaVersion !== 2) {
    throw new TorrentError(
      "unsupported_version",
      `The torrent uses meta version ${String(metaVersion)}; only v1 and v2 exist.`,
    );
  }
  const v2 = metaVersion === 2;
  const pieces = info.entries.get("pieces");
  if (v2 && pieces === undefined) {
    const infoHashV2 = await digest("SHA-256", infoBytes);
    throw new TorrentError(
      "v2_only",
      "This is a BitTorrent v2-only torrent; TorreClou downloads v1 and hybrid (v1 + v2) torrents. Ask for a hybrid torrent or a magnet link with a v1 hash.",
      { infoHashV2 },
    );
  }

  const name = readName(info);

  const pieceLength = info.entries.get("piece length");
  if (!isInt(pieceLength) || pieceLength <= 0 || pieceLength > MAX_PIECE_LENGTH) {
    throw new TorrentError(
      "invalid_piece_length",
      isInt(pieceLength)
        ? `The torrent's piece length (${pieceLength}) must be between 1 byte and ${MAX_PIECE_LENGTH / 1024 / 1024} MiB.`
        : "The torrent has no piece length.",
    );
  }
  const list = info.entries.get("files");
  const single = info.entries.get("length");
  if (list !== undefined && single !== undefined)
    throw new TorrentError("not_a_torrent", 'The torrent has both "files" and "length"; it must have one.');
  const files: TorrentFileEntry[] = [];
  let total = 0; // including padding: pieces cover it
  let listed = 0;
  if (list !== undefined) {
    if (!Array.isArray(list) || list.length === 0)
      throw new TorrentError("not_a_torrent", "The torrent's file list is empty or malformed.");
    if (list.length > MAX_TORRENT_FILES) {
      throw new TorrentError(
        "too_many_files",
        `The torrent lists ${list.length} files; the limit is ${MAX_TORRENT_FILES}.`,
        { count: list.length, limit: MAX_TORRENT_FILES },
      );
    }
    const paths = new Set<string>();
    const folders = new Set<string>();
    for (const [index, entry] of list.entries()) {
      if (!isDict(entry))
        throw new TorrentError("not_a_torrent", `The torrent's file #${index} is malformed.`, { index });
      const size = checkSize(entry.entries.get("length"), `file #${index}`);
      const parts = readPath(entry, index);
      total += size;
      if (!Number.isSafeInteger(total))
        throw new TorrentError("invalid_size", "The torrent's total size is too large.");
      if (isPadding(entry, parts)) continue;
      const path = [name, ...parts].join("/");
      if (encoder.encode(path).length > MAX_PATH_BYTES) {
        throw new TorrentError(
          "unsafe_path",
          `The torrent's file #${index} has a path longer than ${MAX_PATH_BYTES} bytes.`,
          {
            index,
          },
        );
      }
      if (paths.has(path) || folders.has(path)) {
        throw new TorrentError("duplicate_path", `The torrent lists "${printable(path)}" more than once.`, {
          index,
          path,
        });
      }
      paths.add(path);
      for (let i = 1; i < parts.length; i++) {
        const folder = [name, ...parts.slice(0, i)].join("/");
        if (paths.has(folder)) {
          throw new TorrentError(
            "duplicate_path",
            `The torrent uses "${printable(folder)}" as both a file and a folder.`,
            {
              index,
              path: folder,
            },
          );
        }
        folders.add(folder);
      }
      files.push({ index, path, size });
      listed += size;
    }
    if (files.length === 0) throw new TorrentError("not_a_torrent", "The torrent lists only padding files.");
  } else {
    const size = checkSize(single, "file");
    total = size;
    listed = size;
    files.push({ index: 0, path: name, size });
  }
  if (total === 0)
    throw new TorrentError("invalid_size", "The torrent contains no data: every file is empty.");
  checkNames(files, options.names ?? analysisNameRules);

  if (!isBytes(pieces)) throw new TorrentError("invalid_pieces", "The torrent has no piece hashes.");
  if (pieces.length === 0 || pieces.length % 20 !== 0) {
    throw new TorrentError(
      "invalid_pieces",
      `The torrent's piece hashes are ${pieces.length} bytes long, which is not a whole number of 20-byte SHA-1 hashes.`,
    );
  }

  const pieceCount = pieces.length / 20;
  const expected = Math.ceil(total / pieceLength);
  if (pieceCount !== expected) {
    throw new TorrentError(
      "invalid_pieces",
      `The torrent has ${pieceCount} piece hashes, but ${total} bytes in pieces of ${pieceLength} bytes need ${expected}.`,
      { pieceCount, expected },
    );
  }

  const result: TorrentInfo = {
    infoHash: await digest("SHA-1", infoBytes),
    name,
    files,
    totalSize: listed,
    pieceLength,
    pieceCount,
    trackers: readTrackers(root),
    private: info.entries.get("private") === 1,
  };
  if (v2) result.infoHashV2 = await digest("SHA-256", infoBytes);
  return result;
}

/**
 * The files a magnet's `so=` selects, checked against the torrent's files once
 * its metadata is known (undefined: no so=, every file). Throws TorrentError
 * (invalid_magnet) when it names a file the torrent does not have.
 */
export function checkSelectOnly(
  selectOnly: readonly number[] | undefined,
  files: readonly TorrentFileEntry[],
): number[] | undefined {
  if (!selectOnly) return undefined;
  const known = new Set(files.map((f) => f.index));
  const unknown = selectOnly.filter((i) => !known.has(i));
  if (unknown.length > 0) {
    const shown = unknown.slice(0, 10).join(", ") + (unknown.length > 10 ? ", …" : "");
    throw new TorrentError(
      "invalid_magnet",
      `The magnet link selects file${unknown.length === 1 ? "" : "s"} ${shown} (so=), but the torrent has no such file: it has ${files.length} file${files.length === 1 ? "" : "s"}, indexes ${files[0]?.index ?? 0} to ${files.at(-1)?.index ?? 0}.`,
    );
  }
  return [...selectOnly];
}

// ---------------------------------------------------------------------------
// Magnet links

/**
 * Reads a BEP 53 `so=` value strictly: comma-separated file indexes and
 * inclusive ranges (`0,2,4-6`), decimal without leading zeros or signs, no
 * empty items, each range ascending, every index below MAX_TORRENT_FILES.
 * Returns the indexes sorted, each once. Throws TorrentError (invalid_magnet)
 * naming what is wrong.
 */
export function parseSelectOnly(value: string): number[] {
  const bad = (why: string): never => {
    throw new TorrentError(
      "invalid_magnet",
      `The magnet link's file selection (so=${printable(value.slice(0, 80))}) is not valid: ${why}. It lists file indexes and ranges, like so=0,2,4-6.`,
    );
  };
  if (value === "") bad("it is empty");
  const chosen = new Set<number>();
  for (const item of value.split(",")) {
    const match = /^(0|[1-9]\d{0,5})(?:-(0|[1-9]\d{0,5}))?$/.exec(item);
    if (!match)
      bad(
        item === "" ? "it has an empty item" : `"${printable(item.slice(0, 20))}" is not an index or a range`,
      );
    const first = Number(match![1]);
    const last = match![2] === undefined ? first : Number(match![2]);
    if (last < first) bad(`the range ${item} runs backwards`);
    if (last >= MAX_TORRENT_FILES)
      bad(`index ${last} is past the most files a torrent may have (${MAX_TORRENT_FILES})`);
    for (let i = first; i <= last; i++) chosen.add(i);
  }
  return [...chosen].sort((a, b) => a - b);
}

/** The raw values of one magnet parameter, %-decoded (undefined: malformed escapes). */
function magnetParams(link: string, name: string): string[] | undefined {
  const values: string[] = [];
  for (const param of link.slice(8).split("&")) {
    const eq = param.indexOf("=");
    if (eq < 0 || param.slice(0, eq) !== name) continue;
    try {
      values.push(decodeURIComponent(param.slice(eq + 1)));
    } catch {
      return undefined;
    }
  }
  return values;
}

interface MagnetUriResult {
  xt?: string | string[];
  dn?: string | string[];
  tr?: string | string[];
}

const decodeMagnet = magnetDecode as (uri: string) => MagnetUriResult;

/** RFC 4648 base32 (no padding), as BitTorrent writes 32-character hashes. */
function base32ToHex(text: string): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  let hex = "";
  for (const char of text.toUpperCase()) {
    value = (value << 5) | alphabet.indexOf(char);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      hex += ((value >>> bits) & 0xff).toString(16).padStart(2, "0");
    }
  }
  return hex;
}

const many = (v: string | string[] | undefined): string[] =>
  v === undefined ? [] : Array.isArray(v) ? v : [v];

/** Reads a `magnet:?xt=urn:btih:…` link (hex or base32 v1 hash, or a v2 `urn:btmh:1220…` hash). */
export function parseMagnet(uri: string): MagnetInfo {
  const link = uri.trim();
  if (link.length > MAX_MAGNET_LENGTH) {
    throw new TorrentError("too_large", `The magnet link is longer than ${MAX_MAGNET_LENGTH} characters.`);
  }
  if (!link.toLowerCase().startsWith("magnet:?")) {
    throw new TorrentError("invalid_magnet", 'A magnet link starts with "magnet:?".');
  }
  const so = magnetParams(link, "so");
  if (so === undefined) throw new TorrentError("invalid_magnet", "The magnet link has malformed %-escapes.");
  if (so.length > 1)
    throw new TorrentError("invalid_magnet", "The magnet link has more than one so= selection.");
  // Checked here first: the link library expands so= ranges without bounds.
  const selectOnly = so[0] === undefined ? undefined : parseSelectOnly(so[0]);
  let parsed: MagnetUriResult;
  try {
    parsed = decodeMagnet(`magnet:?${link.slice(8).replace(/(^|&)so=[^&]*/g, "$1")}`);
  } catch {
    throw new TorrentError("invalid_magnet", "The magnet link has malformed %-escapes.");
  }
  let v1: string | undefined;
  let v2: string | undefined;
  for (const xt of many(parsed.xt)) {
    const hex = /^urn:btih:([0-9a-f]{40})$/i.exec(xt)?.[1];
    const base32 = /^urn:btih:([a-z2-7]{32})$/i.exec(xt)?.[1];
    const multihash = /^urn:btmh:1220([0-9a-f]{64})$/i.exec(xt)?.[1];
    if (hex !== undefined) v1 ??= hex.toLowerCase();
    else if (base32 !== undefined) v1 ??= base32ToHex(base32);
    else if (multihash !== undefined) v2 ??= multihash.toLowerCase();
  }
  if (v1 === undefined && v2 === undefined) {
    throw new TorrentError(
      "invalid_magnet",
      "The magnet link has no BitTorrent info hash (xt=urn:btih: followed by 40 hex or 32 base32 characters).",
    );
  }
  if (v1 === undefined) {
    // webtorrent, which the fleet downloads with, speaks BitTorrent v1 only.
    throw new TorrentError(
      "v2_only",
      "This magnet link has only a BitTorrent v2 hash (xt=urn:btmh:); TorreClou downloads from swarms that offer v1 metadata. Use a hybrid magnet link, which carries a v1 hash (xt=urn:btih:) as well, or its .torrent file.",
      { infoHashV2: v2 },
    );
  }
  const result: MagnetInfo = { infoHash: v1, trackers: [] };
  if (v2 !== undefined) result.infoHashV2 = v2;
  if (selectOnly !== undefined) result.selectOnly = selectOnly;
  const dn = many(parsed.dn)[0];
  if (dn !== undefined) {
    const name = replaceControl(dn, "").trim().slice(0, MAX_PATH_COMPONENT_BYTES);
    if (name !== "") result.name = name;
  }
  const seen = new Set<string>();
  for (const tr of many(parsed.tr)) addTracker(result.trackers, seen, tr);
  return result;
}

// ---------------------------------------------------------------------------
// Metadata a worker resolved

/**
 * The info dictionary of a .torrent, byte for byte as it appears in the file
 * (what the v1 info hash is the SHA-1 of). Throws TorrentError when there is none.
 */
export function infoDictionaryOf(torrent: Uint8Array): Uint8Array {
  const root = decodeBencode(torrent);
  const info = isDict(root) ? root.entries.get("info") : undefined;
  if (!isDict(info))
    throw new TorrentError("not_a_torrent", 'This is not a .torrent file: it has no "info" dictionary.');
  return torrent.slice(info.start, info.end);
}

/**
 * A .torrent's HTTP(S) web seeds (BEP 19 `url-list`: one URL or a list), the
 * sources a browser can fetch from besides WebRTC peers. Throws TorrentError
 * when the bytes are not a .torrent.
 */
export function webSeedsOf(torrent: Uint8Array): string[] {
  const root = decodeBencode(torrent);
  if (!isDict(root)) throw new TorrentError("not_a_torrent", "This is not a .torrent file.");
  const raw = root.entries.get("url-list");
  const out: string[] = [];
  for (const item of Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]) {
    const url = isBytes(item) ? decodeText(item)?.trim() : undefined;
    if (url && url.length <= 2048 && /^https?:\/\/[^\s/?#]+[^\s]*$/i.test(url) && !out.includes(url))
      out.push(url);
  }
  return out;
}

function bencodeString(text: string | Uint8Array): Uint8Array {
  const bytes = typeof text === "string" ? encoder.encode(text) : text;
  return concatBytes([encoder.encode(`${bytes.length}:`), bytes]);
}

function concatBytes(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * A .torrent around an info dictionary: the raw dictionary unchanged (so its
 * SHA-1 is still the info hash), with the trackers and web seeds given (a
 * magnet's own, kept out of anything stored). Keys in bencode's sorted order.
 */
export function torrentFromInfo(
  info: Uint8Array,
  sources: { trackers?: readonly string[]; webSeeds?: readonly string[] } = {},
): Uint8Array {
  const l = encoder.encode("l");
  const e = encoder.encode("e");
  const chunks: Uint8Array[] = [encoder.encode("d")];
  const trackers = sources.trackers ?? [];
  if (trackers.length > 0) {
    chunks.push(bencodeString("announce"), bencodeString(trackers[0]!));
    chunks.push(bencodeString("announce-list"), l);
    for (const tracker of trackers) chunks.push(l, bencodeString(tracker), e);
    chunks.push(e);
  }
  chunks.push(bencodeString("info"), info);
  const webSeeds = sources.webSeeds ?? [];
  if (webSeeds.length > 0) {
    chunks.push(bencodeString("url-list"), l);
    for (const seed of webSeeds) chunks.push(bencodeString(seed));
    chunks.push(e);
  }
  chunks.push(e);
  return concatBytes(chunks);
}
