// The Neon driver, unchanged, against a real Postgres through the local proxy:
// Pool/Client over the WebSocket bridge and neon() over HTTP `/sql`.
import { NeonDbError, neon, neonConfig, Pool } from "@neondatabase/serverless";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import ws from "ws";
import { freePort, quietLog, type Service } from "../process.ts";
import { startNeonProxy } from "./proxy.ts";

const databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) throw new Error("DATABASE_URL must name the Postgres these tests run against");
const { hostname: pgHost, port: pgPort } = new URL(databaseUrl);

const table = `neon_proxy_test_${process.pid}_${Date.now()}`;
let proxy: Service;
let proxyAddress: string;
let pool: Pool;

beforeAll(async () => {
  const port = await freePort();
  proxy = await startNeonProxy({ port, postgres: { host: pgHost, port: Number(pgPort) }, log: quietLog });
  proxyAddress = proxy.env.NEON_LOCAL_PROXY!;
  neonConfig.webSocketConstructor = ws;
  neonConfig.wsProxy = (host, port) => `${proxyAddress}/v1?address=${host}:${port}`;
  neonConfig.useSecureWebSocket = false;
  neonConfig.pipelineTLS = false;
  neonConfig.pipelineConnect = false;
  neonConfig.fetchEndpoint = `http://${proxyAddress}/sql`;

  pool = new Pool({ connectionString: databaseUrl });
  pool.on("error", () => {});
  await pool.query(`create table ${table} (id int primary key, note text)`);
});

afterAll(async () => {
  await pool?.query(`drop table if exists ${table}`);
  await pool?.end();
  await proxy?.stop();
});

async function ids(): Promise<number[]> {
  const { rows } = await pool.query<{ id: number }>(`select id from ${table} order by id`);
  return rows.map((r) => r.id);
}

describe("WebSocket bridge (Pool)", () => {
  it("runs a parameterised query", async () => {
    const { rows } = await pool.query("select $1::int + 1 as n, $2::text as s", [41, "hi"]);
    expect(rows).toEqual([{ n: 42, s: "hi" }]);
  });

  it("counts the statements it carries (GET /stats), over the WebSocket and /sql", async () => {
    const statements = async () =>
      ((await (await fetch(`http://${proxyAddress}/stats`)).json()) as { statements: number }).statements;
    const before = await statements();
    await pool.query("select $1::int as n", [1]);
    await pool.query("select 2");
    const sql = neon(databaseUrl);
    await sql`select ${3}::int as n`;
    expect((await statements()) - before).toBe(3);
  });

  it("commits and rolls back transactions", async () => {
    const client = await pool.connect();
    try {
      await client.query("begin");
      await client.query(`insert into ${table} values (1, 'kept')`);
      await client.query("commit");
      await client.query("begin");
      await client.query(`insert into ${table} values (2, 'dropped')`);
      await client.query("rollback");
    } finally {
      client.release();
    }
    expect(await ids()).toEqual([1]);
  });

  it("surfaces Postgres errors with their code", async () => {
    await expect(pool.query(`insert into ${table} values (1, 'again')`)).rejects.toMatchObject({
      code: "23505",
    });
  });

  it("closes the Postgres connection when the driver disconnects", async () => {
    const name = `neon-proxy-close-${process.pid}`;
    const own = new Pool({ connectionString: databaseUrl, application_name: name });
    own.on("error", () => {});
    await own.query("select 1");
    await own.end();
    const count = async () =>
      (
        await pool.query("select count(*)::int as n from pg_stat_activity where application_name = $1", [
          name,
        ])
      ).rows[0].n;
    await expect.poll(count, { timeout: 5_000 }).toBe(0);
  });

  it("closes the WebSocket when Postgres drops the connection", async () => {
    const own = new Pool({ connectionString: databaseUrl });
    own.on("error", () => {});
    const client = await own.connect();
    client.on("error", () => {});
    const { rows } = await client.query("select pg_backend_pid() as pid");
    await pool.query("select pg_terminate_backend($1)", [rows[0].pid]);
    await expect(client.query("select 1")).rejects.toThrow();
    client.release(true);
    await own.end();
  });

  it("refuses WebSockets to any other address", async () => {
    const status = await new Promise<number | string>((resolve) => {
      const socket = new ws(`ws://${proxyAddress}/v1?address=127.0.0.1:1`);
      socket.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      socket.on("open", () => resolve("open"));
      socket.on("error", (err) => resolve(err.message));
    });
    expect(status).toBe(403);

    const elsewhere = new URL(databaseUrl);
    elsewhere.port = "1";
    const stray = new Pool({ connectionString: elsewhere.toString() });
    stray.on("error", () => {});
    await expect(stray.query("select 1")).rejects.toThrow();
    await stray.end().catch(() => {});
  });
});

