// Test support shared by every suite that needs a database of its own: a
// fresh, empty database on the Postgres at DATABASE_URL (the test runner's),
// dropped again by `dropDatabases()`.
import { randomBytes } from "node:crypto";
import pg from "pg";

export function adminUrl(): string {
  const value = process.env.DATABASE_URL;
  if (!value)
    throw new Error("DATABASE_URL must point at a Postgres server the tests may create databases on");
  return value;
}

export async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

const created: { admin: string; name: string }[] = [];

/** Creates an empty database (on the server of `admin`, default DATABASE_URL) and returns its URL. */
export async function freshDatabase(admin: string = adminUrl()): Promise<string> {
  const name = `t_${randomBytes(6).toString("hex")}`;
  await withClient(admin, (c) => c.query(`CREATE DATABASE ${name}`));
  created.push({ admin, name });
  const url = new URL(admin);
  url.pathname = `/${name}`;
  // An embedded server that ignores database names would share state between
  // runs and make results meaningless.
  const actual = await withClient(url.toString(), (c) =>
    c.query<{ db: string }>("SELECT current_database() AS db"),
  );
  if (actual.rows[0]?.db !== name) {
    throw new Error(`the Postgres at DATABASE_URL connected to "${actual.rows[0]?.db}" instead of "${name}"`);
  }
  return url.toString();
}

/**
 * Drops every database `freshDatabase` made in this process. A suite's pool
 * that was just ended may still have sessions on their way out: a plain DROP
 * DATABASE waits for them itself (Postgres gives them a few seconds), and only
 * if some stay is the drop forced, since a session forced out while its
 * client is closing reaches that client as an error nobody listens to any more.
 */
export async function dropDatabases(): Promise<void> {
  const made = created.splice(0);
  for (const admin of new Set(made.map((m) => m.admin))) {
    await withClient(admin, async (c) => {
      for (const { name } of made.filter((m) => m.admin === admin)) {
        await c
          .query(`DROP DATABASE IF EXISTS ${name}`)
          .catch(() => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
      }
    });
  }
}
