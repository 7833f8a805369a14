// Both ways the local cloud gets a Postgres: the system's server in a private
// cluster, and the embedded PGlite fallback for machines without PostgreSQL.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { migrate } from "../drizzle/migrate.ts";
import { startPostgres } from "./postgres.ts";
import { freePort, portOpen } from "./process.ts";

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

async function roundTrip(url: string): Promise<void> {
  await migrate(url);
  const pool = new pg.Pool({ connectionString: url, max: 3 });
  // Connections may still be closing when the server stops; that is expected here.
  pool.on("error", () => {});
  try {
    // Several connections at once, as the edge's pools and the proxy hold them.
    const results = await Promise.all(
      [1, 2, 3].map((n) => pool.query<{ n: number }>("select $1::int as n", [n])),
    );
    expect(results.map((r) => r.rows[0]?.n)).toEqual([1, 2, 3]);
    const tables = await pool.query("select 1 from information_schema.tables where table_name = 'jobs'");
    expect(tables.rowCount).toBe(1);
  } finally {
    await pool.end();
  }
}

describe.each([
  ["system PostgreSQL", false],
  ["embedded PGlite", true],
])("%s", (_name, embedded) => {
  it("starts, takes migrations and connections, and stops freeing its port", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "torreclou-pg-"));
    dirs.push(dataDir);
    const port = await freePort();
    const service = await startPostgres({
      port,
      dataDir,
      database: "torreclou",
      ephemeral: true,
      embedded,
      log: () => {},
    });
    try {
      expect(service.env.DATABASE_URL).toBe(`postgres://postgres@127.0.0.1:${port}/torreclou`);
      await roundTrip(service.env.DATABASE_URL!);
    } finally {
      await service.stop();
    }
    expect(await portOpen(port)).toBe(false);
  }, 120_000);
});
