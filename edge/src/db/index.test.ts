// Inside workerd: the driver reaches the local Postgres through the Neon proxy
// over WebSocket (Pool, drizzle) and HTTP (neon()), exactly as it would reach Neon.
import { env } from "cloudflare:workers";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createDb, createHttpSql } from "./index.ts";

const table = sql.identifier(`edge_db_test_${Date.now()}_${Math.floor(Math.random() * 1e6)}`);

beforeAll(async () => {
  if (!env.DATABASE_URL || !env.NEON_LOCAL_PROXY) {
    throw new Error(
      "DATABASE_URL and NEON_LOCAL_PROXY must name a Postgres and the Neon proxy in front of it",
    );
  }
  const { db, close } = createDb(env);
  await db.execute(sql`create table ${table} (id int primary key)`);
  await close();
});

afterAll(async () => {
  const { db, close } = createDb(env);
  await db.execute(sql`drop table if exists ${table}`);
  await close();
});

// Twice, each with its own pool, as two requests would: the first pool's
// connections closing ("Network connection lost" in workerd) must neither throw
// nor be logged, nor disturb the next pool.
describe.each([1, 2])("request %i", (request) => {
  it("queries through the Pool and drizzle, in and out of transactions", async () => {
    const logged = vi.spyOn(console, "error");
    const { db, pool, close } = createDb(env);
    expect(pool.listenerCount("error")).toBeGreaterThan(0);
    try {
      const { rows } = await pool.query("select $1::int * 2 as n", [request]);
      expect(rows).toEqual([{ n: request * 2 }]);

      const result = await db.execute(sql`select ${"edge"}::text as who, now() as at`);
      expect(result.rows[0]).toMatchObject({ who: "edge" });

      await db.transaction(async (tx) => {
        await tx.execute(sql`insert into ${table} values (${request})`);
      });
      await expect(
        db.transaction(async (tx) => {
          await tx.execute(sql`insert into ${table} values (${request + 100})`);
          tx.rollback();
        }),
      ).rejects.toThrow();
      const ids = await db.execute<{ id: number }>(sql`select id from ${table} order by id`);
      expect(ids.rows.map((r) => r.id)).toEqual(Array.from({ length: request }, (_, i) => i + 1));
    } finally {
      await close();
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(logged).not.toHaveBeenCalled();
    logged.mockRestore();
  });

  it("queries over HTTP with neon()", async () => {
    const query = createHttpSql(env);
    const rows = await query`select ${request}::int as n, ${{ a: 1 }}::jsonb as doc, true as ok`;
    expect(rows).toEqual([{ n: request, doc: { a: 1 }, ok: true }]);
  });
});