describe("HTTP /sql (neon())", () => {
  const sql = () => neon(databaseUrl);

  it("returns typed values parsed by the driver", async () => {
    const bytes = Buffer.from([1, 2, 255]);
    const [row] = await sql()`
      select ${41}::int + 1 as int, ${true}::bool as bool, ${"2024-01-02T03:04:05.678Z"}::timestamptz as at,
             ${JSON.stringify({ a: [1, "x"] })}::jsonb as doc, ${bytes}::bytea as bytes, null::text as nothing,
             array[1, 2, 3] as ints, array['a', 'b c', null, 'q"uote'] as texts, 12345678901234::int8 as big`;
    expect(row).toMatchObject({
      int: 42,
      bool: true,
      doc: { a: [1, "x"] },
      nothing: null,
      ints: [1, 2, 3],
      texts: ["a", "b c", null, 'q"uote'],
      big: "12345678901234",
    });
    expect((row!.at as Date).toISOString()).toBe("2024-01-02T03:04:05.678Z");
    expect([...(row!.bytes as Uint8Array)]).toEqual([1, 2, 255]);
  });

  it("passes query(), array mode and full results through", async () => {
    const full = await sql().query("select $1::text as s, 7 as n", ["x"], {
      fullResults: true,
      arrayMode: true,
    });
    expect(full.rows).toEqual([["x", 7]]);
    expect(full.command).toBe("SELECT");
    expect(full.rowCount).toBe(1);
    expect(full.fields.map((f) => [f.name, f.dataTypeID])).toEqual([
      ["s", 25],
      ["n", 23],
    ]);
  });

  it("runs sql.transaction() atomically", async () => {
    const db = sql();
    const [inserted, counted] = await db.transaction([
      db`insert into ${db.unsafe(table)} values (10, 'a') returning id`,
      db`select count(*)::int as n from ${db.unsafe(table)} where id = 10`,
    ]);
    expect(inserted).toEqual([{ id: 10 }]);
    expect(counted).toEqual([{ n: 1 }]);

    await expect(
      db.transaction([
        db`insert into ${db.unsafe(table)} values (11, 'b')`,
        db`insert into ${db.unsafe(table)} values (10, 'duplicate')`,
      ]),
    ).rejects.toMatchObject({ code: "23505" });
    expect(await ids()).toEqual([1, 10]);
  });

  it("applies the transaction's isolation level and read-only mode", async () => {
    const db = sql();
    const settings = await db.transaction([db`show transaction_isolation`, db`show transaction_read_only`], {
      isolationLevel: "Serializable",
      readOnly: true,
      deferrable: true,
    });
    expect(settings).toEqual([
      [{ transaction_isolation: "serializable" }],
      [{ transaction_read_only: "on" }],
    ]);
    await expect(
      db.transaction([db`insert into ${db.unsafe(table)} values (12, 'c')`], { readOnly: true }),
    ).rejects.toMatchObject({ code: "25006" });
  });

  it("raises NeonDbError carrying the Postgres error fields", async () => {
    const error = await sql()`insert into ${sql().unsafe(table)} values (1, 'again')`.catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(NeonDbError);
    expect(error).toMatchObject({ code: "23505", severity: "ERROR", table, constraint: `${table}_pkey` });

    const syntax = await sql()
      .query("selec 1")
      .catch((e: unknown) => e);
    expect(syntax).toMatchObject({ code: "42601", position: "1" });
  });

  it("refuses connection strings naming another server", async () => {
    const elsewhere = new URL(databaseUrl);
    elsewhere.port = "1";
    await expect(neon(elsewhere.toString())`select 1`).rejects.toThrow(/only .* is reachable/);
  });
});
