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
}

export function createPool(opts: PoolOptions): { pool: pg.Pool; db: Db } {
  const pool = new pg.Pool({
    connectionString: opts.connectionString,
    max: opts.max,
    // The database is the operator's, not a user's destination: not subject to the egress policy.
    stream: infraSocket,
    // Startup parameters: they hold from the connection's first statement.
    lock_timeout: opts.lockTimeoutMs ?? 5000,
    idle_in_transaction_session_timeout: opts.idleInTransactionMs ?? 15_000,
  });
  pool.on("error", (error) => opts.log.warn({ err: error }, "postgres connection lost (idle)"));
  pool.on("connect", (client) => {
    client.on("error", (error) => opts.log.warn({ err: error }, "postgres connection lost"));
  });
  return { pool, db: drizzle({ client: pool }) };
}
