// A local stand-in for Neon's edge, so `@neondatabase/serverless` runs unchanged
// against a plain Postgres: the WebSocket→TCP bridge its Pool and Client use
// (`neonConfig.wsProxy`), and the HTTP `POST /sql` endpoint its `neon()`
// function uses (`neonConfig.fetchEndpoint`). Both only reach the one
// configured Postgres, so this is never an open relay.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { connect, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import pg from "pg";
import { type RawData, type WebSocket, WebSocketServer } from "ws";
import { type LogSink, prefixedLog, type Service } from "../process.ts";

export interface NeonProxyOptions {
  port: number;
  host?: string;
  postgres: { host: string; port: number };
  log?: LogSink;
}

const NAME = "neon";
const MAX_BODY_BYTES = 16 * 1024 * 1024;
// Above this many bytes queued towards the driver, stop reading from Postgres.
const WS_HIGH_WATER = 4 * 1024 * 1024;

export async function startNeonProxy(opts: NeonProxyOptions): Promise<Service> {
  const host = opts.host ?? "127.0.0.1";
  const log = opts.log ?? prefixedLog;
  const target = opts.postgres;
  const isTarget = (address: { host: string; port: number }) =>
    address.port === target.port && sameHost(address.host, target.host);

  // Statements run through this proxy (the count a Neon bill follows): GET /stats.
  const stats = { statements: 0 };
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://proxy").pathname;
    if (path === "/stats" && req.method === "GET") {
      sendJson(res, 200, stats);
      return;
    }
    if (path === "/sql" && req.method === "POST") {
      handleSql(req, res, target, isTarget, stats).catch((err: unknown) => {
        log(NAME, `/sql failed: ${String(err)}`);
        if (!res.headersSent) sendJson(res, 500, { message: String(err) });
        else res.destroy();
      });
      return;
    }
    sendJson(res, 404, { message: `no route for ${req.method} ${path}` });
  });

  const wss = new WebSocketServer({ noServer: true });
  const tunnels = new Set<Socket>();
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? "/", "http://proxy");
    const address = parseAddress(url.searchParams.get("address"));
    if (url.pathname !== "/v1" || !address || !isTarget(address)) {
      const reason = `only ${target.host}:${target.port} is reachable through this proxy`;
      log(NAME, `refused WebSocket to ${url.pathname}${url.search}`);
      socket.end(
        `HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Type: text/plain\r\n` +
          `Content-Length: ${Buffer.byteLength(reason)}\r\n\r\n${reason}`,
      );
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => bridge(ws, target, tunnels, log, stats));
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = server.address();
  const port = typeof bound === "object" && bound ? bound.port : opts.port;
  const reachable = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  log(NAME, `Neon proxy on ${reachable}:${port} → Postgres ${target.host}:${target.port}`);

  return {
    name: NAME,
    env: { NEON_LOCAL_PROXY: `${reachable}:${port}` },
    urls: [`http://${reachable}:${port}/sql (Neon HTTP), ws://${reachable}:${port}/v1 (Neon WebSocket)`],
    async stop() {
      for (const client of wss.clients) client.terminate();
      for (const tcp of tunnels) tcp.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

// ---------------------------------------------------------------------------
// WebSocket → TCP: the driver speaks the Postgres wire protocol in binary frames.

function bridge(
  ws: WebSocket,
  target: { host: string; port: number },
  tunnels: Set<Socket>,
  log: LogSink,
  stats: { statements: number },
): void {
  const tcp = connect({ host: target.host, port: target.port });
  const count = statementCounter(stats);
  tunnels.add(tcp);
  tcp.setNoDelay(true);

  ws.on("message", (data: RawData) => {
    const chunk = Array.isArray(data)
      ? Buffer.concat(data)
      : Buffer.isBuffer(data)
        ? data
        : Buffer.from(data);
    count(chunk);
    if (!tcp.write(chunk)) {
      ws.pause();
      tcp.once("drain", () => ws.resume());
    }
  });
  tcp.on("data", (chunk: Buffer) => {
    ws.send(chunk, { binary: true }, () => {
      if (tcp.isPaused() && ws.bufferedAmount < WS_HIGH_WATER / 2) tcp.resume();
    });
    if (ws.bufferedAmount > WS_HIGH_WATER) tcp.pause();
  });

  // Either side closing closes the other: Postgres sees EOF, the driver a close frame.
  ws.on("close", () => tcp.end());
  ws.on("error", () => tcp.destroy());
  tcp.on("error", (err) => log(NAME, `Postgres connection error: ${err.message}`));
  tcp.on("close", (hadError) => {
    tunnels.delete(tcp);
    if (ws.readyState === ws.OPEN) ws.close(hadError ? 1011 : 1000);
  });
}

/**
 * Counts the statements a client sends on the wire: simple queries ('Q') and
 * executions of the extended protocol ('E'), after the startup packet (and an
 * SSLRequest before it, if any).
 */
function statementCounter(stats: { statements: number }): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  let started = false;
  return (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    for (;;) {
      if (!started) {
        if (pending.length < 8) return;
        const length = pending.readInt32BE(0);
        const code = pending.readInt32BE(4);
        if (pending.length < length) return;
        pending = pending.subarray(length);
        // SSLRequest (80877103) and GSSENCRequest (80877104) come before the startup packet.
        if (code !== 80877103 && code !== 80877104) started = true;
        continue;
      }
      if (pending.length < 5) return;
      const length = pending.readInt32BE(1);
      if (pending.length < 1 + length) return;
      const type = pending[0];
      if (type === 0x51 || type === 0x45) stats.statements++;
      pending = pending.subarray(1 + length);
    }
  };
}

function parseAddress(value: string | null): { host: string; port: number } | undefined {
  const colon = value?.lastIndexOf(":") ?? -1;
  if (!value || colon <= 0) return undefined;
  const port = Number(value.slice(colon + 1));
  if (!Number.isInteger(port) || port <= 0 || port > 65535) return undefined;
  return { host: value.slice(0, colon).replace(/^\[(.*)\]$/, "$1"), port };
}

const loopback = new Set(["127.0.0.1", "localhost", "::1"]);
function sameHost(a: string, b: string): boolean {
  return a === b || (loopback.has(a) && loopback.has(b));
}

// ---------------------------------------------------------------------------
// HTTP `POST /sql`, as Neon's sql-over-http serves it to `neon()`.

interface QueryData {
  query: string;
  params: unknown[];
  arrayMode?: boolean;
}

interface Field {
  name: string;
  dataTypeID: number;
  tableID: number;
  columnID: number;
  dataTypeSize: number;
  dataTypeModifier: number;
  format: "text";
}

interface QueryResult {
  command: string;
  rowCount: number | null;
  rows: unknown[];
  fields: Field[];
  rowAsArray: boolean;
}

/** A client error answered with 400 and Neon's error JSON. */
class RequestError extends Error {}

const isolationLevels: Record<string, string> = {
  Serializable: "SERIALIZABLE",
  RepeatableRead: "REPEATABLE READ",
  ReadCommitted: "READ COMMITTED",
  ReadUncommitted: "READ UNCOMMITTED",
};

// Every value stays Postgres text; the driver parses by dataTypeID.
const textOnly = { getTypeParser: () => (value: unknown) => value };

async function handleSql(
  req: IncomingMessage,
  res: ServerResponse,
  target: { host: string; port: number },
  isTarget: (address: { host: string; port: number }) => boolean,
  stats: { statements: number },
): Promise<void> {
  const header = (name: string) => {
    const value = req.headers[name.toLowerCase()];
    return Array.isArray(value) ? value[0] : value;
  };
  let client: pg.Client | undefined;
  try {
    const conn = parseConnectionString(header("Neon-Connection-String"));
    if (!isTarget(conn)) {
      throw new RequestError(`only ${target.host}:${target.port} is reachable through this proxy`);
    }
    const rawOutput = header("Neon-Raw-Text-Output") === "true";
    const arrayMode = header("Neon-Array-Mode") === "true";
    const isolationHeader = header("Neon-Batch-Isolation-Level");
    const isolation = isolationHeader === undefined ? undefined : isolationLevels[isolationHeader];
    if (isolationHeader !== undefined && !isolation) throw new RequestError("invalid isolation level");
    const readOnly = header("Neon-Batch-Read-Only") === "true";
    const deferrable = header("Neon-Batch-Deferrable") === "true";
    const payload = parsePayload(await readBody(req));

    // One connection per request: nothing idles between requests, which
    // matters for single-connection servers such as PGlite.
    client = new pg.Client({ ...conn, host: target.host, port: target.port, ssl: false });
    client.on("error", () => {}); // surfaced by the query that hits it
    await client.connect().catch((err: unknown) => {
      if (err instanceof pg.DatabaseError) throw err; // e.g. no such database: the caller's mistake
      throw new Error(`cannot reach Postgres at ${target.host}:${target.port}: ${String(err)}`);
    });

    stats.statements += Array.isArray(payload) ? payload.length : 1;
    if (!Array.isArray(payload)) {
      sendJson(res, 200, await runQuery(client, payload, rawOutput, arrayMode));
      return;
    }
    const modes = [
      isolation && `ISOLATION LEVEL ${isolation}`,
      readOnly && "READ ONLY",
      deferrable && "DEFERRABLE",
    ].filter(Boolean);
    await client.query(`BEGIN${modes.length ? ` ${modes.join(", ")}` : ""}`);
    const results: QueryResult[] = [];
    try {
      for (const query of payload) results.push(await runQuery(client, query, rawOutput, arrayMode));
      await client.query("COMMIT");
    } catch (err) {
      await client.query("ROLLBACK").catch(() => {});
      throw err;
    }
    const echo: Record<string, string> = {};
    if (isolationHeader) echo["Neon-Batch-Isolation-Level"] = isolationHeader;
    if (readOnly) echo["Neon-Batch-Read-Only"] = "true";
    if (deferrable) echo["Neon-Batch-Deferrable"] = "true";
    sendJson(res, 200, { results }, echo);
  } catch (err) {
    if (err instanceof pg.DatabaseError) sendJson(res, 400, databaseErrorJson(err));
    else if (err instanceof RequestError) sendJson(res, 400, { message: err.message });
    else throw err;
  } finally {
    await client?.end().catch(() => {});
  }
}

async function runQuery(
  client: pg.Client,
  data: QueryData,
  rawOutput: boolean,
  defaultArrayMode: boolean,
): Promise<QueryResult> {
  const config: pg.QueryArrayConfig & { queryMode: "extended" } = {
    text: data.query,
    values: data.params.map(toPgParam),
    rowMode: "array",
    types: textOnly,
    // Like Neon: always the extended protocol, so one statement per query.
    queryMode: "extended",
  };
  const result = await client.query(config);
  const arrayMode = data.arrayMode ?? defaultArrayMode;
  const fields: Field[] = result.fields.map((f) => ({
    name: f.name,
    dataTypeID: f.dataTypeID,
    tableID: f.tableID,
    columnID: f.columnID,
    dataTypeSize: f.dataTypeSize,
    dataTypeModifier: f.dataTypeModifier,
    format: "text",
  }));
  const rows = result.rows.map((row: unknown[]) => {
    const values = rawOutput
      ? row
      : row.map((value, i) => (typeof value === "string" ? textToJson(value, fields[i]!.dataTypeID) : value));
    return arrayMode ? values : Object.fromEntries(fields.map((f, i) => [f.name, values[i]]));
  });
  return { command: result.command, rowCount: result.rowCount, rows, fields, rowAsArray: arrayMode };
}

function parseConnectionString(value: string | undefined): pg.ClientConfig & { host: string; port: number } {
  if (!value) throw new RequestError("missing Neon-Connection-String header");
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new RequestError("Neon-Connection-String is not a valid URL");
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new RequestError("Neon-Connection-String must be a postgres:// URL");
  }
  const database = decodeURIComponent(url.pathname.slice(1));
  if (!url.username || !database) {
    throw new RequestError("Neon-Connection-String needs a user and a database");
  }
  return {
    host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: url.port ? Number(url.port) : 5432,
    user: decodeURIComponent(url.username),
    password: url.password ? decodeURIComponent(url.password) : undefined,
    database,
    application_name: url.searchParams.get("application_name") ?? undefined,
  };
}

