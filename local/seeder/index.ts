// The demo seeder: a loopback tracker plus aria2c seeding generated content,
// so a newcomer can run a real torrent job with no internet. `seed` is the
// lower-level piece tests use to seed torrents of their own.
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type LogSink,
  portOpen,
  prefixedLog,
  requireProgram,
  type Service,
  type Spawned,
  spawnService,
} from "../process.ts";
import { readTorrent, type TorrentSummary } from "./bencode.ts";
import { type MadeTorrent, makeDemoTorrent } from "./sample.ts";
import { scrapeSeeders, startTracker, type Tracker } from "./tracker.ts";
import { startWebSeed, type WebSeed } from "./webseed.ts";

export { readTorrent, type TorrentSummary } from "./bencode.ts";
export {
  DEMO_FILES,
  DEMO_NAME,
  type MadeTorrent,
  type MakeTorrentOptions,
  magnetLink,
  makeDemoTorrent,
  makeTorrent,
  sampleStream,
  type TorrentFile,
} from "./sample.ts";
export { scrapeSeeders, startTracker, type Tracker } from "./tracker.ts";
export { parseRate, startWebSeed, type WebSeed, type WebSeedOptions } from "./webseed.ts";

/** A .torrent and the directory holding its content (the torrent's `name` lives inside `dir`). */
export interface SeedItem {
  torrentPath: string;
  dir: string;
}

export interface SeedAllOptions {
  torrents: SeedItem[];
  /** TCP port aria2c listens on for peers (on 127.0.0.1). */
  peerPort: number;
  log?: LogSink;
  /** Log prefix; "seeder" by default. */
  name?: string;
  /** Overrides the default readiness: every torrent counted as seeded by its tracker's scrape. */
  ready?: () => Promise<boolean>;
  readyTimeoutMs?: number;
  /** aria2c's --max-overall-upload-limit (e.g. "300K"): a slow seeder, to watch progress at a human pace. */
  uploadLimit?: string;
  /** Accept only connections encrypted with MSE/PE and RC4, as some clients are set to. */
  requireEncryption?: boolean;
}

/**
 * aria2c flags for a peer that stays on loopback and finds others only through
 * the tracker: no DHT, local peer discovery or peer exchange, no IPv6 socket
 * (binding it fails beside `--interface`), and no user aria2.conf.
 */
export const ARIA2_LOOPBACK_FLAGS: readonly string[] = [
  "--no-conf=true",
  "--enable-rpc=false",
  "--interface=127.0.0.1",
  "--disable-ipv6=true",
  "--enable-dht=false",
  "--enable-dht6=false",
  "--bt-enable-lpd=false",
  "--enable-peer-exchange=false",
  "--file-allocation=none",
  "--console-log-level=warn",
  "--summary-interval=0",
  "--show-console-readout=false",
  "--download-result=hide",
];

/** Content each torrent names must already be in place: aria2c would otherwise start downloading it. */
async function checkContent(item: SeedItem, torrent: TorrentSummary): Promise<void> {
  for (const file of torrent.files) {
    const path = join(item.dir, ...file.path.split("/"));
    const size = await stat(path).then(
      (s) => s.size,
      () => undefined,
    );
    if (size !== file.length) {
      throw new Error(
        `cannot seed ${item.torrentPath}: ${path} is ${size === undefined ? "missing" : `${size} bytes, expected ${file.length}`}`,
      );
    }
  }
}

async function seededByTrackers(torrent: TorrentSummary, peerPort: number): Promise<boolean> {
  const trackers = torrent.announce.filter((url) => /^https?:/.test(url));
  // A torrent without an HTTP tracker is only reachable directly: the listening port is all we can see.
  if (trackers.length === 0) return portOpen(peerPort);
  for (const url of trackers) {
    if ((await scrapeSeeders(url, torrent.infoHash).catch(() => 0)) > 0) return true;
  }
  return false;
}

/**
 * Seeds existing content with one aria2c process. It verifies every piece
 * first (`-V`), so it only ever serves data that matches the torrents, then
 * seeds without a ratio limit. Resolves once each torrent's tracker lists a
 * seeder. aria2c exits by itself if this process dies.
 */
