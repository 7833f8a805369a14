// A local stand-in for Upstash Redis: its REST API in front of a real
// redis-server, faithful to what @upstash/redis sends and expects.
//
//   POST /             ["SET", "k", "v"]          -> {"result": "OK"}
//   POST /pipeline     [["INCR", "n"], ["GET", "k"]] -> [{"result": 1}, {"result": "v"}]
//   POST /multi-exec   same, as one MULTI/EXEC transaction
//   GET  /get/k        the path form; a POST body becomes the last argument
//   POST /subscribe/ch server-sent events: "data: message,ch,hello"
//
// Auth is `Authorization: Bearer <token>` or `?_token=`. `Upstash-Encoding:
// base64` asks for every string in the result base64-encoded (the client's
// default). Redis errors come back as HTTP 400 with `{"error": "ERR ..."}`.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { LogSink, Service } from "../process.ts";
import { connectBackend, errorText, isRedisReply } from "./backend.ts";
import {
  assertAllowed,
  commandFromPath,
  parseCommand,
  parseCommandList,
  parseJson,
  RequestError,
} from "./commands.ts";
import { type Encoding, type Json, replyToJson } from "./reply.ts";
import { openSubscription } from "./subscribe.ts";

export interface UpstashServerOptions {
  port: number;
  /** Interface to listen on (default 127.0.0.1). */
  host?: string;
  /** The redis-server behind the API, e.g. redis://127.0.0.1:6379. */
  redisUrl: string;
  /** The bearer token clients must present. */
  token: string;
  log?: LogSink;
}

/** Upstash rejects bodies above its max request size; 10 MiB keeps a runaway client in check. */
export const maxBodyBytes = 10 * 1024 * 1024;

const name = "upstash";

export async function startUpstashServer(opts: UpstashServerOptions): Promise<Service> {
  const host = opts.host ?? "127.0.0.1";
  const log = opts.log ?? (() => {});
  const backend = await connectBackend(opts.redisUrl, `upstash-rest-${opts.port}`, (line) => log(name, line));
  const streams = new Set<ServerResponse>();
  // Read-your-writes is trivially true with one Redis; the token only has to be present and change.
  let syncToken = 0;

  const server = createServer((req, res) => {
    res.setHeader("upstash-sync-token", String(++syncToken));
    handle(req, res).catch((error: unknown) => {
      // The client left (e.g. aborted a blocking call): nobody to answer.
      if (res.destroyed) return;
      if (!(error instanceof RequestError) && !isRedisReply(error))
        log(name, `${req.method} ${req.url}: ${errorText(error)}`);
      if (res.headersSent) {
        res.end();
        return;
      }
      if (error instanceof RequestError) send(res, error.status, { error: error.message });
      else if (isRedisReply(error)) send(res, 400, { error: errorText(error) });
      else send(res, 500, { error: `ERR ${errorText(error)}` });
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    if (!["GET", "HEAD", "POST", "PUT"].includes(req.method ?? "")) {
      res.setHeader("allow", "HEAD, GET, POST, PUT");
      throw new RequestError(405, "ERR method not allowed; use GET, HEAD, POST or PUT");
    }
    if (presentedToken(req, url) !== opts.token) throw new RequestError(401, "Unauthorized");
    const format = header(req, "upstash-response-format");
    if (format && format.toLowerCase() !== "json") {
      throw new RequestError(400, `ERR response format "${format}" is not supported here; use json`);
    }
    const encoding: Encoding =
      header(req, "upstash-encoding")?.toLowerCase() === "base64" ? "base64" : "utf8";
    const segments = pathSegments(url.pathname);
    const [first, ...rest] = segments;

    // Aborts when the client goes away before its answer, which ends a blocking command early.
    const gone = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) gone.abort();
    });

    if (first === "subscribe" || first === "psubscribe") {
      if (rest.length === 0)
        throw new RequestError(400, `ERR ${first} needs at least one channel or pattern`);
      const conn = await backend.subscriber();
      streams.add(res);
      res.on("close", () => streams.delete(res));
      await openSubscription(conn, first, rest, res);
      return;
    }
    const body = await readBody(req);
    if (first === undefined) {
      const command = parseCommand(parseJson(body));
      assertAllowed(command);
      const reply = await backend.run(command, gone.signal);
      send(res, 200, { result: replyToJson(reply, encoding) });
    } else if (first === "pipeline" || first === "multi-exec") {
      const commands = parseCommandList(parseJson(body));
      commands.forEach(assertAllowed);
      const outcomes =
        first === "pipeline"
          ? await backend.pipeline(commands, gone.signal)
          : await backend.multiExec(commands);
      send(
        res,
        200,
        outcomes.map((o) =>
          "error" in o ? { error: o.error } : { result: replyToJson(o.result, encoding) },
        ),
      );
    } else {
      const command = commandFromPath([first, ...rest], body, url.searchParams);
      assertAllowed(command);
      const reply = await backend.run(command, gone.signal);
      send(res, 200, { result: replyToJson(reply, encoding) });
    }
  }

  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (error) {
    await backend.close();
    throw error;
  }
  const reachable =
    host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;
  const url = `http://${reachable}:${opts.port}`;
  log(name, `REST API on ${url} over ${opts.redisUrl}`);

  return {
    name,
    env: { UPSTASH_REDIS_REST_URL: url, UPSTASH_REDIS_REST_TOKEN: opts.token },
    urls: [`Upstash REST  ${url}  (over ${opts.redisUrl})`],
    async stop() {
      for (const res of streams) res.end();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await backend.close();
      await closed;
    },
  };
}

function header(req: IncomingMessage, key: string): string | undefined {
  const value = req.headers[key];
  return Array.isArray(value) ? value[0] : value;
}

function presentedToken(req: IncomingMessage, url: URL): string | undefined {
  const match = /^Bearer\s+(.+)$/i.exec(header(req, "authorization") ?? "");
  return match?.[1]?.trim() ?? url.searchParams.get("_token") ?? undefined;
}

/** `/get/a%2Fb` -> ["get", "a/b"]; `/` -> []. */
function pathSegments(pathname: string): string[] {
  const parts = pathname.split("/").slice(1);
  if (parts.at(-1) === "") parts.pop();
  try {
    return parts.map((part) => decodeURIComponent(part));
  } catch {
    throw new RequestError(400, "ERR the URL path is not valid percent-encoding");
  }
}

/**
 * Reads the whole body, up to `maxBodyBytes`. An oversized body is still read
 * to its end (and dropped) so the client gets the 413 instead of a reset.
 */
function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBodyBytes) chunks.push(chunk);
    });
    req.on("end", () => {
      if (size > maxBodyBytes) {
        reject(new RequestError(413, `ERR request body is ${size} bytes; the limit is ${maxBodyBytes}`));
      } else {
        resolve(Buffer.concat(chunks));
      }
    });
    req.on("error", reject);
  });
}

type Answer = { result: Json } | { error: string };

function send(res: ServerResponse, status: number, body: Answer | Answer[]): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}