function parsePayload(body: string): QueryData | QueryData[] {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw new RequestError("request body is not valid JSON");
  }
  const one = (value: unknown): QueryData => {
    if (typeof value !== "object" || value === null) throw new RequestError("expected {query, params}");
    const { query, params = [], arrayMode } = value as Record<string, unknown>;
    if (typeof query !== "string") throw new RequestError("query must be a string");
    if (!Array.isArray(params)) throw new RequestError("params must be an array");
    if (arrayMode !== undefined && typeof arrayMode !== "boolean") {
      throw new RequestError("arrayMode must be a boolean");
    }
    return { query, params, ...(arrayMode === undefined ? {} : { arrayMode }) };
  };
  if (typeof json === "object" && json !== null && "queries" in json) {
    const { queries } = json;
    if (!Array.isArray(queries)) throw new RequestError("queries must be an array");
    return queries.map(one);
  }
  return one(json);
}

/** JSON parameter → Postgres text, as Neon converts them (the driver already sends strings). */
function toPgParam(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value === "string") return value;
  if (Array.isArray(value)) return toPgArray(value);
  return JSON.stringify(value);
}

function toPgArray(values: unknown[]): string {
  const items = values.map((v) => {
    if (v === null || v === undefined) return "NULL";
    if (Array.isArray(v)) return toPgArray(v);
    if (typeof v === "number" || typeof v === "boolean") return String(v);
    const text = typeof v === "string" ? v : JSON.stringify(v);
    return `"${text.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
  });
  return `{${items.join(",")}}`;
}

// Without Neon-Raw-Text-Output Neon turns a few types into JSON values and
// arrays into JSON arrays (the driver always asks for raw text instead).
const OID = { text: 25, bool: 16, int2: 21, int4: 23, float4: 700, float8: 701, json: 114, jsonb: 3802 };
const arrayElement = new Map<number, number>([
  [1000, OID.bool],
  [1005, OID.int2],
  [1007, OID.int4],
  [1021, OID.float4],
  [1022, OID.float8],
  [199, OID.json],
  [3807, OID.jsonb],
  // Built-in arrays whose elements stay text: text, varchar, bpchar, name, int8,
  // numeric, bytea, date, timestamp, timestamptz, time, interval, uuid, oid.
  ...[1009, 1015, 1014, 1003, 1016, 1231, 1001, 1182, 1115, 1185, 1183, 1187, 2951, 1028].map(
    (oid) => [oid, OID.text] as const,
  ),
]);

function textToJson(text: string, oid: number): unknown {
  const element = arrayElement.get(oid);
  if (element !== undefined) return parsePgArray(text, (item) => textToJson(item, element));
  switch (oid) {
    case OID.bool:
      return text === "t";
    case OID.int2:
    case OID.int4:
      return Number(text);
    case OID.float4:
    case OID.float8: {
      const n = Number(text);
      return Number.isFinite(n) ? n : text;
    }
    case OID.json:
    case OID.jsonb:
      return JSON.parse(text);
    default:
      return text;
  }
}

/** Parses a Postgres array literal such as `{1,NULL,"a b",{2,3}}`. */
function parsePgArray(text: string, item: (value: string) => unknown): unknown[] {
  let i = text.startsWith("[") ? text.indexOf("=") + 1 : 0; // skip `[1:2]=` bounds
  const parse = (): unknown[] => {
    const out: unknown[] = [];
    i++; // `{`
    while (i < text.length && text[i] !== "}") {
      if (text[i] === "{") out.push(parse());
      else if (text[i] === '"') {
        let value = "";
        for (i++; i < text.length && text[i] !== '"'; i++) value += text[i] === "\\" ? text[++i] : text[i];
        i++;
        out.push(item(value));
      } else {
        const found = text.slice(i).search(/[,}]/);
        const end = found < 0 ? text.length : i + found;
        const value = text.slice(i, end).trim();
        out.push(value === "NULL" ? null : item(value));
        i = end;
      }
      if (text[i] === ",") i++;
    }
    i++; // `}`
    return out;
  };
  return parse();
}

function databaseErrorJson(err: pg.DatabaseError): Record<string, unknown> {
  return {
    message: err.message,
    code: err.code,
    detail: err.detail,
    hint: err.hint,
    position: err.position,
    internalPosition: err.internalPosition,
    internalQuery: err.internalQuery,
    severity: err.severity,
    where: err.where,
    table: err.table,
    column: err.column,
    schema: err.schema,
    dataType: err.dataType,
    constraint: err.constraint,
    file: err.file,
    line: err.line,
    routine: err.routine,
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new RequestError(`request body is larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
    "Access-Control-Allow-Origin": "*",
    ...headers,
  });
  res.end(text);
}
