// The parts of create-torrent and bittorrent-tracker's server that the seeder
// uses; neither package ships type declarations.

declare module "create-torrent" {
  import type { Readable } from "node:stream";

  export interface CreateTorrentOptions {
    name?: string;
    creationDate?: Date;
    comment?: string;
    createdBy?: string;
    private?: boolean;
    pieceLength?: number;
    maxPieceLength?: number;
    announceList?: string[][];
    urlList?: string[];
    /** Drop hidden OS junk files such as .DS_Store (default true). */
    filterJunkFiles?: boolean;
  }

  /** Streams are named by a `name` (or `fullPath`) property holding their `/`-separated path. */
  export type CreateTorrentInput =
    | string
    | Uint8Array
    | Blob
    | (Readable & { name?: string; fullPath?: string });

  export default function createTorrent(
    input: CreateTorrentInput | CreateTorrentInput[],
    opts: CreateTorrentOptions,
    callback: (error: Error | null, torrent: Uint8Array) => void,
  ): void;
}

declare module "bittorrent-tracker/server" {
  import type { EventEmitter } from "node:events";
  import type { Server as HttpServer } from "node:http";

  export interface TrackerPeer {
    type: "http" | "udp" | "ws";
    /** True once the peer announced with nothing left to download. */
    complete: boolean;
    peerId: string;
    ip: string;
    port: number;
  }

  export interface Swarm {
    infoHash: string;
    complete: number;
    incomplete: number;
    peers: { readonly keys: string[]; peek(key: string): TrackerPeer | undefined };
  }

  export interface ServerOptions {
    /** Announce interval told to clients, in ms. */
    interval?: number;
    http?: boolean;
    udp?: boolean;
    ws?: boolean;
    stats?: boolean;
    trustProxy?: boolean;
  }

  export default class Server extends EventEmitter {
    constructor(opts?: ServerOptions);
    readonly http: HttpServer | null;
    /** Swarms by hex info hash. */
    readonly torrents: Record<string, Swarm | undefined>;
    listen(port: number, hostname?: string, onListening?: () => void): void;
    close(callback?: (error?: Error | null) => void): void;
  }
}
