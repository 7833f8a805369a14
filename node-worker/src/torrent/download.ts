// One job's BitTorrent download: a webtorrent client of its own, writing into
// the job's scratch folder (the same folder on every attempt, so a restart
// re-verifies what is on disk and fetches only what is missing), one scratch
// file per torrent file, named by its index (store.ts). Only the byte ranges
// the job's window reserved are selected (window.ts); completion is tracked
// per byte range from the verified-piece bitfield, because the torrent's
// `done` event never fires for a partial selection. The metadata, from a .torrent or from peers, is read by the same
// parser as an uploaded .torrent.
import { EventEmitter } from "node:events";
import { parseTorrentFile, TorrentError, type TorrentFileEntry } from "@torreclou/contracts";
import type { Logger } from "pino";
import WebTorrent, { type Torrent } from "webtorrent";
import type { Layout } from "../seeding/pieces.ts";
import { Handoff } from "./handoff.ts";
import { type Ring, ringPath } from "./ring.ts";
import { IndexedChunkStore, type Rings, scratchFile } from "./store.ts";

/** Host names of tracker URLs (never their paths: a passkey may be there), at most 20. */
export function trackerHosts(urls: readonly string[]): string[] {
  const hosts = new Set<string>();
  for (const url of urls) {
    try {
      hosts.add(new URL(url).hostname);
    } catch {
      // not a URL: nothing to name
    }
  }
  return [...hosts].slice(0, 20);
}

export interface DiscoveryOptions {
  dht: boolean;
  lsd: boolean;
  natUpnp: boolean;
  natPmp: boolean;
  utp: boolean;
  maxConns: number;
}

/** How a worker's torrents find and reach peers, from its configuration. */
export function discoveryOf(c: {
  WORKER_DHT: boolean;
  WORKER_LSD: boolean;
  WORKER_NAT_UPNP: boolean;
  WORKER_NAT_PMP: boolean;
  WORKER_UTP: boolean;
  WORKER_MAX_CONNS: number;
}): DiscoveryOptions {
  return {
    dht: c.WORKER_DHT,
    lsd: c.WORKER_LSD,
    natUpnp: c.WORKER_NAT_UPNP,
    natPmp: c.WORKER_NAT_PMP,
    utp: c.WORKER_UTP,
    maxConns: c.WORKER_MAX_CONNS,
  };
}

export interface TorrentMetadata {
  infoHash: string;
  name: string;
  torrentFile: Uint8Array;
  /** Bytes of the listed files (padding excluded). */
  totalSize: number;
  pieceLength: number;
  pieceCount: number;
  /** The parser's list: padding files left out, indexes as in the torrent, paths checked. */
  files: TorrentFileEntry[];
}

interface Waiter {
  first: number;
  last: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

export class Download extends EventEmitter {
  readonly dir: string;
  /** Verified pieces go straight into the part buffers of uploads that claim them (handoff.ts). */
  readonly handoff = new Handoff();
  /** Files streaming through a scratch ring: the store writes their pieces there (ring.ts). */
  readonly #rings: Rings = new Map();
  readonly #client: WebTorrent;
  readonly #torrent: Torrent;
  readonly #log: Logger;
  #waiters: Waiter[] = [];
  /** Per file, the first piece verifiedUpTo() found missing. */
  readonly #verifiedCursor = new Map<number, number>();
  #ready: Promise<void>;
  #failure: Error | undefined;
  #destroyed = false;
  /** Bytes received from peers (for rates; unaffected by re-verification of data on disk). */
  received = 0;
  /** Pieces verified since the download started (data on disk re-verified at start included). */
  verifiedPieces = 0;
  /** BitTorrent peer connections made (web seeds left out), for a message when no data comes. */
  connections = 0;

