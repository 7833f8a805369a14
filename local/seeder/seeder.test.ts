import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, readFile, rm, stat, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, quietLog } from "../process.ts";
import {
  ARIA2_LOOPBACK_FLAGS,
  DEMO_FILES,
  DEMO_NAME,
  makeDemoTorrent,
  makeTorrent,
  readTorrent,
  type Seeder,
  scrapeSeeders,
  seed,
  startSeeder,
} from "./index.ts";

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** Downloads a torrent with a second, independent aria2c that only knows the tracker. */
async function downloadWithAria2(torrentPath: string, dir: string): Promise<void> {
  const port = await freePort();
  const child = spawn(
    "aria2c",
    [
      ...ARIA2_LOOPBACK_FLAGS,
      `--listen-port=${port}`,
      `--dir=${dir}`,
      "--seed-time=0",
      "--bt-stop-timeout=30",
      `--stop-with-process=${process.pid}`,
      torrentPath,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout.on("data", (data: Buffer) => (output += data.toString()));
  child.stderr.on("data", (data: Buffer) => (output += data.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  if (code !== 0) throw new Error(`aria2c download exited with ${code}:\n${output}`);
}

describe("demo seeder", () => {
  const temporary: string[] = [];
  const tempDir = async (label: string) => {
    const dir = await mkdtemp(join(tmpdir(), `torreclou-${label}-`));
    temporary.push(dir);
    return dir;
  };
  let dataDir: string;
  let peerPort: number;
  let seeder: Seeder | undefined;

  beforeAll(async () => {
    dataDir = await tempDir("seeder");
    peerPort = await freePort();
    seeder = await startSeeder({ dataDir, trackerPort: await freePort(), peerPort, log: quietLog });
  });

  afterAll(async () => {
    await seeder?.stop();
    for (const dir of temporary) await rm(dir, { recursive: true, force: true });
  });

  it("publishes the demo torrent and announces a reachable loopback seeder", async () => {
    const env = seeder!.env;
    expect(Object.keys(env).sort()).toEqual([
      "DEMO_INFO_HASH",
      "DEMO_MAGNET",
      "DEMO_TORRENT_PATH",
      "TRACKER_URL",
    ]);
    expect(env.TRACKER_URL).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/announce$/);
    expect(env.DEMO_INFO_HASH).toMatch(/^[0-9a-f]{40}$/);
    expect(seeder!.tracker.seeders(env.DEMO_INFO_HASH!)).toContain(`127.0.0.1:${peerPort}`);
    expect(await scrapeSeeders(env.TRACKER_URL!, env.DEMO_INFO_HASH!)).toBe(1);

    const torrent = readTorrent(await readFile(env.DEMO_TORRENT_PATH!));
    expect(torrent.infoHash).toBe(env.DEMO_INFO_HASH);
    expect(torrent.name).toBe(DEMO_NAME);
    expect(torrent.announce).toEqual([env.TRACKER_URL]);
    expect(torrent.files.map((file) => file.path)).toEqual(
      DEMO_FILES.map((file) => `${DEMO_NAME}/${file.path}`),
    );
  });

  it("has a magnet link naming the info hash and the tracker", () => {
    const { DEMO_MAGNET, DEMO_INFO_HASH, TRACKER_URL } = seeder!.env;
    const magnet = new URL(DEMO_MAGNET!);
    expect(magnet.protocol).toBe("magnet:");
    expect(magnet.searchParams.get("xt")).toBe(`urn:btih:${DEMO_INFO_HASH}`);
    expect(magnet.searchParams.get("dn")).toBe(DEMO_NAME);
    expect(magnet.searchParams.getAll("tr")).toEqual([TRACKER_URL]);
  });

  it("serves the demo to a second aria2c, byte for byte", async () => {
    const downloads = await tempDir("download");
    await downloadWithAria2(seeder!.env.DEMO_TORRENT_PATH!, downloads);
    for (const file of DEMO_FILES) {
      const source = join(dataDir, DEMO_NAME, file.path);
      const copy = join(downloads, DEMO_NAME, file.path);
      expect(await sha256File(copy), file.path).toBe(await sha256File(source));
    }
  });

  it("generates the same info hash every time, whatever the tracker", async () => {
    const first = await makeDemoTorrent({
      dir: await tempDir("gen-a"),
      announce: ["http://127.0.0.1:1/announce"],
    });
    const second = await makeDemoTorrent({
      dir: await tempDir("gen-b"),
      announce: ["http://127.0.0.1:1/announce"],
    });
    expect(second.infoHash).toBe(first.infoHash);
    expect(first.infoHash).toBe(seeder!.env.DEMO_INFO_HASH);
    // Same inputs give the same .torrent bytes too (fixed creation date and creator).
    expect((await readFile(second.torrentPath)).equals(await readFile(first.torrentPath))).toBe(true);
    for (const file of DEMO_FILES) {
      expect(await sha256File(join(second.root, file.path))).toBe(
        await sha256File(join(first.root, file.path)),
      );
    }
  });

  it("rewrites only content that is missing or of the wrong size", async () => {
    const dir = await tempDir("regen");
    const made = await makeDemoTorrent({ dir, announce: ["http://127.0.0.1:1/announce"] });
    const video = join(made.root, "video/sample-a.bin");
    const audio = join(made.root, "audio/sample-b.bin");
    const expected = await sha256File(video);
    const audioBefore = await stat(audio);
    await truncate(video, 1000);
    const again = await makeDemoTorrent({ dir, announce: ["http://127.0.0.1:1/announce"] });
    expect(again.infoHash).toBe(made.infoHash);
    expect(await sha256File(video)).toBe(expected);
    expect((await stat(audio)).mtimeMs).toBe(audioBefore.mtimeMs);
  });

  it("seeds a torrent of many small files built with makeTorrent", async () => {
    const dir = await tempDir("many");
    const files = Array.from({ length: 200 }, (_, i) => ({
      path: `batch-${Math.floor(i / 50)}/file-${String(i).padStart(3, "0")}.dat`,
      size: 1 + ((i * 7919) % 20_000),
    }));
    const made = await makeTorrent({
      dir,
      name: "Many Small Files",
      files,
      announce: [seeder!.env.TRACKER_URL!],
    });
    expect(made.magnet).toContain(`xt=urn:btih:${made.infoHash}`);
    const seeding = await seed({
      torrentPath: made.torrentPath,
      dir,
      peerPort: await freePort(),
      log: quietLog,
    });
    try {
      const downloads = await tempDir("many-dl");
      await downloadWithAria2(made.torrentPath, downloads);
      for (const file of files) {
        const copy = join(downloads, "Many Small Files", file.path);
        expect(await sha256File(copy), file.path).toBe(await sha256File(join(made.root, file.path)));
      }
    } finally {
      await seeding.stop();
    }
  });

  it("makes a single-file torrent when the only file is named like the torrent", async () => {
    const dir = await tempDir("single");
    const made = await makeTorrent({
      dir,
      name: "one.bin",
      files: [{ path: "one.bin", size: 100_000 }],
      announce: ["http://127.0.0.1:1/announce"],
    });
    expect(made.root).toBe(join(dir, "one.bin"));
    expect((await stat(made.root)).size).toBe(100_000);
    expect(readTorrent(await readFile(made.torrentPath)).files).toEqual([
      { path: "one.bin", length: 100_000 },
    ]);
    await expect(
      makeTorrent({ dir, name: "folder", files: [{ path: "a.bin", size: 1 }], announce: [] }),
    ).rejects.toThrow(/one-file torrent/);
  });

  it("refuses to seed content that is not there", async () => {
    const dir = await tempDir("missing");
    const made = await makeTorrent({
      dir,
      name: "Gone",
      files: [
        { path: "a.bin", size: 1000 },
        { path: "b.txt", content: "hello\n" },
      ],
      announce: [seeder!.env.TRACKER_URL!],
    });
    await rm(join(made.root, "a.bin"));
    await expect(
      seed({ torrentPath: made.torrentPath, dir, peerPort: await freePort(), log: quietLog }),
    ).rejects.toThrow(/a\.bin is missing/);
  });
});
