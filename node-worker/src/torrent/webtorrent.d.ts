// The parts of webtorrent the worker uses; the package ships no type declarations.
declare module "webtorrent" {
  import type { EventEmitter } from "node:events";

  export interface ClientOptions {
    utp?: boolean;
    dht?: boolean | object;
    lsd?: boolean;
    natUpnp?: boolean;
    natPmp?: boolean;
    tracker?: boolean | object;
    maxConns?: number;
    webSeeds?: boolean;
    torrentPort?: number;
  }

  export interface AddOptions {
    path?: string;
    deselect?: boolean;
    announce?: string[];
    strategy?: "sequential" | "rarest";
    uploads?: number | false;
    /** Pieces kept in an in-memory cache in front of the store (default 20; 0 disables). */
    storeCacheSlots?: number;
    /** Chunk store constructor (default fs-chunk-store). */
    store?: new (
      chunkLength: number,
      opts: import("fs-chunk-store").ChunkStoreOptions,
    ) => object;
    noPeersIntervalTime?: number;
    /** Passed to the store's constructor with webtorrent's own options. */
    storeOpts?: Record<string, unknown>;
    /**
     * Pieces held already (a bitfield, most significant bit first): only a
     * few are checked by hash, the rest are trusted; the others are missing.
     */
    bitfield?: Uint8Array;
  }

  export interface TorrentFile extends EventEmitter {
    readonly name: string;
    readonly path: string;
    readonly length: number;
    readonly offset: number;
    readonly downloaded: number;
    readonly progress: number;
    done: boolean;
    readonly _startPiece: number;
    readonly _endPiece: number;
    select(priority?: number): void;
    deselect(): void;
  }

  export interface BitField {
    get(index: number): boolean;
  }

  export interface Torrent extends EventEmitter {
    readonly infoHash: string;
    readonly name: string;
    readonly files: TorrentFile[];
    readonly length: number;
    readonly pieceLength: number;
    readonly lastPieceLength: number;
    readonly pieces: unknown[];
    readonly bitfield: BitField;
    readonly torrentFile: Uint8Array;
    readonly ready: boolean;
    readonly destroyed: boolean;
    readonly numPeers: number;
    /** Connected peers' wires; `type` is "webSeed" for a web seed. */
    readonly wires: { type?: string }[];
    readonly downloadSpeed: number;
    readonly received: number;
    /** Bytes sent to peers. */
    readonly uploaded: number;
    /** Tracker URLs and web seed URLs of the torrent. */
    readonly announce: string[];
    readonly urlList: string[];
    /** Selects pieces `start` to `end` (inclusive) for download. */
    select(start: number, end: number, priority?: number): void;
    destroy(opts?: { destroyStore?: boolean }, cb?: (err?: Error | null) => void): void;
  }

  export default class WebTorrent extends EventEmitter {
    constructor(opts?: ClientOptions);
    add(torrentId: string | Uint8Array, opts?: AddOptions, ontorrent?: (torrent: Torrent) => void): Torrent;
    destroy(cb?: (err?: Error | null) => void): void;
    readonly torrents: Torrent[];
  }
}

// webtorrent's default chunk store in Node: pieces written into the torrent's files.
declare module "fs-chunk-store" {
  export interface ChunkStoreFile {
    path: string;
    length: number;
    offset?: number;
  }

  export interface ChunkStoreOptions {
    /** Folder the files' paths are resolved in. */
    path?: string;
    files?: ChunkStoreFile[];
    length?: number;
    name?: string;
    addUID?: boolean;
    [option: string]: unknown;
  }

  export default class FSChunkStore {
    constructor(chunkLength: number, opts?: ChunkStoreOptions);
    readonly files: { path: string; length: number; offset: number }[];
    /** Per piece, where its bytes go: `buf[from, to)` at byte `offset` of `file` (one of `files`). */
    readonly chunkMap: { from: number; to: number; offset: number; file: object }[][];
    closed: boolean;
    readonly chunkLength: number;
    readonly lastChunkIndex: number;
    readonly lastChunkLength: number;
    put(index: number, buf: Uint8Array, cb?: (err: Error | null) => void): void;
    get(index: number, cb: (err: Error | null, buf?: Uint8Array) => void): void;
    get(
      index: number,
      opts: { offset?: number; length?: number } | null,
      cb: (err: Error | null, buf?: Uint8Array) => void,
    ): void;
    close(cb?: (err: Error | null) => void): void;
    destroy(cb?: (err: Error | null) => void): void;
  }
}

// The peer wire webtorrent speaks (patched, see patches/); its tests drive it directly.
declare module "bittorrent-protocol" {
  import type { Duplex } from "node:stream";

  export default class Wire extends Duplex {
    /**
     * Requests sent and not yet answered, oldest first while the peer answers
     * in order. Fewer than 64 answered ones (piece -1) may wait at the front
     * to be cut off in one go; it is empty once nothing is outstanding.
     */
    readonly requests: readonly { piece: number; offset: number; length: number }[];
    handshake(infoHash: string, peerId: string, extensions?: object): void;
    choke(): void;
    unchoke(): void;
    /** Fails the oldest outstanding request (and emits "timeout") after `ms` without an answer. */
    setTimeout(ms: number, unref?: boolean): void;
    have(index: number): void;
    request(
      index: number,
      offset: number,
      length: number,
      callback: (error: Error | null, data?: Uint8Array) => void,
    ): void;
    on(event: "have", listener: (index: number) => void): this;
    on(
      event: "request",
      listener: (
        index: number,
        offset: number,
        length: number,
        respond: (error: Error | null, data?: Uint8Array) => void,
      ) => void,
    ): this;
    on(event: string, listener: (...args: never[]) => void): this;
  }
}

// A piece being downloaded, block by block (patched to reuse flushed buffers, see patches/).
declare module "torrent-piece" {
  export default class Piece {
    static readonly BLOCK_LENGTH: number;
    /** Hands back a flushed buffer once nothing refers to it; a later flush of that length may reuse it. */
    static release(buffer: Uint8Array): void;
    constructor(length: number);
    readonly missing: number;
    /** The next block to request, or -1. */
    reserve(): number;
    /** The first block not yet reserved, all the rest reserved with it (a web seed's run), or -1. */
    reserveRemaining(): number;
    /** Copies block `i` (and any blocks after it that `data` runs into) into the piece; true once the piece is whole. */
    set(i: number, data: Uint8Array, source: unknown): boolean;
    /** Block `i` as stored (a view of the piece's buffer), or undefined if it has not arrived. */
    get(i: number): Uint8Array | null | undefined;
    /** The whole piece, once every block is set; null before. */
    flush(): Uint8Array | null;
  }
}
