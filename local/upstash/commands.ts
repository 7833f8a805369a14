// Commands as the REST API receives them (a JSON array, or a URL path), and
// the rules for where they may run on a Redis connection shared by everyone.

export type Arg = string | Buffer;

/** A Redis command: its name first, then its arguments. */
export type RedisCommand = [name: string, ...args: Arg[]];

/** A request the server turns down with an HTTP status and an Upstash-style `{ error }` body. */
export class RequestError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "RequestError";
    this.status = status;
  }
}

export function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString("utf8"));
  } catch (error) {
    throw new RequestError(400, `ERR failed to parse request body as JSON: ${(error as Error).message}`);
  }
}

/** One command from a JSON array such as `["SET", "k", "v", "EX", 100]`. */
export function parseCommand(value: unknown): RedisCommand {
  if (!Array.isArray(value) || value.length === 0) {
    throw new RequestError(400, 'ERR the command must be a non-empty JSON array, e.g. ["GET", "key"]');
  }
  const args = value.map((item, index) => {
    // The client sends numbers and booleans unquoted (e.g. ["SET", "k", "v", "EX", 100]).
    if (typeof item === "string" || typeof item === "number" || typeof item === "boolean")
      return String(item);
    throw new RequestError(
      400,
      `ERR command argument ${index} must be a string or a number, got ${JSON.stringify(item)}`,
    );
  });
  const [name, ...rest] = args as [string, ...string[]];
  return [name, ...rest];
}

/** The body of `/pipeline` and `/multi-exec`: a non-empty array of command arrays. */
export function parseCommandList(value: unknown): RedisCommand[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new RequestError(
      400,
      'ERR the body must be a non-empty JSON array of commands, e.g. [["GET", "key"]]',
    );
  }
  return value.map(parseCommand);
}

/**
 * The path form: `/set/foo/bar` is `SET foo bar`. A request body, if any, is
 * the last argument as raw bytes (so binary values need no encoding), and
 * query parameters follow it: `POST /set/foo?EX=100` with body `v` is
 * `SET foo v EX 100`.
 */
export function commandFromPath(
  segments: string[],
  body: Buffer | undefined,
  query: URLSearchParams,
): RedisCommand {
  const [name, ...args] = segments as [string, ...string[]];
  const command: RedisCommand = [name, ...args];
  if (body && body.length > 0) command.push(body);
  for (const [key, value] of query) {
    if (key === "_token") continue;
    command.push(key);
    if (value !== "") command.push(value);
  }
  return command;
}

const connectionState: Record<string, string> = {
  MULTI: "send transactions to /multi-exec",
  EXEC: "send transactions to /multi-exec",
  DISCARD: "send transactions to /multi-exec",
  WATCH: "send transactions to /multi-exec",
  UNWATCH: "send transactions to /multi-exec",
  SUBSCRIBE: "subscribe through /subscribe/<channel>",
  PSUBSCRIBE: "subscribe through /psubscribe/<pattern>",
  SSUBSCRIBE: "subscribe through /subscribe/<channel>",
  UNSUBSCRIBE: "close the /subscribe request instead",
  PUNSUBSCRIBE: "close the /psubscribe request instead",
  SUNSUBSCRIBE: "close the /subscribe request instead",
  MONITOR: "it is not available here",
  QUIT: "there is no connection to quit",
  RESET: "there is no connection to reset",
  SELECT: "the REST API always uses database 0",
  HELLO: "the REST API speaks RESP2",
  AUTH: "authenticate with the bearer token",
  SYNC: "it is not available here",
  PSYNC: "it is not available here",
  REPLCONF: "it is not available here",
};

/**
 * Rejects commands that would change the state of the Redis connection they
 * run on. Every request shares connections, so one client's MULTI or SELECT
 * would leak into other clients' commands.
 */
export function assertAllowed(command: RedisCommand): void {
  const name = command[0].toUpperCase();
  let reason = connectionState[name];
  if (name === "CLIENT" && String(command[1] ?? "").toUpperCase() === "REPLY")
    reason = "replies cannot be turned off";
  if (reason) throw new RequestError(400, `ERR '${command[0]}' is not supported over REST: ${reason}`);
}

const alwaysBlocking = new Set([
  "BLPOP",
  "BRPOP",
  "BRPOPLPUSH",
  "BLMOVE",
  "BLMPOP",
  "BZPOPMIN",
  "BZPOPMAX",
  "BZMPOP",
  "WAIT",
  "WAITAOF",
]);

/** True for commands that may hold their connection until data arrives or a timeout passes. */
export function isBlocking(command: RedisCommand): boolean {
  const name = command[0].toUpperCase();
  if (alwaysBlocking.has(name)) return true;
  if (name !== "XREAD" && name !== "XREADGROUP") return false;
  // Options come before STREAMS; after it only keys and ids follow, which may be named "BLOCK".
  for (const arg of command.slice(1)) {
    const word = String(arg).toUpperCase();
    if (word === "STREAMS") return false;
    if (word === "BLOCK") return true;
  }
  return false;
}
