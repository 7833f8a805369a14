// The worker's pool against a real Postgres: a backend terminated mid-
// transaction does not end the process, a lock wait gives up, and a session
// frozen inside a transaction is ended by the server so its locks go.
import { Writable } from "node:stream";
import { sql } from "drizzle-orm";
import pg from "pg";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dropDatabases, freshDatabase } from "../../drizzle/testing.ts";
import { createPool, describeDatabaseError, isDatabaseInterruption } from "./db.ts";

let url: string;
const lines: { msg: string; err?: { message?: string } }[] = [];
const waiters: (() => void)[] = [];
const log = pino(
  { level: "warn" },
  new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()));
      for (const wake of waiters.splice(0)) wake();
      done();
    },
  }),
);

/** Resolves once the pool has logged a lost connection (an event, not a clock). */
async function lostConnection(): Promise<void> {
  while (!lines.some((l) => l.msg.startsWith("postgres connection lost"))) {
    await new Promise<void>((resolve) => waiters.push(resolve));
  }
}

let admin: pg.Client;

beforeAll(async () => {
  url = await freshDatabase();
  admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query("CREATE TABLE t (id int PRIMARY KEY, v int)");
  await admin.query("INSERT INTO t VALUES (1, 0)");
});

afterAll(async () => {
  await admin?.end();
  await dropDatabases();
});

describe("worker Postgres pool", () => {
  it("survives its backend being terminated inside a transaction", async () => {
    const { pool, db } = createPool({ connectionString: url, max: 2, log });
    lines.length = 0;
    let pid = 0;
    const failed = db
      .transaction(async (tx) => {
        const result = (await tx.execute(sql`SELECT pg_backend_pid() AS pid`)) as { rows: { pid: number }[] };
        pid = result.rows[0]!.pid;
        await admin.query("SELECT pg_terminate_backend($1)", [pid]);
        await tx.execute(sql`UPDATE t SET v = v + 1 WHERE id = 1`);
      })
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    const error = await failed;
    expect(error).toBeInstanceOf(Error);
    // Read as an interruption (the job is taken again), and described without the SQL.
    expect(isDatabaseInterruption(error)).toBe(true);
    expect(describeDatabaseError(error)).toMatch(/^a database statement failed \(/);
    expect(describeDatabaseError(error)).not.toMatch(/UPDATE|params/);
    await lostConnection();
    // The process is still here (an unhandled 'error' would have failed this test file),
    // and the pool hands out a fresh connection.
    const again = await pool.query<{ one: number }>("SELECT 1 AS one");
    expect(again.rows[0]!.one).toBe(1);
    await pool.end();
  });

  it("reads a statement sent after its session ended (the client saw it first) as an interruption", async () => {
    const { pool, db } = createPool({ connectionString: url, max: 1, log });
    lines.length = 0;
    const failed = db
      .transaction(async (tx) => {
        const result = (await tx.execute(sql`SELECT pg_backend_pid() AS pid`)) as { rows: { pid: number }[] };
        await admin.query("SELECT pg_terminate_backend($1)", [result.rows[0]!.pid]);
        // The client has noticed the end of its session before the next statement goes out.
        await lostConnection();
        await tx.execute(sql`UPDATE t SET v = v + 1 WHERE id = 1`);
      })
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    const error = await failed;
    expect(String((error as Error).cause ?? error)).toMatch(/not queryable|Connection terminated/);
    expect(isDatabaseInterruption(error)).toBe(true);
    await pool.end();
  });

  it("does not read a statement's own error, or a non-database one, as an interruption", async () => {
    const { pool, db } = createPool({ connectionString: url, max: 1, log });
    const wrong = await db.execute(sql`SELECT * FROM no_such_table`).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(wrong).toBeInstanceOf(Error);
    expect(isDatabaseInterruption(wrong)).toBe(false);
    expect(describeDatabaseError(wrong)).toBe(
      'a database statement failed (relation "no_such_table" does not exist)',
    );
    const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:9"), { code: "ECONNREFUSED" });
    expect(isDatabaseInterruption(refused)).toBe(false);
    expect(describeDatabaseError(refused)).toBeUndefined();
    await pool.end();
  });

  it("reads a session that could not be had (server down) as an interruption, in a transaction too", async () => {
    const { pool, db } = createPool({
      connectionString: "postgres://postgres@127.0.0.1:9/none",
      max: 1,
      log,
    });
    const outside = await db.execute(sql`SELECT 1`).then(
      () => undefined,
      (error: unknown) => error,
    );
    const inside = await db
      .transaction(async (tx) => {
        await tx.execute(sql`SELECT 1`);
      })
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(isDatabaseInterruption(outside)).toBe(true);
    expect(isDatabaseInterruption(inside)).toBe(true);
    await pool.end();
  });

  it("gives up waiting for a row lock instead of queueing behind it", async () => {
    const { pool } = createPool({ connectionString: url, max: 2, log, lockTimeoutMs: 200 });
    await admin.query("BEGIN");
    await admin.query("SELECT * FROM t WHERE id = 1 FOR UPDATE");
    try {
      const error = await pool.query("UPDATE t SET v = v + 1 WHERE id = 1").then(
        () => undefined,
        (e: unknown) => e as { code?: string },
      );
      expect(error?.code).toBe("55P03"); // lock_not_available
    } finally {
      await admin.query("ROLLBACK");
      await pool.end();
    }
  });

  it("has a session that froze inside a transaction ended by the server, releasing its locks", async () => {
    const { pool } = createPool({ connectionString: url, max: 2, log, idleInTransactionMs: 200 });
    lines.length = 0;
    const client = await pool.connect();
    await client.query("BEGIN");
    await client.query("SELECT * FROM t WHERE id = 1 FOR UPDATE");
    // The worker "freezes" here: it sends nothing more. The server ends the session...
    await lostConnection();
    // ...so the row is free for everyone else.
    await admin.query("BEGIN");
    await admin.query("SET LOCAL lock_timeout = 0");
    await admin.query("SELECT * FROM t WHERE id = 1 FOR UPDATE");
    await admin.query("ROLLBACK");
    client.release(true);
    await pool.end();
  });
});
