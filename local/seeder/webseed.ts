// An HTTP web seed (BEP 19) on loopback: a folder served with byte ranges and
// CORS, so a browser's webtorrent (which cannot dial aria2c's TCP port) can
// fetch a torrent's pieces over HTTP. A multi-file torrent's url-list names
// the folder holding `<torrent name>/…`; a one-file torrent's names the file.
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { extname, join, normalize, sep } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { type LogSink, prefixedLog, type Service } from "../process.ts";

export interface WebSeed extends Service {
  /** The base URL to put in a torrent's url-list (ends with "/"). */
  readonly url: string;
  /** GET requests answered, by path (a test counts what came from here). */
  readonly requests: Map<string, number>;
}

export interface WebSeedOptions {
  /** The folder served. */
  root: string;
  /** 0: any free port. */
  port: number;
  host?: string;
  log?: LogSink;
  /** Bytes per second over all responses, aria2c's syntax ("300K", "2M"); unlimited when unset. */
  rate?: string;
}

/** "300K" → 307200 bytes per second, as aria2c reads it. */
export function parseRate(rate: string): number {
  const match = /^(\d+)([KM]?)$/.exec(rate);
  if (!match) throw new Error(`a rate is bytes per second like 300K or 2M, not "${rate}"`);
  return Number(match[1]) * (match[2] === "M" ? 1024 * 1024 : match[2] === "K" ? 1024 : 1);
}

/** Holds every response together to `bytesPerSecond`, as aria2c's overall upload limit does. */
function limiter(bytesPerSecond: number): () => Transform {
  let allowedAt = Date.now();
  return () =>
    new Transform({
      transform(chunk: Buffer, _encoding, done) {
        const wait = Math.max(0, allowedAt - Date.now());
        allowedAt = Math.max(allowedAt, Date.now()) + (chunk.length * 1000) / bytesPerSecond;
        setTimeout(() => done(null, chunk), wait);
      },
    });
}

/** A page and its script can be served too (a test's seeder page); everything else is bytes. */
const contentTypes: Record<string, string> = { ".html": "text/html", ".js": "text/javascript" };

const cors = {
  "access-control-allow-origin": "*",
  "access-control-allow-methods": "GET, HEAD, OPTIONS",
  "access-control-expose-headers": "Content-Range, Content-Length, Accept-Ranges",
  "access-control-max-age": "3600",
};

/** Bytes [start, end] of a file of `size` bytes from a single-range header; null: the whole file; "bad": unsatisfiable. */
function rangeOf(header: string | undefined, size: number): { start: number; end: number } | null | "bad" {
  if (!header) return null;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === "" && match[2] === "")) return "bad";
  let start: number;
  let end: number;
  if (match[1] === "") {
    start = Math.max(0, size - Number(match[2]));
    end = size - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === "" ? size - 1 : Math.min(size - 1, Number(match[2]));
  }
  return start <= end && start < size ? { start, end } : "bad";
}

export async function startWebSeed(opts: WebSeedOptions): Promise<WebSeed> {
  const log = opts.log ?? prefixedLog;
  const host = opts.host ?? "127.0.0.1";
  const root = normalize(opts.root);
  const throttle = opts.rate ? limiter(parseRate(opts.rate)) : undefined;
  const requests = new Map<string, number>();

  const serve = async (req: IncomingMessage, res: ServerResponse) => {
    if (req.method === "OPTIONS") {
      const asked = req.headers["access-control-request-headers"] ?? "range";
      res.writeHead(204, { ...cors, "access-control-allow-headers": asked }).end();
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { ...cors, allow: "GET, HEAD, OPTIONS" }).end();
      return;
    }
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://seed").pathname);
    const file = normalize(join(root, path));
    const size = file.startsWith(root + sep)
      ? await stat(file).then(
          (s) => (s.isFile() ? s.size : -1),
          () => -1,
        )
      : -1;
    if (size < 0) {
      res.writeHead(404, cors).end();
      return;
    }
    requests.set(path, (requests.get(path) ?? 0) + 1);
    const range = rangeOf(req.headers.range, size);
    if (range === "bad") {
      res.writeHead(416, { ...cors, "content-range": `bytes */${size}` }).end();
      return;
    }
    const { start, end } = range ?? { start: 0, end: size - 1 };
    res.writeHead(range ? 206 : 200, {
      ...cors,
      "accept-ranges": "bytes",
      "content-type": contentTypes[extname(file)] ?? "application/octet-stream",
      "content-length": String(size === 0 ? 0 : end - start + 1),
      ...(range ? { "content-range": `bytes ${start}-${end}/${size}` } : {}),
    });
    if (req.method === "HEAD" || size === 0) {
      res.end();
      return;
    }
    const body = createReadStream(file, { start, end });
    await (throttle ? pipeline(body, throttle(), res) : pipeline(body, res));
  };

  const server = createServer((req, res) => {
    serve(req, res).catch((err: unknown) => {
      // A client that went away mid-body (webtorrent cancels requests it no longer needs) is no error.
      if (!res.headersSent) res.writeHead(500, cors).end();
      else res.destroy();
      if ((err as NodeJS.ErrnoException).code !== "ERR_STREAM_PREMATURE_CLOSE") log("webseed", String(err));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${host}:${port}/`;
  return {
    name: "webseed",
    url,
    requests,
    env: { WEB_SEED_URL: url },
    urls: [`web seed: ${url} (HTTP, CORS, for browsers)`],
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
