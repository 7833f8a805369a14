// Just enough bencode to read .torrent files and tracker replies: the info
// hash is the SHA-1 of the raw bytes of the "info" value, so the decoder keeps
// byte spans rather than re-encoding anything.
import { createHash } from "node:crypto";

export type BValue = number | Uint8Array | BValue[] | BDict;
export type BDict = Map<string, BValue>;

interface Parsed {
  value: BValue;
  end: number;
}

function fail(at: number, why: string): never {
  throw new Error(`bencode: ${why} at byte ${at}`);
}

function digitsUntil(buf: Uint8Array, start: number, terminator: number): { n: number; end: number } {
  const stop = buf.indexOf(terminator, start);
  if (stop < 0) fail(start, "unterminated number");
  const text = Buffer.from(buf.subarray(start, stop)).toString("latin1");
  if (!/^-?\d+$/.test(text)) fail(start, `bad number "${text}"`);
  return { n: Number(text), end: stop + 1 };
}

function parse(buf: Uint8Array, pos: number, spans?: Map<string, [number, number]>): Parsed {
  const c = buf[pos];
  if (c === undefined) fail(pos, "unexpected end");
  if (c === 0x69 /* i */) {
    const { n, end } = digitsUntil(buf, pos + 1, 0x65 /* e */);
    return { value: n, end };
  }
  if (c === 0x6c /* l */) {
    const list: BValue[] = [];
    let at = pos + 1;
    while (buf[at] !== 0x65) {
      const item = parse(buf, at);
      list.push(item.value);
      at = item.end;
    }
    return { value: list, end: at + 1 };
  }
  if (c === 0x64 /* d */) {
    const dict: BDict = new Map();
    let at = pos + 1;
    while (buf[at] !== 0x65) {
      const key = parse(buf, at);
      if (!(key.value instanceof Uint8Array)) fail(at, "dictionary key is not a string");
      const name = Buffer.from(key.value).toString("latin1");
      const item = parse(buf, key.end);
      spans?.set(name, [key.end, item.end]);
      dict.set(name, item.value);
      at = item.end;
    }
    return { value: dict, end: at + 1 };
  }
  if (c >= 0x30 && c <= 0x39) {
    const { n, end } = digitsUntil(buf, pos, 0x3a /* : */);
    if (end + n > buf.length) fail(pos, "string runs past the end");
    return { value: buf.subarray(end, end + n), end: end + n };
  }
  return fail(pos, `unexpected byte 0x${c.toString(16)}`);
}

export function decode(buf: Uint8Array): BValue {
  return parse(buf, 0).value;
}

/** Decodes a top-level dictionary and remembers where each of its values lies. */
export function decodeDict(buf: Uint8Array): { dict: BDict; spans: Map<string, [number, number]> } {
  const spans = new Map<string, [number, number]>();
  const { value } = parse(buf, 0, spans);
  if (!(value instanceof Map)) throw new Error("bencode: top level is not a dictionary");
  return { dict: value, spans };
}

export function text(value: BValue | undefined): string | undefined {
  return value instanceof Uint8Array ? Buffer.from(value).toString("utf8") : undefined;
}

export interface TorrentSummary {
  infoHash: string;
  name: string;
  announce: string[];
  /** Paths relative to the download directory (`name/...`, or `name` for a single file). */
  files: { path: string; length: number }[];
}

/** Reads what a .torrent's users need: its info hash (hex), name and trackers. */
export function readTorrent(bytes: Uint8Array): TorrentSummary {
  const { dict, spans } = decodeDict(bytes);
  const span = spans.get("info");
  const info = dict.get("info");
  if (!span || !(info instanceof Map)) throw new Error("not a .torrent: no info dictionary");
  const infoHash = createHash("sha1").update(bytes.subarray(span[0], span[1])).digest("hex");
  const announce: string[] = [];
  const tiers = dict.get("announce-list");
  if (Array.isArray(tiers)) {
    for (const tier of tiers) {
      if (!Array.isArray(tier)) continue;
      for (const url of tier) {
        const u = text(url);
        if (u && !announce.includes(u)) announce.push(u);
      }
    }
  }
  const single = text(dict.get("announce"));
  if (single && !announce.includes(single)) announce.unshift(single);
  const name = text(info.get("name")) ?? "";
  const files: { path: string; length: number }[] = [];
  const listed = info.get("files");
  if (Array.isArray(listed)) {
    for (const entry of listed) {
      if (!(entry instanceof Map)) continue;
      const parts = entry.get("path");
      const length = entry.get("length");
      if (!Array.isArray(parts) || typeof length !== "number") continue;
      files.push({ path: [name, ...parts.map((part) => text(part) ?? "")].join("/"), length });
    }
  } else {
    const length = info.get("length");
    if (typeof length === "number") files.push({ path: name, length });
  }
  return { infoHash, name, announce, files };
}
