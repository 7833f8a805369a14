// The part of webtorrent's browser build (its prebuilt ES module) the web app
// uses. The build bundles its own browser shims, so Vite adds none.
declare module "webtorrent/dist/webtorrent.min.js" {
  /** A chunk store class (abstract-chunk-store): what webtorrent keeps pieces in. */
  export type ChunkStore = new (chunkLength: number, opts?: unknown) => unknown;

  export interface AddOptions {
    /** Start with no piece selected (nothing is fetched unless asked). */
    deselect?: boolean;
    store?: ChunkStore;
    /** Pieces kept in an in-memory cache in front of the store (default 20); 0: none. */
    storeCacheSlots?: number;
    announce?: string[];
  }

  export interface TorrentFile {
    readonly name: string;
    readonly path: string;
    readonly length: number;
    /** Where the file starts in the torrent's bytes. */
    readonly offset: number;
    /** Verified bytes of this file held (webtorrent's bitfield). */
    readonly downloaded: number;
    /**
     * Bytes [start, end] (inclusive) as pieces arrive. Creating the iterator
     * selects exactly their pieces; ending it (return()) deselects them.
     */
    [Symbol.asyncIterator](range: { start: number; end: number }): AsyncIterator<Uint8Array>;
  }

  export interface Torrent {
    readonly infoHash: string;
    /** The torrent file once the metadata is known (its info dictionary as peers sent it). */
    readonly metadata: Uint8Array | null;
    readonly numPeers: number;
    readonly ready: boolean;
    readonly files: TorrentFile[];
    readonly pieceLength: number;
    /** Verified bytes received, this session. */
    readonly downloaded: number;
    on(event: "metadata" | "ready" | "noPeers", listener: () => void): this;
    on(event: "download", listener: (bytes: number) => void): this;
    on(event: "wire", listener: (wire: unknown) => void): this;
    on(event: "error" | "warning", listener: (err: Error | string) => void): this;
    destroy(opts?: { destroyStore?: boolean }, callback?: (err?: Error) => void): void;
  }

  export interface ClientOptions {
    dht?: boolean;
    lsd?: boolean;
    utPex?: boolean;
    webSeeds?: boolean;
    tracker?: boolean | Record<string, unknown>;
  }

  export default class WebTorrent {
    static readonly WEBRTC_SUPPORT: boolean;
    constructor(opts?: ClientOptions);
    add(torrentId: string | Uint8Array, opts?: AddOptions): Torrent;
    on(event: "error", listener: (err: Error | string) => void): this;
    destroy(callback?: (err?: Error) => void): void;
  }
}
