// The worker's Postgres pool. Rules that keep one worker's trouble from
// becoming everyone's:
//
// - Every connection has an error listener for its whole life. pg's pool
//   listens only while a connection is idle; one checked out (say, inside a
//   transaction) whose backend is terminated emits 'error' with no listener,
//   which would end the process. The query in flight still rejects, and the
//   attempt handles that like any other failure.
// - No transaction waits on the network or a timer. Should a worker freeze
//   mid-transaction anyway (SIGSTOP, a long GC, a VM pause), Postgres ends its
//   session after `idle_in_transaction_session_timeout`, releasing its row
//   locks; and nobody queues behind a lock for longer than `lock_timeout` —
//   the waiting statement fails and its job is simply taken again later.

import type { Db } from "@torreclou/db/jobs";
import { DrizzleQueryError } from "drizzle-orm/errors";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import type { Logger } from "pino";
import { infraSocket } from "./egress/index.ts";

export interface PoolOptions {
  connectionString: string;
  max: number;
  log: Logger;
  /** A statement waiting for a row lock gives up after this long. */
  lockTimeoutMs?: number;
  /** A session idle inside a transaction this long is ended by the server. */
  idleInTransactionMs?: number;
  /** How the sessions appear in pg_stat_activity (default "torreclou-worker"). */
  applicationName?: string;
}

export function createPool(opts: PoolOptions): { pool: pg.Pool; db: Db } {
  const pool = new pg.Pool({
    connectionString: opts.connectionString,
    max: opts.max,
    // The database is the operator's, not a user's destination: not subject to the egress policy.
    stream: infraSocket,
    application_name: opts.applicationName ?? "torreclou-worker",
    // Startup parameters: they hold from the connection's first statement.
    lock_timeout: opts.lockTimeoutMs ?? 5000,
    idle_in_transaction_session_timeout: opts.idleInTransactionMs ?? 15_000,
  });
  // A session that could not be had (server down, restarting, full) is marked as such:
  // drizzle opens a transaction's session itself, outside the statement errors it wraps.
  const connect = pool.connect.bind(pool) as (
    callback: (
      err: Error | undefined,
      client: pg.PoolClient | undefined,
      done: (release?: unknown) => void,
    ) => void,
  ) => void;
  pool.connect = ((
    callback?: (err: Error | undefined, client?: pg.PoolClient, done?: () => void) => void,
  ) => {
    const promise = new Promise<pg.PoolClient>((resolve, reject) =>
      connect((err, client, done) => {
        const failure = err ? new DatabaseUnavailableError(err) : undefined;
        if (callback) callback(failure, client, done);
        else if (failure || !client) reject(failure);
        else resolve(client);
      }),
    );
    return callback ? undefined : promise;
  }) as typeof pool.connect;
  pool.on("error", (error) => opts.log.warn({ err: error }, "postgres connection lost (idle)"));
  pool.on("connect", (client) => {
    client.on("error", (error) => opts.log.warn({ err: error }, "postgres connection lost"));
  });
  return { pool, db: drizzle({ client: pool }) };
}

// SQLSTATEs of a statement cut off by the session, not by its own content:
// class 08 (connection exception), the server shutting down or starting up,
// a session ended for idling in a transaction, a lock wait given up, and
// the two conflicts Postgres asks clients to retry.
const INTERRUPTED = new Set(["57P01", "57P02", "57P03", "25P03", "55P03", "40001", "40P01"]);
const LOST_SOCKET = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH"]);

/** No database session could be had for a statement: the server is down, restarting or full. */
export class DatabaseUnavailableError extends Error {
  constructor(cause: Error) {
    super(cause.message, { cause });
    this.name = "DatabaseUnavailableError";
  }
}

/** The error under a failed drizzle statement or session (its SQL and parameters left out), if `error` is one. */
function statementCause(error: unknown): unknown {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof DatabaseUnavailableError) return e;
    if (e instanceof DrizzleQueryError) return e.cause ?? e;
  }
  return undefined;
}

/**
 * True when a database statement failed because its session was lost, the
 * server was restarting, or it gave up waiting for a lock: nothing about the
 * job is wrong, and another attempt (at once, here or on another worker)
 * will succeed. Errors from anywhere else (a storage provider) are not this.
 */
export function isDatabaseInterruption(error: unknown): boolean {
  const cause = statementCause(error);
  if (cause === undefined) return false;
  if (cause instanceof DatabaseUnavailableError) return true;
  const { code, message } = (cause ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === "string" && (code.startsWith("08") || INTERRUPTED.has(code) || LOST_SOCKET.has(code)))
    return true;
  // pg's own words when the socket closes under a query, or had closed before
  // the query was sent (the client saw the session end first).
  return (
    typeof message === "string" &&
    /^Connection terminated|connection is closed|connection error and is not queryable/i.test(message)
  );
}

/** A failed statement in words a person can read: Postgres's message, never the SQL or its parameters. */
export function describeDatabaseError(error: unknown): string | undefined {
  const cause = statementCause(error);
  if (cause === undefined) return undefined;
  const message = cause instanceof Error ? cause.message : String(cause);
  return `a database statement failed (${message})`;
}
