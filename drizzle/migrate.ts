// Applies the SQL migrations in ./migrations (written by drizzle-kit) to a
// database. Safe to run again and from several processes at once: a session
// advisory lock serialises runs, and drizzle's journal table
// (drizzle.__drizzle_migrations) records what is already applied.
//
//   DATABASE_URL=postgres://... node drizzle/migrate.ts
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { drizzle } from "drizzle-orm/node-postgres";
import { migrate as drizzleMigrate } from "drizzle-orm/node-postgres/migrator";
import pg from "pg";

const migrationsFolder = fileURLToPath(new URL("./migrations", import.meta.url));

/**
 * Key of the advisory lock held while migrating. Advisory locks are scoped to
 * one database, so runs against different databases never wait for each other.
 */
const MIGRATION_LOCK_KEY = 7_301_150_912_001n;

interface JournalEntry {
  tag: string;
  /** drizzle-kit's timestamp for the migration; the migrator stores it as created_at. */
  when: number;
}

/**
 * Applies pending migrations and returns the tags of those it applied, in
 * order (empty when the database was already up to date).
 */
export async function applyMigrations(databaseUrl: string): Promise<string[]> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    // The lock and the migrator must share one session, hence a Client, not a Pool.
    await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK_KEY.toString()]);
    try {
      const pending = await pendingMigrations(client);
      await drizzleMigrate(drizzle({ client }), { migrationsFolder });
      return pending;
    } finally {
      // Closing the session releases the lock too, so a failed unlock (e.g. a
      // dropped connection) must not hide the error that got us here.
      await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY.toString()]).catch(() => {});
    }
  } finally {
    await client.end();
  }
}

/** Applies pending migrations; see applyMigrations. */
export async function migrate(databaseUrl: string): Promise<void> {
  await applyMigrations(databaseUrl);
}

/**
 * The migrations drizzle's migrator is about to run: it applies every journal
 * entry newer than the newest one recorded in the database. Only accurate
 * while the advisory lock is held.
 */
async function pendingMigrations(client: pg.Client): Promise<string[]> {
  const journal = JSON.parse(await readFile(`${migrationsFolder}/meta/_journal.json`, "utf8")) as {
    entries: JournalEntry[];
  };
  const exists = await client.query<{ table: string | null }>(
    "SELECT to_regclass('drizzle.__drizzle_migrations')::text AS table",
  );
  let newest = Number.NEGATIVE_INFINITY;
  if (exists.rows[0]?.table) {
    const last = await client.query<{ created_at: string | null }>(
      "SELECT max(created_at)::text AS created_at FROM drizzle.__drizzle_migrations",
    );
    const value = last.rows[0]?.created_at;
    if (value != null) newest = Number(value);
  }
  return journal.entries.filter((entry) => entry.when > newest).map((entry) => entry.tag);
}

/** A one-line reason; a refused connection to several addresses is an AggregateError with no message. */
function describe(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) {
    return error.errors.map(describe).join("; ");
  }
  if (error instanceof Error) {
    const code = (error as Error & { code?: unknown }).code;
    return error.message || (typeof code === "string" ? code : error.name);
  }
  return String(error);
}

async function main(): Promise<void> {
  const databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) {
    process.stderr.write(
      "migrate: DATABASE_URL is not set. Set it to the Postgres connection string, e.g.\n" +
        "  DATABASE_URL=postgres://user:password@localhost:5432/torreclou node drizzle/migrate.ts\n",
    );
    process.exit(2);
  }
  const applied = await applyMigrations(databaseUrl);
  if (applied.length === 0) {
    process.stdout.write("migrate: database is up to date, nothing to apply\n");
  } else {
    for (const tag of applied) process.stdout.write(`migrate: applied ${tag}\n`);
  }
}

if (import.meta.main) {
  main().catch((error: unknown) => {
    process.stderr.write(`migrate: could not migrate the database in DATABASE_URL: ${describe(error)}\n`);
    process.exit(1);
  });
}
