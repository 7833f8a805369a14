// A private Postgres for the local cloud: the system's PostgreSQL when it is
// installed (its own data folder and port, nothing shared with a system
// cluster), otherwise the embedded PGlite behind a Postgres wire socket.
import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { type LogSink, prefixedLog, type Service, spawnService, which } from "./process.ts";

export interface PostgresOptions {
  port: number;
  dataDir: string;
  database: string;
  log?: LogSink;
  /** Trade durability for speed (tests). */
  ephemeral?: boolean;
  /** Force the embedded PGlite server even when PostgreSQL is installed. */
  embedded?: boolean;
  /** More server settings (`-c name=value`), e.g. a benchmark's shared_preload_libraries; the system server only. */
  settings?: Record<string, string>;
}

/** Finds the directory holding initdb/postgres, newest version first. */
export function findPostgresBin(): string | undefined {
  const root = "/usr/lib/postgresql";
  if (existsSync(root)) {
    const versions = readdirSync(root)
      .filter((v) => existsSync(join(root, v, "bin", "initdb")))
      .sort((a, b) => Number(b) - Number(a));
    if (versions[0]) return join(root, versions[0], "bin");
  }
  const initdb = which("initdb");
  return initdb ? initdb.slice(0, -"/initdb".length) : undefined;
}

/** Postgres refuses to run as root; when we are root, run it as this user. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  for (const name of ["postgres", "nobody"]) {
    try {
      const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
      const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8" }).trim());
      return { uid, gid };
    } catch {
      // no such user
    }
  }
  throw new Error("running as root, but there is no 'postgres' or 'nobody' user to run Postgres as");
}

async function canConnect(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
  try {
    await client.connect();
    await client.query("select 1");
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

async function ensureDatabase(adminUrl: string, database: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const found = await client.query("select 1 from pg_database where datname = $1", [database]);
    if (found.rowCount === 0) await client.query(`create database "${database.replaceAll('"', '""')}"`);
  } finally {
    await client.end();
  }
}

export async function startPostgres(options: PostgresOptions): Promise<Service> {
  const bin = options.embedded ? undefined : findPostgresBin();
  return bin ? startSystemPostgres(bin, options) : startEmbeddedPostgres(options);
}

async function startSystemPostgres(bin: string, options: PostgresOptions): Promise<Service> {
  const log = options.log ?? prefixedLog;
  const dir = join(options.dataDir, "postgres");
  const user = serverUser();
  mkdirSync(dir, { recursive: true });
  if (user) {
    // The server user must be able to reach and own its folder.
    chmodSync(options.dataDir, 0o755);
    chownSync(dir, user.uid, user.gid);
  }
  const ids = user ? { uid: user.uid, gid: user.gid } : {};
  if (!existsSync(join(dir, "PG_VERSION"))) {
    log("postgres", `initialising a private cluster in ${dir}`);
    execFileSync(
      join(bin, "initdb"),
      [
        "-D",
        dir,
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
        ...(options.ephemeral ? ["--no-sync"] : []),
      ],
      { stdio: "pipe", ...ids },
    );
  }
  const adminUrl = `postgres://postgres@127.0.0.1:${options.port}/postgres`;
  const settings = [
    ["listen_addresses", "127.0.0.1"],
    ["port", String(options.port)],
    // TCP only: no socket files to collide with a system cluster.
    ["unix_socket_directories", ""],
    ["max_connections", "200"],
    ...(options.ephemeral
      ? [
          ["fsync", "off"],
          ["synchronous_commit", "off"],
          ["full_page_writes", "off"],
        ]
      : []),
    ...Object.entries(options.settings ?? {}),
  ];
  const server = await spawnService("postgres", join(bin, "postgres"), {
    args: ["-D", dir, ...settings.flatMap(([k, v]) => ["-c", `${k}=${v}`])],
    log,
    ...ids,
    // SIGINT is Postgres's "fast" shutdown: roll back and stop at once.
    stopSignal: "SIGINT",
    ready: () => canConnect(adminUrl),
  });
  await ensureDatabase(adminUrl, options.database);
  return {
    name: "postgres",
    env: { DATABASE_URL: `postgres://postgres@127.0.0.1:${options.port}/${options.database}` },
    urls: [`postgres://postgres@127.0.0.1:${options.port}/${options.database}`],
    stop: server.stop,
  };
}

async function startEmbeddedPostgres(options: PostgresOptions): Promise<Service> {
  const log = options.log ?? prefixedLog;
  log(
    "postgres",
    "PostgreSQL is not installed; using the embedded PGlite server (apt-get install postgresql for the real one)",
  );
  const { PGlite } = await import("@electric-sql/pglite");
  const { PGLiteSocketServer } = await import("@electric-sql/pglite-socket");
  const dir = join(options.dataDir, "pglite");
  mkdirSync(dir, { recursive: true });
  const db = await PGlite.create(dir);
  // PGlite runs one query at a time; the socket server queues the rest, so
  // many clients (pools, the Neon proxy) can still be connected at once.
  const server = new PGLiteSocketServer({ db, port: options.port, host: "127.0.0.1", maxConnections: 100 });
  await server.start();
  // PGlite has a single database and ignores the name in the URL.
  const url = `postgres://postgres@127.0.0.1:${options.port}/${options.database}`;
  return {
    name: "postgres",
    env: { DATABASE_URL: url },
    urls: [`${url} (embedded PGlite)`],
    stop: async () => {
      await server.stop();
      await db.close();
    },
  };
}
