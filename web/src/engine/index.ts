// The browser's own torrent engine: webtorrent's browser build, loaded only
// when a page needs it (a dynamic import, so it is a chunk of its own that
// the rest of the app never downloads). In a browser webtorrent reaches peers
// over WebRTC, found through WebSocket trackers, and web seeds over HTTP.
import { infoDictionaryOf } from "@torreclou/contracts";
import type { ChunkStore } from "webtorrent/dist/webtorrent.min.js";

/** The trackers of `trackers` a browser can use: WebSocket ones (ws:, wss:). */
export function browserTrackers(trackers: readonly string[]): string[] {
  return trackers.filter((t) => /^wss?:\/\//i.test(t));
}

/** Whether this browser can speak WebRTC at all. */
export function webrtcSupported(): boolean {
  return typeof RTCPeerConnection !== "undefined";
}

/**
 * Holds nothing: a search for metadata never selects a piece, and the torrent
 * is dropped as soon as its metadata arrives, so nothing is ever stored.
 */
class NoStore {
  readonly chunkLength: number;
  constructor(chunkLength: number) {
    this.chunkLength = chunkLength;
  }
  put(_index: number, _buf: Uint8Array, cb: (err?: Error) => void): void {
    cb(new Error("this torrent only looks for its metadata"));
  }
  get(_index: number, _opts: unknown, cb: (err?: Error) => void): void {
    cb(new Error("this torrent only looks for its metadata"));
  }
  close(cb?: (err?: Error) => void): void {
    cb?.();
  }
  destroy(cb?: (err?: Error) => void): void {
    cb?.();
  }
}

export interface MetadataSearch {
  signal: AbortSignal;
  /** Called as peers connect or leave. */
  onPeers?: (peers: number) => void;
}

/**
 * Joins the magnet's swarm (its WebSocket trackers, then WebRTC peers) and
 * resolves with the info dictionary, byte for byte as peers sent it, once one
 * peer gives it (ut_metadata checks it against the info hash). Downloads no
 * piece. Rejects when `signal` aborts or the engine fails.
 */
export async function findMetadata(magnet: string, search: MetadataSearch): Promise<Uint8Array> {
  const { default: WebTorrent } = await import("webtorrent/dist/webtorrent.min.js");
  search.signal.throwIfAborted();
  const client = new WebTorrent({ dht: false, lsd: false, webSeeds: false });
  try {
    return await new Promise<Uint8Array>((resolve, reject) => {
      const fail = (err: Error | string) => reject(typeof err === "string" ? new Error(err) : err);
      client.on("error", fail);
      search.signal.addEventListener("abort", () => reject(search.signal.reason), { once: true });
      const torrent = client.add(magnet, { deselect: true, store: NoStore as unknown as ChunkStore });
      torrent.on("error", fail);
      torrent.on("wire", () => search.onPeers?.(torrent.numPeers));
      torrent.on("metadata", () => {
        try {
          resolve(infoDictionaryOf(torrent.metadata!));
        } catch (err) {
          fail(err instanceof Error ? err : String(err));
        }
      });
    });
  } finally {
    client.destroy();
  }
}