export async function seedAll(opts: SeedAllOptions): Promise<Spawned> {
  if (opts.torrents.length === 0) throw new Error("nothing to seed");
  const aria2c = requireProgram("aria2c", "aria2");
  const summaries: TorrentSummary[] = [];
  for (const item of opts.torrents) {
    const torrent = readTorrent(await readFile(item.torrentPath));
    await checkContent(item, torrent);
    summaries.push(torrent);
  }

  // aria2c takes one --dir on the command line; an input file gives each torrent its own.
  const scratch = await mkdtemp(join(tmpdir(), "torreclou-seed-"));
  const inputFile = join(scratch, "torrents.txt");
  await writeFile(
    inputFile,
    opts.torrents.map((item) => `${item.torrentPath}\n  dir=${item.dir}\n`).join(""),
  );

  const args = [
    ...ARIA2_LOOPBACK_FLAGS,
    `--listen-port=${opts.peerPort}`,
    "--check-integrity=true",
    "--bt-seed-unverified=false",
    "--seed-ratio=0.0",
    // Never write beside or over the content being seeded.
    "--auto-file-renaming=false",
    "--allow-overwrite=false",
    `--stop-with-process=${process.pid}`,
    `--input-file=${inputFile}`,
    ...(opts.uploadLimit ? [`--max-overall-upload-limit=${opts.uploadLimit}`] : []),
    ...(opts.requireEncryption ? ["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"] : []),
  ];
  const ready =
    opts.ready ??
    (async () => {
      for (const torrent of summaries) if (!(await seededByTrackers(torrent, opts.peerPort))) return false;
      return true;
    });
  try {
    const spawned = await spawnService(opts.name ?? "seeder", aria2c, {
      args,
      log: opts.log ?? prefixedLog,
      ready,
      readyTimeoutMs: opts.readyTimeoutMs ?? 120_000,
      // SIGTERM makes aria2c halt at once; SIGINT lets it tell the tracker it stopped,
      // so no stale seeder is handed to later peers or counted by a scrape.
      stopSignal: "SIGINT",
    });
    return {
      child: spawned.child,
      exited: spawned.exited,
      async stop() {
        await spawned.stop();
        await rm(scratch, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await rm(scratch, { recursive: true, force: true });
    throw error;
  }
}

/** Seeds one torrent whose content lies in `dir`. */
export function seed(opts: {
  torrentPath: string;
  dir: string;
  peerPort: number;
  log?: LogSink;
  readyTimeoutMs?: number;
}): Promise<Spawned> {
  const { torrentPath, dir, ...rest } = opts;
  return seedAll({ ...rest, torrents: [{ torrentPath, dir }] });
}

export interface Seeder extends Service {
  readonly tracker: Tracker;
  readonly demo: MadeTorrent;
}

/**
 * Starts the tracker, generates the demo content and its .torrent under
 * `dataDir` (reused across runs), and seeds it together with any extra torrents.
 */
export async function startSeeder(opts: {
  dataDir: string;
  trackerPort: number;
  peerPort: number;
  log?: LogSink;
  torrents?: SeedItem[];
  /** See SeedAllOptions.uploadLimit (the web seed keeps to it too). */
  uploadLimit?: string;
  /**
   * Also serve the content over HTTP on this port, as the demo torrent's web
   * seed (url-list): what a browser, which cannot dial aria2c, downloads from.
   */
  webSeedPort?: number;
}): Promise<Seeder> {
  const log = opts.log ?? prefixedLog;
  const tracker = await startTracker({ port: opts.trackerPort, log });
  let webSeed: WebSeed | undefined;
  try {
    if (opts.webSeedPort !== undefined) {
      webSeed = await startWebSeed({
        root: opts.dataDir,
        port: opts.webSeedPort,
        log,
        ...(opts.uploadLimit ? { rate: opts.uploadLimit } : {}),
      });
    }
    const demo = await makeDemoTorrent({
      dir: opts.dataDir,
      announce: [tracker.announceUrl],
      ...(webSeed ? { urlList: [webSeed.url] } : {}),
    });
    const items = [{ torrentPath: demo.torrentPath, dir: opts.dataDir }, ...(opts.torrents ?? [])];
    const summaries = await Promise.all(
      items.map(async (item) => readTorrent(await readFile(item.torrentPath))),
    );
    const self = `127.0.0.1:${opts.peerPort}`;
    const seeding = await seedAll({
      torrents: items,
      peerPort: opts.peerPort,
      log,
      ...(opts.uploadLimit ? { uploadLimit: opts.uploadLimit } : {}),
      // Our own tracker knows exactly which peer announced: wait for this aria2c, at the
      // address other peers will dial. Torrents announcing elsewhere are scraped.
      ready: async () => {
        for (const torrent of summaries) {
          const seeded = torrent.announce.includes(tracker.announceUrl)
            ? tracker.seeders(torrent.infoHash).includes(self)
            : await seededByTrackers(torrent, opts.peerPort);
          if (!seeded) return false;
        }
        return true;
      },
    });
    return {
      name: "seeder",
      tracker,
      demo,
      env: {
        DEMO_TORRENT_PATH: demo.torrentPath,
        DEMO_MAGNET: demo.magnet,
        DEMO_INFO_HASH: demo.infoHash,
        TRACKER_URL: tracker.announceUrl,
        ...webSeed?.env,
      },
      urls: [
        ...(tracker.urls ?? []),
        ...(webSeed?.urls ?? []),
        `demo torrent: ${demo.torrentPath}`,
        `demo magnet: ${demo.magnet}`,
      ],
      async stop() {
        await seeding.stop();
        await webSeed?.stop();
        await tracker.stop();
      },
    };
  } catch (error) {
    await webSeed?.stop();
    await tracker.stop();
    throw error;
  }
}
