// Scratch files named by index, with a real peer: aria2c seeds a torrent of
// look-alike names over a loopback tracker and a Download fetches it. Every
// file lands in `<scratch>/<index>` with its own bytes, verified piece buffers
// are still handed back for reuse (the patched webtorrent only does that for
// fs-chunk-store and its subclasses), and a restart re-verifies the data on
// disk and fetches only what is damaged.
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, open, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import Piece from "torrent-piece";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, quietLog, type Spawned } from "../../../local/process.ts";
import {
  type MadeTorrent,
  makeTorrent,
  readTorrent,
  seedAll,
  startTracker,
  type TorrentFile,
  type Tracker,
} from "../../../local/seeder/index.ts";
import { LocalReader } from "../sinks/local.ts";
import { Download } from "./download.ts";
import { Ring, ringPath } from "./ring.ts";
import { IndexedChunkStore, type Rings, scratchFile } from "./store.ts";

const KiB = 1024;
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
const discovery = { dht: false, lsd: false, natUpnp: false, natPmp: false, utp: false, maxConns: 20 };
const silent = pino({ enabled: false });

/** Names that once met in one scratch file, or that name a place outside a plain folder. */
const files: TorrentFile[] = [
  { path: "what.bin", size: 300 * KiB + 11 },
  { path: "what?.bin", size: 200 * KiB + 7 },
  { path: "x.bin", size: 100 * KiB + 5 },
  { path: "x.bin ", size: 100 * KiB + 3 },
  { path: " lead/y.bin", size: 50 * KiB },
  { path: "ok/ .. /x.txt", content: "under a folder named space-dot-dot-space\n" },
  { path: 'a<b>c:d"e|f*g.bin', size: 40 * KiB },
];

let tracker: Tracker;
let seeder: Spawned;
let dataDir: string;
let made: MadeTorrent;
let torrentBytes: Buffer;
/** sha256 of each file's content, by index. */
let expected: string[];

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "torreclou-store-"));
  tracker = await startTracker({ port: await freePort(), log: quietLog });
  made = await makeTorrent({
    dir: join(dataDir, "seed"),
    name: "Looks",
    files,
    announce: [tracker.announceUrl],
    pieceLength: 16 * KiB,
  });
  torrentBytes = await readFile(made.torrentPath);
  const summary = readTorrent(torrentBytes);
  expected = await Promise.all(
    summary.files.map(async (f) => sha256(await readFile(join(dataDir, "seed", ...f.path.split("/"))))),
  );
  expect(new Set(expected).size).toBe(files.length);
  seeder = await seedAll({
    torrents: [{ torrentPath: made.torrentPath, dir: join(dataDir, "seed") }],
    peerPort: await freePort(),
    log: quietLog,
  });
});

