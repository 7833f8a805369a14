// The Redis side of the REST server. Ordinary commands share one connection
// (ioredis queues them in order); anything that may block gets a connection of
// its own, so a long BLPOP or XREADGROUP BLOCK never delays other requests.
// Replies stay Buffers end to end so binary values survive.
import { Command, Redis, type RedisOptions } from "ioredis";
import { type Arg, isBlocking, type RedisCommand, RequestError } from "./commands.ts";
import type { Reply } from "./reply.ts";
import { adaptScripts } from "./scripts.ts";

/** One command's outcome, as `/pipeline` and `/multi-exec` report it. */
export type Outcome = { result: Reply } | { error: string };

export interface Backend {
  /** Runs one command; a blocking one on its own connection, dropped if `signal` aborts. */
  run(command: RedisCommand, signal: AbortSignal): Promise<Reply>;
  /** Runs commands in order; a failing command does not stop the others. */
  pipeline(commands: RedisCommand[], signal: AbortSignal): Promise<Outcome[]>;
  /** Runs commands as one MULTI/EXEC transaction. */
  multiExec(commands: RedisCommand[]): Promise<Outcome[]>;
  /** A fresh connection for subscriber mode; the caller disconnects it. */
  subscriber(): Promise<Redis>;
  close(): Promise<void>;
}

/** Blocking connections kept open for reuse once their command is done. */
const maxIdleBlocking = 4;

const baseOptions: RedisOptions = {
  // A command cut off by a dropped connection fails instead of running twice.
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 2,
  lazyConnect: true,
};

/**
 * Connects to Redis. `clientName` prefixes the connections' CLIENT SETNAME,
 * so `CLIENT LIST` tells which server (and which role) each one belongs to.
 */
export async function connectBackend(
  redisUrl: string,
  clientName: string,
  onError: (message: string) => void,
): Promise<Backend> {
  const shared = new Redis(redisUrl, { ...baseOptions, connectionName: clientName });
  let lastError = "";
  shared.on("error", (error: Error) => {
    lastError = error.message;
    onError(`redis: ${error.message}`);
  });
  try {
    await shared.connect();
  } catch (error) {
    shared.disconnect();
    throw new Error(`cannot reach Redis at ${redisUrl}: ${lastError || errorText(error)}`);
  }

  const idle: Redis[] = [];
  const dedicated = new Set<Redis>();
  let closed = false;

  async function open(name: string): Promise<Redis> {
    if (closed) throw new Error("the server is stopping");
    // No reconnects: a dedicated connection that drops is thrown away.
    const conn = new Redis(redisUrl, { ...baseOptions, connectionName: name, retryStrategy: () => null });
    conn.on("error", () => {});
    dedicated.add(conn);
    conn.once("end", () => dedicated.delete(conn));
    try {
      await conn.connect();
    } catch (error) {
      conn.disconnect();
      throw error;
    }
    return conn;
  }

  async function acquire(): Promise<Redis> {
    for (let conn = idle.pop(); conn; conn = idle.pop()) {
      if (conn.status === "ready") return conn;
      conn.disconnect();
    }
    return open(`${clientName}-blocking`);
  }

  function release(conn: Redis, reusable: boolean): void {
    if (reusable && !closed && conn.status === "ready" && idle.length < maxIdleBlocking) idle.push(conn);
    else conn.disconnect();
  }

  /** Runs `work` on a connection of its own; an abort closes that connection, ending the block. */
  async function onDedicated<T>(signal: AbortSignal, work: (conn: Redis) => Promise<T>): Promise<T> {
    const conn = await acquire();
    if (signal.aborted) {
      release(conn, true);
      throw new Error("the client went away");
    }
    const drop = () => conn.disconnect();
    signal.addEventListener("abort", drop, { once: true });
    try {
      return await work(conn);
    } finally {
      signal.removeEventListener("abort", drop);
      release(conn, !signal.aborted);
    }
  }

  return {
    run(command, signal) {
      if (isBlocking(command)) return onDedicated(signal, (conn) => send(conn, command));
      return send(shared, command);
    },
    pipeline(commands, signal) {
      if (commands.some(isBlocking)) return onDedicated(signal, (conn) => sendAll(conn, commands));
      return sendAll(shared, commands);
    },
    // Blocking commands do not block inside MULTI, so the shared connection serves.
    multiExec: (commands) => transaction(shared, commands),
    subscriber: () => open(`${clientName}-subscriber`),
    async close() {
      closed = true;
      for (const conn of [shared, ...idle.splice(0), ...dedicated]) conn.disconnect();
    },
  };
}

/**
 * Builds the command ourselves rather than through `call`: ioredis transforms
 * some replies by lower-case command name (HGETALL into an object), and the
 * upper-case name sidesteps that. No reply encoding means Buffers come back.
 */
function command(name: string, args: Arg[]): Command {
  return new Command(name.toUpperCase(), args);
}

async function send(conn: Redis, original: RedisCommand): Promise<Reply> {
  const adapted = adaptScripts(original);
  const [name, ...args] = adapted.command;
  const cmd = command(name, args);
  conn.sendCommand(cmd);
  const reply = (await cmd.promise) as Reply;
  return adapted.reply ?? reply;
}

/** Writes every command before any reply arrives, like a Redis pipeline. */
async function sendAll(conn: Redis, commands: RedisCommand[]): Promise<Outcome[]> {
  const settled = await Promise.allSettled(commands.map((c) => send(conn, c)));
  return settled.map((s) =>
    s.status === "fulfilled" ? { result: s.value } : { error: errorText(s.reason) },
  );
}

/**
 * MULTI, the commands and EXEC are written in one go, so nothing from other
 * requests on the shared connection lands inside the transaction. A command
 * Redis refuses to queue discards the whole transaction (one error, like
 * Upstash); a command that fails while running is reported in its place.
 */
async function transaction(conn: Redis, commands: RedisCommand[]): Promise<Outcome[]> {
  // ioredis recognises the lower-case names when it cleans up after a dropped connection.
  const multi = new Command("multi");
  const queued = commands.map((original) => {
    const [name, ...args] = adaptScripts(original).command;
    const cmd = command(name, args);
    cmd.inTransaction = true;
    return cmd;
  });
  const exec = new Command("exec");
  for (const cmd of [multi, ...queued, exec]) conn.sendCommand(cmd);

  const queueing = await Promise.allSettled([multi.promise, ...queued.map((c) => c.promise)]);
  let replies: Reply;
  try {
    replies = (await exec.promise) as Reply;
  } catch (error) {
    const refused = queueing.find((s) => s.status === "rejected");
    const cause = refused ? ` (${errorText(refused.reason)})` : "";
    throw new RequestError(400, `${errorText(error)}${cause}`);
  }
  if (!Array.isArray(replies)) throw new RequestError(400, "EXECABORT Transaction aborted");
  return replies.map((reply) => (reply instanceof Error ? { error: reply.message } : { result: reply }));
}

export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Errors that Redis itself replied with, as opposed to connection trouble. */
export function isRedisReply(error: unknown): boolean {
  return error instanceof Error && error.name === "ReplyError";
}
