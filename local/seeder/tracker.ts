// A BitTorrent tracker on loopback, so peers of the local cloud find each other
// without DHT or the internet: HTTP announce/scrape for the demo seeder and the
// workers, and WebSocket on the same port for browsers (WebRTC peers).
import Server from "bittorrent-tracker/server";
import { type LogSink, prefixedLog, type Service } from "../process.ts";
import { decode } from "./bencode.ts";

export interface Tracker extends Service {
  readonly announceUrl: string;
  /** The same tracker for browsers (WebSocket announces, WebRTC offers). */
  readonly webSocketUrl: string;
  /** `ip:port` of the peers that announced the torrent as complete. */
  seeders(infoHash: string): string[];
}

export async function startTracker(opts: { port: number; host?: string; log?: LogSink }): Promise<Tracker> {
  const log = opts.log ?? prefixedLog;
  const host = opts.host ?? "127.0.0.1";
  // A short interval keeps the peer list fresh when tests stop and start peers.
  const server = new Server({ http: true, udp: false, ws: true, stats: true, interval: 30_000 });
  server.on("warning", (error: Error) => log("tracker", `warning: ${error.message}`));

  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error) => reject(error);
    server.once("error", onError);
    server.listen(opts.port, host, () => {
      server.off("error", onError);
      server.on("error", (error: Error) => log("tracker", `error: ${error.message}`));
      resolve();
    });
  });
  server.on("start", (addr: string) => log("tracker", `peer ${addr} started`));
  server.on("complete", (addr: string) => log("tracker", `peer ${addr} completed`));
  server.on("stop", (addr: string) => log("tracker", `peer ${addr} stopped`));

  const base = `http://${host}:${opts.port}`;
  const announceUrl = `${base}/announce`;
  const webSocketUrl = `ws://${host}:${opts.port}`;
  let stopped = false;
  return {
    name: "tracker",
    announceUrl,
    webSocketUrl,
    env: { TRACKER_URL: announceUrl, TRACKER_WS_URL: webSocketUrl },
    urls: [`tracker: ${announceUrl} (stats: ${base}/stats; browsers: ${webSocketUrl})`],
    seeders(infoHash) {
      const swarm = server.torrents[infoHash.toLowerCase()];
      if (!swarm) return [];
      const addrs: string[] = [];
      for (const key of swarm.peers.keys) {
        const peer = swarm.peers.peek(key);
        if (peer?.complete) addrs.push(`${peer.ip}:${peer.port}`);
      }
      return addrs;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      // Clients may hold keep-alive connections; do not wait for them.
      server.http?.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Asks a tracker over HTTP how many complete peers it knows for a torrent
 * (BEP 48 scrape), for trackers that do not run in this process.
 */
export async function scrapeSeeders(announceUrl: string, infoHash: string): Promise<number> {
  const scrapeUrl = announceUrl.replace(/\/announce(?=[^/]*$)/, "/scrape");
  if (scrapeUrl === announceUrl) throw new Error(`tracker ${announceUrl} does not support scrape`);
  const escaped = infoHash.replace(/../g, (byte) => `%${byte}`);
  const separator = scrapeUrl.includes("?") ? "&" : "?";
  const response = await fetch(`${scrapeUrl}${separator}info_hash=${escaped}`, {
    signal: AbortSignal.timeout(5000),
  });
  const reply = decode(new Uint8Array(await response.arrayBuffer()));
  if (!(reply instanceof Map)) return 0;
  const files = reply.get("files");
  if (!(files instanceof Map)) return 0;
  const binaryKey = Buffer.from(infoHash, "hex").toString("latin1");
  // bittorrent-tracker bencodes the binary key as UTF-8 text, so bytes >= 0x80 arrive
  // as two bytes each; other trackers send the raw 20 bytes. Accept both.
  const mangledKey = Buffer.from(binaryKey, "utf8").toString("latin1");
  const entry = files.get(binaryKey) ?? files.get(mangledKey);
  const complete = entry instanceof Map ? entry.get("complete") : undefined;
  return typeof complete === "number" ? complete : 0;
}
