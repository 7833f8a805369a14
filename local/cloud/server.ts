// The HTTP side shared by the OneDrive and Dropbox doubles: routing, bodies,
// JSON answers, fault injection and the control endpoints tests use from
// another process. Each double brings its routes and its error shapes.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { type LogSink, prefixedLog, type Service } from "../process.ts";

/** A fault a test arms; rules are tried in the order they were armed. */
export type Fault =
  /** An error status with the provider's error JSON; 429 and 503 carry `Retry-After` (seconds, default 1). With `afterCommit` the request is carried out first. */
  | { kind: "status"; status: 429 | 500 | 502 | 503 | 504; retryAfter?: number; afterCommit?: boolean }
  /** Cuts the connection once `afterBytes` of the body arrived; an upload keeps what arrived, in whole units of the provider's granularity. */
  | { kind: "drop"; afterBytes: number }
  /** The upload session the request names expires first. */
  | { kind: "expire-session" }
  /** The upload session the request names stores its file with one byte changed (the provider's hash then tells). */
  | { kind: "corrupt" };

export type FaultRule = Fault & {
  /** Route names (e.g. `upload.chunk`); any when omitted. */
  route?: string | string[];
  /** How many matching requests the rule fires for (default 1). */
  times?: number;
  /** Matching requests let through before it fires (default 0). */
  skip?: number;
};

export class Faults {
  #armed: { rule: FaultRule; left: number; skip: number }[] = [];
  #fired: { route: string; kind: string }[] = [];

  inject(rule: FaultRule): void {
    this.#armed.push({ rule, left: rule.times ?? 1, skip: rule.skip ?? 0 });
  }

  clear(): void {
    this.#armed = [];
  }

  pending(): number {
    return this.#armed.filter((a) => a.left > 0).length;
  }

