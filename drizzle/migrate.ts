// Applies the SQL migrations in ./migrations (written by drizzle-kit) to a
// database. Safe to run again and from several processes at once: a session
// advisory lock serialises runs, and drizzle's journal table
// (drizzle.__drizzle_migrations) records what is already applied.
//
// Then it encrypts job sources still stored in plain text (jobs created before
// sources were encrypted): SQL cannot, since the key comes from the
// environment. With CREDENTIALS_KEYS set it encrypts and clears them; without
// it, it refuses to finish while any are left.
//
//   DATABASE_URL=postgres://... CREDENTIALS_KEYS=... node drizzle/migrate.ts
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import {
  encryptJobSource,
  type JobSource,
  type Keyring,
  parseKeyring,
  parseMagnet,
  parseTorrentFile,
} from "@torreclou/contracts";
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

/** Plaintext job sources are left and no key ring was given to encrypt them. */
export class PlaintextSourcesError extends Error {
  constructor(count: number) {
    super(
      `${count} job${count === 1 ? " still holds its" : "s still hold their"} magnet link or .torrent in plain text; ` +
        "run the migration again with CREDENTIALS_KEYS set (the value the edge and the workers use) to encrypt them",
    );
    this.name = "PlaintextSourcesError";
  }
}

/**
 * Applies pending migrations, then encrypts any plaintext job sources with the
 * key ring `credentialsKeys` (the CREDENTIALS_KEYS setting); without it,
 * throws PlaintextSourcesError if any are left.
 */
export async function migrate(
  databaseUrl: string,
  options: { credentialsKeys?: string } = {},
): Promise<void> {
  await applyMigrations(databaseUrl);
  if (options.credentialsKeys) {
    await sealPlaintextSources(databaseUrl, parseKeyring(options.credentialsKeys));
    return;
  }
  const left = await countPlaintextSources(databaseUrl);
  if (left > 0) throw new PlaintextSourcesError(left);
}

const PLAINTEXT = "source_torrent_file IS NOT NULL OR source_magnet IS NOT NULL";

/** Jobs whose source is still in the legacy plaintext columns. */
export async function countPlaintextSources(databaseUrl: string): Promise<number> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM jobs WHERE ${PLAINTEXT}`,
    );
    return rows[0]!.n;
  } finally {
    await client.end();
  }
}

/** The name a legacy job gets from its own source: the .torrent's name or the magnet's dn. */
async function nameOf(source: JobSource): Promise<string | null> {
  try {
    return source.kind === "torrent"
      ? (await parseTorrentFile(source.torrent)).name
      : (parseMagnet(source.magnet).name ?? null);
  } catch {
    return null; // unreadable by today's parser: the job shows its info hash
  }
}

/**
 * Encrypts every plaintext job source into the job's source columns (bound to
 * the job, as the edge does for new jobs), names the job after it if it has no
 * name, and clears the plaintext, one row at a time. Returns how many jobs it
 * sealed. Safe to run again or concurrently: a row is written only while it
 * still holds plaintext.
 */
export async function sealPlaintextSources(databaseUrl: string, keyring: Keyring): Promise<number> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  let sealed = 0;
  try {
    for (;;) {
      const { rows } = await client.query<{
        id: string;
        source_torrent_file: Buffer | null;
        source_magnet: string | null;
      }>(`SELECT id, source_torrent_file, source_magnet FROM jobs WHERE ${PLAINTEXT} ORDER BY id LIMIT 100`);
      if (rows.length === 0) return sealed;
      for (const row of rows) {
        const source: JobSource = row.source_torrent_file
          ? { kind: "torrent", torrent: new Uint8Array(row.source_torrent_file) }
          : { kind: "magnet", magnet: row.source_magnet! };
        const box = await encryptJobSource(keyring, source, row.id);
        const { rowCount } = await client.query(
          `UPDATE jobs SET source_kind = $2, source_ciphertext = $3, source_iv = $4, source_key_id = $5,
             name = coalesce(name, $6), source_torrent_file = NULL, source_magnet = NULL
           WHERE id = $1 AND (${PLAINTEXT})`,
          [row.id, box.kind, box.ciphertext, box.iv, box.keyId, await nameOf(source)],
        );
        sealed += rowCount ?? 0;
      }
    }
  } finally {
    await client.end();
  }
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
  const keys = process.env.CREDENTIALS_KEYS;
  if (keys) {
    const sealed = await sealPlaintextSources(databaseUrl, parseKeyring(keys));
    if (sealed > 0) process.stdout.write(`migrate: encrypted the sources of ${sealed} jobs\n`);
    return;
  }
  const left = await countPlaintextSources(databaseUrl);
  if (left > 0) {
    process.stderr.write(`migrate: ${new PlaintextSourcesError(left).message}\n`);
    process.exit(1);
  }
}

if (import.meta.main) {
  main().catch((error: unknown) => {
    process.stderr.write(`migrate: could not migrate the database in DATABASE_URL: ${describe(error)}\n`);
    process.exit(1);
  });
}