  constructor(source: string | Uint8Array, dir: string, discovery: DiscoveryOptions, log: Logger) {
    super();
    this.dir = dir;
    this.#log = log;
    this.#client = new WebTorrent({
      utp: discovery.utp,
      dht: discovery.dht,
      lsd: discovery.lsd,
      natUpnp: discovery.natUpnp,
      natPmp: discovery.natPmp,
      maxConns: discovery.maxConns,
    });
    this.#client.on("error", (error: Error) => this.#fail(error));
    this.#torrent = this.#client.add(source, {
      path: dir,
      store: IndexedChunkStore,
      storeOpts: { handoff: this.handoff, rings: this.#rings },
      deselect: true,
      strategy: "sequential",
      // A worker fetches and moves on; it does not serve pieces of files it deletes after upload.
      uploads: 0,
      // Uploads take pieces from the handoff or read them from disk, so webtorrent's
      // in-memory piece cache (20 pieces by default) would only add to the worker's memory.
      storeCacheSlots: 0,
    });
    this.#torrent.on("error", (error: Error) => this.#fail(error));
    this.#torrent.on("warning", (error: Error) => log.debug({ err: error }, "torrent warning"));
    this.#torrent.on("wire", (wire: { type?: string }) => {
      if (wire.type !== "webSeed") this.connections++;
    });
    this.#torrent.on("verified", () => {
      this.verifiedPieces++;
      this.#check();
    });
    this.#torrent.on("download", (bytes: number) => {
      this.received += bytes;
      this.emit("download", bytes);
    });
    this.#ready = new Promise<void>((resolveReady, rejectReady) => {
      this.#torrent.once("ready", () => resolveReady());
      this.once("failed", rejectReady);
    });
    this.#ready.catch(() => {});
  }

  #fail(error: Error): void {
    if (this.#failure) return;
    this.#failure = error;
    this.#log.warn({ err: error }, "torrent failed");
    for (const w of this.#waiters.splice(0)) w.reject(error);
    this.emit("failed", error);
  }

  /**
   * Resolves with the metadata (at once for a .torrent, after peers send it
   * for a magnet), as parseTorrentFile reads the torrent webtorrent built from
   * it. Rejects with the parser's TorrentError for metadata it refuses.
   */
  metadata(signal: AbortSignal): Promise<TorrentMetadata> {
    const t = this.#torrent;
    if (t.files.length > 0 && t.torrentFile) return this.#parse();
    return new Promise((resolveMeta, rejectMeta) => {
      const onAbort = () => rejectMeta(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      this.once("failed", rejectMeta);
      t.once("metadata", () => {
        signal.removeEventListener("abort", onAbort);
        this.off("failed", rejectMeta);
        this.#parse().then(resolveMeta, rejectMeta);
      });
    });
  }

  async #parse(): Promise<TorrentMetadata> {
    const t = this.#torrent;
    const info = await parseTorrentFile(t.torrentFile);
    // webtorrent re-encodes what peers sent; a torrent that does not come out the same is not the one asked for.
    if (info.infoHash !== t.infoHash)
      throw new TorrentError(
        "not_a_torrent",
        `The metadata peers sent hashes to ${info.infoHash}, not to the info hash ${t.infoHash}.`,
      );
    return {
      infoHash: info.infoHash,
      name: info.name,
      torrentFile: t.torrentFile,
      totalSize: info.totalSize,
      pieceLength: info.pieceLength,
      pieceCount: info.pieceCount,
      files: info.files,
    };
  }

  /** Verification of the data already on disk is finished. */
  ready(): Promise<void> {
    return this.#ready;
  }

  /** Whether an upload waits for bytes not downloaded yet. */
  get waiting(): boolean {
    return this.#waiters.length > 0;
  }

  /** Selects bytes [start, end) of file `index` (the pieces holding them) for download. */
  selectRange(index: number, start: number, end: number): void {
    if (end <= start) return;
    const [first, last] = this.#pieceRange(index, start, end);
    this.#torrent.select(first, last);
  }

  /** Byte offset of file `index` in the torrent. */
  offsetOf(index: number): number {
    const file = this.#torrent.files[index];
    if (!file) throw new Error(`torrent has no file #${index}`);
    return file.offset;
  }

  get pieceLength(): number {
    return this.#torrent.pieceLength;
  }

  /** Every file of the torrent (padding included) where it lies in the pieces: what seeding offers from. */
  layout(): Layout {
    const t = this.#torrent;
    return {
      files: t.files.map((f, index) => ({ index, offset: f.offset, length: f.length })),
      pieceLength: t.pieceLength,
      length: t.length,
    };
  }

  /** What was tried to find data, for a message when none comes: trackers and web seeds by count. */
  /** Host names of the trackers the torrent announces to (never their paths: a passkey may be there). */
  trackerHosts(): string[] {
    return trackerHosts(this.#torrent.announce ?? []);
  }

  sources(): { trackers: number; webSeeds: number } {
    const t = this.#torrent;
    return { trackers: t.announce?.length ?? 0, webSeeds: t.urlList?.length ?? 0 };
  }

  /** Where a file's bytes are on disk: `<scratch folder>/<index>`. */
  localPath(index: number): string {
    if (!this.#torrent.files[index]) throw new Error(`torrent has no file #${index}`);
    return scratchFile(this.dir, index);
  }

  /**
   * File `index`'s pieces go into a ring file from now on, at `ring`'s
   * positions; returns the ring file's path. Call before any of its pieces
   * is selected.
   */
  useRing(index: number, ring: Ring): string {
    const path = ringPath(this.localPath(index));
    this.#rings.set(index, { ring, path });
    return path;
  }

  #pieceRange(index: number, start: number, end: number): [number, number] {
    const file = this.#torrent.files[index];
    if (!file) throw new Error(`torrent has no file #${index}`);
    const pl = this.#torrent.pieceLength;
    const from = file.offset + start;
    const to = file.offset + Math.max(start, end - 1);
    return [Math.floor(from / pl), Math.floor(to / pl)];
  }

  #have(first: number, last: number): boolean {
    const bits = this.#torrent.bitfield;
    for (let i = first; i <= last; i++) if (!bits.get(i)) return false;
    return true;
  }

  #check(): void {
    if (this.#waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.#waiters) {
      if (this.#have(w.first, w.last)) w.resolve();
      else still.push(w);
    }
    this.#waiters = still;
  }

  /** Resolves once bytes [start, end) of file `index` are downloaded and verified. */
  async waitRange(index: number, start: number, end: number): Promise<void> {
    await this.#ready;
    if (this.#failure) throw this.#failure;
    if (end <= start) return;
    const [first, last] = this.#pieceRange(index, start, end);
    if (this.#have(first, last)) return;
    await new Promise<void>((resolveWait, rejectWait) => {
      this.#waiters.push({ first, last, resolve: resolveWait, reject: rejectWait });
    });
  }

  /**
   * The first byte of file `index` in a piece not verified yet (its size once
   * all are): where a sequential download is. A cursor per file only moves
   * forward, as verified pieces stay verified.
   */
  verifiedUpTo(index: number): number {
    const file = this.#torrent.files[index];
    if (!file || !this.#torrent.ready) return 0;
    if (file.length === 0) return 0;
    const [first, last] = this.#pieceRange(index, 0, file.length);
    const bits = this.#torrent.bitfield;
    let i = Math.max(first, this.#verifiedCursor.get(index) ?? first);
    while (i <= last && bits.get(i)) i++;
    this.#verifiedCursor.set(index, i);
    return i > last ? file.length : Math.max(0, i * this.#torrent.pieceLength - file.offset);
  }

  /** Whether the whole file is downloaded and verified (false before verification ends). */
  isComplete(index: number): boolean {
    const file = this.#torrent.files[index];
    if (!file || !this.#torrent.ready) return false;
    if (file.length === 0) return true;
    const [first, last] = this.#pieceRange(index, 0, file.length);
    return this.#have(first, last);
  }

  /** Verified (or partially received) bytes of a file. */
  downloadedOf(index: number): number {
    const file = this.#torrent.files[index];
    if (!file || !this.#torrent.ready) return 0;
    return Math.min(file.length, Math.max(0, file.downloaded));
  }

  /**
   * Connected BitTorrent peers. Web seeds are left out: webtorrent keeps one
   * as a "peer" even when every request to it fails (or the egress policy
   * refused it), so it proves nothing; one that delivers shows in `received`.
   */
  get peers(): number {
    return this.#torrent.wires.filter((wire) => wire.type !== "webSeed").length;
  }

  get failure(): Error | undefined {
    return this.#failure;
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    for (const w of this.#waiters.splice(0)) w.reject(new Error("download stopped"));
    await new Promise<void>((done) => {
      this.#client.destroy(() => done());
    });
  }
}