  fired(): { route: string; kind: string }[] {
    return [...this.#fired];
  }

  /** The fault for this request, if one fires. */
  take(route: string): Fault | undefined {
    for (const armed of this.#armed) {
      const routes = armed.rule.route === undefined ? undefined : [armed.rule.route].flat();
      if (armed.left <= 0 || (routes && !routes.includes(route))) continue;
      if (armed.skip > 0) {
        armed.skip--;
        continue;
      }
      armed.left--;
      this.#fired.push({ route, kind: armed.rule.kind });
      return armed.rule;
    }
    return undefined;
  }
}

/** An answer other than success, in the provider's own shape. */
export class HttpError extends Error {
  readonly status: number;
  readonly body: unknown;
  readonly headers: Record<string, string>;
  constructor(status: number, body: unknown, headers: Record<string, string> = {}) {
    super(`HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

/** Retry-After (seconds) on a 429 or 503, as the providers send it. */
function waitHeaders(fault: Extract<Fault, { kind: "status" }>): Record<string, string> {
  return fault.status === 429 || fault.status === 503 ? { "Retry-After": String(fault.retryAfter ?? 1) } : {};
}

export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  params: string[];
  fault: Fault | undefined;
  /** The request body; `dropped` when a drop fault cut it (the socket is gone: answer nothing). */
  body(): Promise<{ bytes: Buffer; dropped: boolean }>;
  json<T = Record<string, unknown>>(): Promise<T>;
  send(status: number, body?: unknown, headers?: Record<string, string>): void;
}

export interface Route {
  name: string;
  method: string;
  /** A path pattern: a RegExp whose groups become `params`. */
  path: RegExp;
  handle(ctx: Ctx): Promise<void> | void;
}

export interface CloudServerOptions {
  name: string;
  port: number;
  host?: string;
  log?: LogSink;
  routes: Route[];
  faults: Faults;
  /** The provider's error body for an injected status. */
  faultBody(status: number): unknown;
  /** Control endpoints under `/__` (besides /__faults). */
  controls?: Route[];
  env(base: string): Record<string, string>;
  /** Called after every request (e.g. to save the double's state). */
  afterRequest?: () => void;
}

export interface CloudServer extends Service {
  url: string;
  faults: Faults;
}

function sendJson(
  res: ServerResponse,
  status: number,
  body?: unknown,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent || res.destroyed) return;
  const payload = body === undefined ? "" : JSON.stringify(body);
  res.writeHead(status, {
    ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    "Content-Length": String(Buffer.byteLength(payload)),
    ...headers,
  });
  res.end(payload);
}

export async function startCloudServer(opts: CloudServerOptions): Promise<CloudServer> {
  const host = opts.host ?? "127.0.0.1";
  const log = opts.log ?? prefixedLog;
  const base = `http://${host}:${opts.port}`;
  const sockets = new Set<Socket>();
  const faultRoutes: Route[] = [
    {
      name: "control",
      method: "POST",
      path: /^\/__faults$/,
      async handle(ctx) {
        const rules = await ctx.json<FaultRule | FaultRule[]>();
        for (const rule of [rules].flat()) opts.faults.inject(rule);
        ctx.send(204);
      },
    },
    {
      name: "control",
      method: "DELETE",
      path: /^\/__faults$/,
      handle(ctx) {
        opts.faults.clear();
        ctx.send(204);
      },
    },
    {
      name: "control",
      method: "GET",
      path: /^\/__faults$/,
      handle(ctx) {
        ctx.send(200, { pending: opts.faults.pending(), fired: opts.faults.fired() });
      },
    },
  ];
  const routes = [...faultRoutes, ...(opts.controls ?? []), ...opts.routes];

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", base);
    const route = routes.find((r) => r.method === req.method && r.path.test(url.pathname));
    // Raw (still percent-encoded): a route decodes what it reads.
    const params = route ? (route.path.exec(url.pathname)?.slice(1) ?? []) : [];
    const fault = route && route.name !== "control" ? opts.faults.take(route.name) : undefined;
    let consumed = false;
    const body = (): Promise<{ bytes: Buffer; dropped: boolean }> => {
      consumed = true;
      return new Promise((resolve, reject) => {
        const chunks: Buffer[] = [];
        let length = 0;
        const limit = fault?.kind === "drop" ? fault.afterBytes : Number.POSITIVE_INFINITY;
        req.on("data", (chunk: Buffer) => {
          if (length >= limit) return;
          const take = chunk.subarray(0, Math.max(0, limit - length));
          chunks.push(take);
          length += take.length;
          if (length >= limit) {
            req.socket.destroy();
            resolve({ bytes: Buffer.concat(chunks), dropped: true });
          }
        });
        req.on("end", () => resolve({ bytes: Buffer.concat(chunks), dropped: false }));
        req.on("error", reject);
      });
    };
    const ctx: Ctx = {
      req,
      res,
      url,
      params,
      fault,
      body,
      async json<T>() {
        const { bytes } = await body();
        const text = bytes.toString("utf8");
        try {
          return (text ? JSON.parse(text) : {}) as T;
        } catch {
          throw new HttpError(400, { error: "invalid_request", error_description: "the body is not JSON" });
        }
      },
      send(status, payload, headers) {
        if (fault?.kind === "status" && fault.afterCommit) {
          const wait = waitHeaders(fault);
          sendJson(res, fault.status, opts.faultBody(fault.status), wait);
          return;
        }
        sendJson(res, status, payload, headers);
      },
    };
    const run = async () => {
      if (!route)
        throw new HttpError(404, {
          error: { code: "itemNotFound", message: `no route ${req.method} ${url.pathname}` },
        });
      if (fault?.kind === "status" && !fault.afterCommit) {
        const wait = waitHeaders(fault);
        // Read the body first, as a real server does before answering.
        await body();
        sendJson(res, fault.status, opts.faultBody(fault.status), wait);
        return;
      }
      if (fault?.kind === "drop" && !/upload/.test(route.name)) {
        req.socket.destroy();
        return;
      }
      await route.handle(ctx);
    };
    run()
      .catch(async (error: unknown) => {
        // Read what the client is still sending first, so it gets the answer rather than a reset.
        if (!consumed && !req.destroyed) await body().catch(() => undefined);
        if (error instanceof HttpError) sendJson(res, error.status, error.body, error.headers);
        else {
          log(opts.name, `internal error: ${error instanceof Error ? error.stack : String(error)}`);
          sendJson(res, 500, { error: { code: "internalServerError", message: "internal error" } });
        }
      })
      .finally(() => {
        if (!consumed) req.resume();
        if (route && route.name !== "control") opts.afterRequest?.();
      });
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, host, () => resolve());
  });
  log(opts.name, `listening on ${base}`);
  return {
    name: opts.name,
    url: base,
    faults: opts.faults,
    env: opts.env(base),
    urls: [`${opts.name.padEnd(9)} ${base}`],
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  } as CloudServer;
}

/** Reads an x-www-form-urlencoded body. */
export async function formOf(ctx: Ctx): Promise<URLSearchParams> {
  const { bytes } = await ctx.body();
  return new URLSearchParams(bytes.toString("utf8"));
}
