// Deterministic sample content and the .torrent that describes it. The same
// inputs always give the same bytes and the same info hash, so a demo job or a
// test fixture can be rebuilt anywhere without shipping data around.
import { createCipheriv, createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { dirname, join, normalize, sep } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import createTorrent from "create-torrent";
import { readTorrent } from "./bencode.ts";

/** A file of pseudo-random bytes (`size`) or of fixed `content`. */
export type TorrentFile = { path: string; size: number } | { path: string; content: string | Uint8Array };

export interface MakeTorrentOptions {
  /** Where the content (`dir/name/...`) and `dir/name.torrent` are written. */
  dir: string;
  /** Torrent name: the folder name, or the file name of a one-file torrent. */
  name: string;
  /** Paths inside the torrent, `/`-separated. A single file whose path equals `name` makes a single-file torrent. */
  files: TorrentFile[];
  announce: string[];
  /** Web seeds (BEP 19 `url-list`). */
  urlList?: string[];
  /** Bytes per piece, a power of two; by default chosen from the total size. */
  pieceLength?: number;
}

export interface MadeTorrent {
  torrentPath: string;
  /** Hex SHA-1 of the info dictionary. */
  infoHash: string;
  magnet: string;
  /** The content on disk: `dir/name`, a folder or (single-file torrent) a file. */
  root: string;
}

// Constant metadata outside the info dictionary, so the .torrent file itself is byte-stable too.
const CREATION_DATE = new Date("2025-01-01T00:00:00Z");
const CREATED_BY = "TorreClou local seeder";
// Bumped whenever the generator changes, so cached torrents are rebuilt.
const GENERATOR_VERSION = "aes-ctr-v1";

const KiB = 1024;
const MiB = 1024 * KiB;
const ZEROS = Buffer.alloc(MiB);

/**
 * Pseudo-random, incompressible bytes derived from `seed`: the AES-128-CTR
 * keystream, generated lazily in 1 MiB blocks so large files never sit in memory.
 */
export function sampleStream(seed: string, size: number): Readable {
  const key = createHash("sha256").update(`torreclou-sample:${seed}`).digest();
  const cipher = createCipheriv("aes-128-ctr", key.subarray(0, 16), key.subarray(16, 32));
  async function* blocks(): AsyncGenerator<Buffer> {
    for (let left = size; left > 0; left -= ZEROS.length) {
      yield cipher.update(left >= ZEROS.length ? ZEROS : ZEROS.subarray(0, left));
    }
  }
  return Readable.from(blocks(), { objectMode: false });
}

function fileSize(file: TorrentFile): number {
  return "size" in file ? file.size : Buffer.byteLength(file.content);
}

function fileStream(name: string, file: TorrentFile): Readable {
  if ("size" in file) return sampleStream(`${name}/${file.path}`, file.size);
  return Readable.from([Buffer.from(file.content)], { objectMode: false });
}

/** A power of two giving at most ~2000 pieces, between 16 KiB and 4 MiB. */
export function defaultPieceLength(totalBytes: number): number {
  let length = 16 * KiB;
  while (length < 4 * MiB && totalBytes / length > 2000) length *= 2;
  return length;
}

export function magnetLink(infoHash: string, name: string, announce: string[]): string {
  const trackers = announce.map((url) => `&tr=${encodeURIComponent(url)}`).join("");
  return `magnet:?xt=urn:btih:${infoHash}&dn=${encodeURIComponent(name)}${trackers}`;
}

function checkPath(path: string): void {
  const parts = path.split("/");
  if (path === "" || parts.some((part) => part === "" || part === "." || part === "..")) {
    throw new Error(`invalid path in torrent: "${path}"`);
  }
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch {
    return undefined;
  }
}

/** Writes a file through a temporary name, so a crash or a parallel writer never leaves a half file. */
async function writeAtomically(path: string, source: Readable | Uint8Array): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const temporary = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.partial`;
  if (source instanceof Uint8Array) await writeFile(temporary, source);
  else await pipeline(source, createWriteStream(temporary));
  await rename(temporary, path);
}

function specKey(opts: MakeTorrentOptions, pieceLength: number): string {
  const files = opts.files.map((file) =>
    "size" in file
      ? { path: file.path, size: file.size }
      : { path: file.path, sha256: createHash("sha256").update(file.content).digest("hex") },
  );
  const spec = {
    v: GENERATOR_VERSION,
    name: opts.name,
    files,
    announce: opts.announce,
    urlList: opts.urlList ?? [],
    pieceLength,
  };
  return createHash("sha256").update(JSON.stringify(spec)).digest("hex");
}

function hashInto(
  name: string,
  files: TorrentFile[],
  single: boolean,
  pieceLength: number,
  announce: string[],
  urlList: string[],
): Promise<Uint8Array> {
  // Streams named with their full path: create-torrent strips the common `name/` prefix.
  const inputs = files.map((file) =>
    Object.assign(fileStream(name, file), { name: single ? name : `${name}/${file.path}` }),
  );
  return new Promise<Uint8Array>((resolve, reject) => {
    createTorrent(
      inputs,
      {
        name,
        announceList: announce.map((url) => [url]),
        ...(urlList.length > 0 ? { urlList } : {}),
        creationDate: CREATION_DATE,
        createdBy: CREATED_BY,
        pieceLength,
        filterJunkFiles: false,
      },
      (error, torrent) => (error ? reject(error) : resolve(torrent)),
    );
  });
}

/**
 * Writes the content of a torrent (only files that are missing or of the wrong
 * size) and its .torrent file. Pieces are hashed from the generator, not the
 * disk, so the torrent always describes the canonical bytes. A .torrent built
 * earlier from the same description is reused.
 */
export async function makeTorrent(opts: MakeTorrentOptions): Promise<MadeTorrent> {
  const { dir, name, files, announce } = opts;
  if (files.length === 0) throw new Error("a torrent needs at least one file");
  if (name === "" || name.includes("/") || name === "." || name === "..") {
    throw new Error(`invalid torrent name: "${name}"`);
  }
  for (const file of files) checkPath(file.path);
  const single = files.length === 1 && files[0]?.path === name;
  if (files.length === 1 && !single) {
    // create-torrent turns one input into a single-file torrent; make that explicit.
    throw new Error(`a one-file torrent stores its file as "${name}": pass path "${name}"`);
  }
  if (new Set(files.map((file) => file.path)).size !== files.length)
    throw new Error("duplicate paths in torrent");

  const total = files.reduce((sum, file) => sum + fileSize(file), 0);
  const pieceLength = opts.pieceLength ?? defaultPieceLength(total);
  if (!Number.isInteger(Math.log2(pieceLength)) || pieceLength < 16 * KiB) {
    throw new Error(`piece length must be a power of two >= 16 KiB, got ${pieceLength}`);
  }

  const root = join(dir, name);
  for (const file of files) {
    const path = single ? root : join(root, ...file.path.split("/"));
    if (!normalize(path).startsWith(root + (single ? "" : sep)))
      throw new Error(`path escapes the torrent: ${file.path}`);
    if ((await sizeOf(path)) === fileSize(file)) continue;
    await writeAtomically(path, "size" in file ? fileStream(name, file) : Buffer.from(file.content));
  }

  const torrentPath = join(dir, `${name}.torrent`);
  const keyPath = `${torrentPath}.spec`;
  const key = specKey(opts, pieceLength);
  const cachedKey = await readFile(keyPath, "utf8").catch(() => undefined);
  let bytes = cachedKey === key ? await readFile(torrentPath).catch(() => undefined) : undefined;
  if (!bytes) {
    const torrent = await hashInto(name, files, single, pieceLength, announce, opts.urlList ?? []);
    await writeAtomically(torrentPath, torrent);
    await writeAtomically(keyPath, Buffer.from(key));
    bytes = Buffer.from(torrent);
  }
  const { infoHash } = readTorrent(bytes);
  return { torrentPath, infoHash, magnet: magnetLink(infoHash, name, announce), root };
}

/** The demo torrent a newcomer downloads: a small folder with text, "video" and "audio". */
export const DEMO_NAME = "TorreClou Demo";

export const DEMO_FILES: readonly TorrentFile[] = [
  {
    path: "README.txt",
    content:
      "TorreClou demo torrent\n\n" +
      "This folder is generated by the local seeder (local/seeder) and seeded on\n" +
      "127.0.0.1 so a job can run end to end without the internet. The .bin files\n" +
      "are deterministic pseudo-random bytes; their sizes deliberately do not line\n" +
      "up with piece boundaries.\n",
  },
  // Odd sizes so files straddle piece boundaries, as real content does.
  { path: "video/sample-a.bin", size: 3 * MiB + 12_345 },
  { path: "audio/sample-b.bin", size: 2 * MiB - 777 },
];

/** Writes the demo content and its .torrent under `dir` (with web seeds: a url-list, outside the info hash). */
export function makeDemoTorrent(opts: {
  dir: string;
  announce: string[];
  urlList?: string[];
}): Promise<MadeTorrent> {
  return makeTorrent({
    dir: opts.dir,
    name: DEMO_NAME,
    files: [...DEMO_FILES],
    announce: opts.announce,
    ...(opts.urlList ? { urlList: opts.urlList } : {}),
  });
}