afterAll(async () => {
  await seeder?.stop();
  await tracker?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

/** Downloads every file of the torrent into `dir`; returns the bytes received from peers. */
async function fetchAll(dir: string): Promise<{ received: number; ready: boolean[] }> {
  const download = new Download(torrentBytes, dir, discovery, silent);
  try {
    const meta = await download.metadata(new AbortController().signal);
    await download.ready();
    // What re-verification found complete, before anything is fetched.
    const ready = meta.files.map((f) => download.isComplete(f.index));
    for (const f of meta.files) download.selectRange(f.index, 0, f.size);
    await Promise.all(meta.files.map((f) => download.waitRange(f.index, 0, f.size)));
    for (const f of meta.files) expect(download.localPath(f.index)).toBe(scratchFile(dir, f.index));
    return { received: download.received, ready };
  } finally {
    await download.destroy();
  }
}

async function expectScratchIntact(dir: string): Promise<void> {
  // Only index-named files: nothing the torrent calls its files or folders.
  expect((await readdir(dir)).sort()).toEqual(files.map((_, i) => String(i)).sort());
  for (const [index, hash] of expected.entries())
    expect(sha256(await readFile(scratchFile(dir, index))), files[index]!.path).toBe(hash);
}

describe("scratch files named by index", () => {
  it("keeps every file of a look-alike torrent in a file of its own, with its own bytes", async () => {
    const dir = join(dataDir, "scratch-1");
    // Count the verified piece buffers webtorrent hands back for reuse.
    const release = Piece.release;
    let released = 0;
    Piece.release = (buffer: Uint8Array) => {
      released++;
      release(buffer);
    };
    try {
      await fetchAll(dir);
    } finally {
      Piece.release = release;
    }
    await expectScratchIntact(dir);
    // Every piece's buffer, once verified and written.
    const total = readTorrent(torrentBytes).files.reduce((sum, f) => sum + f.length, 0);
    expect(released).toBe(Math.ceil(total / (16 * KiB)));
  });

  it("re-verifies the data on disk after a restart and fetches only the damaged piece", async () => {
    const dir = join(dataDir, "scratch-2");
    const first = await fetchAll(dir);
    expect(first.ready.every((done) => !done)).toBe(true);
    // A crash left one byte of file #1 ("what?.bin") wrong, in a piece no other file shares.
    const handle = await open(scratchFile(dir, 1), "r+");
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, 100 * KiB);
    byte[0] = byte[0]! ^ 0xff;
    await handle.write(byte, 0, 1, 100 * KiB);
    await handle.close();

    const second = await fetchAll(dir);
    expect(second.ready).toEqual(files.map((_, i) => i !== 1));
    // The one 16 KiB piece holding the damaged byte (and some wire overhead), not the ~790 KiB again.
    expect(first.received).toBeGreaterThan(790 * KiB);
    expect(second.received).toBeGreaterThanOrEqual(16 * KiB);
    expect(second.received).toBeLessThan(2 * 16 * KiB);
    await expectScratchIntact(dir);
  });

  it("hands the pieces an upload claimed to it in memory and writes only the others", async () => {
    const dir = join(dataDir, "scratch-3");
    const download = new Download(torrentBytes, dir, discovery, silent);
    const skipped: [number, number, number][] = [];
    download.handoff.onSkipped = (index, start, end) => skipped.push([index, start, end]);
    try {
      const meta = await download.metadata(new AbortController().signal);
      await download.ready();
      const size = meta.files[0]!.size;
      const part = Buffer.alloc(size);
      const claim = download.handoff.claim(0, 0, part);
      for (const f of meta.files) download.selectRange(f.index, 0, f.size);
      await Promise.all(meta.files.map((f) => download.waitRange(f.index, 0, f.size)));
      claim.release();
      // File #0 came whole into the claim; its last piece, shared with file #1, went to disk as well.
      expect(claim.missing()).toEqual([]);
      expect(sha256(part)).toBe(expected[0]);
      const shared = Math.floor(size / (16 * KiB)) * 16 * KiB;
      expect(skipped.filter(([index]) => index !== 0)).toEqual([]);
      expect(skipped.reduce((sum, [, a, b]) => sum + b - a, 0)).toBe(shared);
      const onDisk = await readFile(scratchFile(dir, 0));
      expect(onDisk.subarray(0, shared).every((b) => b === 0)).toBe(true);
      expect(onDisk.subarray(shared)).toEqual(part.subarray(shared));
      for (const [index, hash] of expected.entries())
        if (index > 0) expect(sha256(await readFile(scratchFile(dir, index))), files[index]!.path).toBe(hash);
    } finally {
      await download.destroy();
    }
  });

  it.each([
    ["on the main thread", 10_000, true],
    ["on libuv's pool after a slow write", -1, false],
  ])("writes pieces across files %s", async (_, slowWriteMs, writesHere) => {
    const dir = join(dataDir, `direct-${writesHere}`);
    const lengths = [20 * KiB, 30 * KiB];
    const bytes = randomBytes(50 * KiB);
    const store = new IndexedChunkStore(16 * KiB, {
      path: dir,
      files: [
        { path: "a", length: lengths[0]!, offset: 0 },
        { path: "b", length: lengths[1]!, offset: lengths[0]! },
      ],
      slowWriteMs,
    });
    const put = (index: number) =>
      new Promise<void>((done, fail) =>
        store.put(
          index,
          bytes.subarray(index * 16 * KiB, Math.min(bytes.length, (index + 1) * 16 * KiB)),
          (err) => (err ? fail(err) : done()),
        ),
      );
    // A piece of the wrong length is refused, as fs-chunk-store does.
    await expect(
      new Promise<void>((done, fail) =>
        store.put(0, bytes.subarray(0, 100), (err) => (err ? fail(err) : done())),
      ),
    ).rejects.toThrow(/length/);
    for (const index of [3, 1, 0, 2]) await put(index);
    expect(store.writesHere).toBe(writesHere);
    await new Promise<void>((done) => store.close(() => done()));
    expect(await readFile(scratchFile(dir, 0))).toEqual(bytes.subarray(0, lengths[0]));
    expect(await readFile(scratchFile(dir, 1))).toEqual(bytes.subarray(lengths[0]));
  });
});

describe("an encrypted peer", () => {
  it("fetches from a peer that takes only MSE/PE connections encrypted with RC4", async () => {
    // Its own tracker and torrent, so the plaintext seeder above is not among the peers.
    const own = await startTracker({ port: await freePort(), log: quietLog });
    const dir = join(dataDir, "encrypted");
    let strict: Spawned | undefined;
    try {
      const torrent = await makeTorrent({
        dir: join(dir, "seed"),
        name: "Sealed",
        files: [{ path: "Sealed", size: 200 * KiB + 9 }],
        announce: [own.announceUrl],
        pieceLength: 16 * KiB,
      });
      strict = await seedAll({
        torrents: [{ torrentPath: torrent.torrentPath, dir: join(dir, "seed") }],
        peerPort: await freePort(),
        log: quietLog,
        requireEncryption: true,
      });
      const download = new Download(
        await readFile(torrent.torrentPath),
        join(dir, "scratch"),
        discovery,
        silent,
      );
      try {
        await download.metadata(new AbortController().signal);
        await download.ready();
        download.selectRange(0, 0, 200 * KiB + 9);
        await download.waitRange(0, 0, 200 * KiB + 9);
      } finally {
        await download.destroy();
      }
      expect(sha256(await readFile(scratchFile(join(dir, "scratch"), 0)))).toBe(
        sha256(await readFile(join(dir, "seed", "Sealed"))),
      );
    } finally {
      await strict?.stop();
      await own.stop();
    }
  });
});

describe("a file streaming through a ring", () => {
  it.each([
    ["on the main thread", 10_000],
    ["on libuv's pool after a slow write", -1],
  ])("writes its pieces at the ring's positions %s, and never reads them back", async (_, slowWriteMs) => {
    const dir = join(dataDir, `ring-${slowWriteMs}`);
    const bytes = randomBytes(80 * KiB);
    // File #1 starts 4 KiB into the torrent's second piece: its first 12 KiB share that piece with file #0.
    const ring = new Ring(60 * KiB, 20 * KiB, 16 * KiB);
    const rings: Rings = new Map([[1, { ring, path: ringPath(scratchFile(dir, 1)) }]]);
    const store = new IndexedChunkStore(16 * KiB, {
      path: dir,
      files: [
        { path: "a", length: 20 * KiB, offset: 0 },
        { path: "b", length: 60 * KiB, offset: 20 * KiB },
      ],
      rings,
      slowWriteMs,
    });
    const put = (index: number) =>
      new Promise<void>((done, fail) =>
        store.put(index, bytes.subarray(index * 16 * KiB, (index + 1) * 16 * KiB), (err) =>
          err ? fail(err) : done(),
        ),
      );
    const get = (index: number) =>
      new Promise<Uint8Array>((done, fail) => store.get(index, (err, buf) => (err ? fail(err) : done(buf!))));
    ring.addCycle(32 * KiB);
    for (const index of [0, 1, 2, 3]) await put(index);
    // The last piece goes round the ring, over the first cycle's first 16 KiB.
    ring.addCycle(32 * KiB);
    await put(4);

    const reader = await LocalReader.open({ localPath: ringPath(scratchFile(dir, 1)), ring });
    const b = bytes.subarray(20 * KiB);
    for (const [start, end] of [
      [0, 12 * KiB],
      [28 * KiB, 60 * KiB],
    ] as const) {
      const read = Buffer.alloc(end - start);
      await reader.read(read, start);
      expect(read.equals(b.subarray(start, end)), `bytes ${start}-${end}`).toBe(true);
    }
    await reader.close();
    // Head, then one cycle's 32 KiB: the ring file holds no more.
    expect((await stat(ringPath(scratchFile(dir, 1)))).size).toBe(12 * KiB + 32 * KiB);
    // File #0 is a plain scratch file, read back as ever; pieces in the ring are not.
    expect(Buffer.from(await get(0)).equals(bytes.subarray(0, 16 * KiB))).toBe(true);
    await expect(get(2)).rejects.toThrow(/scratch ring/);
    await expect(get(1)).rejects.toThrow(/scratch ring/);
    await expect(stat(scratchFile(dir, 1))).rejects.toMatchObject({ code: "ENOENT" });
    await new Promise<void>((done) => store.close(() => done()));
  });
});
