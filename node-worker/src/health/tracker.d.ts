// The part of bittorrent-tracker's client the health scrape uses; the package ships no type declarations.
declare module "bittorrent-tracker/client" {
  import type { EventEmitter } from "node:events";

  export interface ScrapeData {
    announce: string;
    infoHash: string;
    complete: number;
    incomplete: number;
    downloaded: number;
  }

  interface ScrapeOptions {
    infoHash: string;
    announce: string;
  }

  const Client: {
    /** One scrape of one tracker; the callback gets the counts or the first error or warning. */
    scrape(
      opts: ScrapeOptions,
      cb: (error: Error | null, data?: ScrapeData) => void,
    ): EventEmitter & { destroy(): void };
  };
  export default Client;
}
