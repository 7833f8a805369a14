// Runs the migrations against a real Postgres (DATABASE_URL, provided by the
// test runner) and checks the constraints the application relies on, and the
// encryption of job sources stored in plain text before. Each run works in
// fresh databases of its own and drops them afterwards.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { decryptJobSource, parseKeyring } from "@torreclou/contracts";
import { drizzle } from "drizzle-orm/node-postgres";
import { migrate as drizzleMigrate } from "drizzle-orm/node-postgres/migrator";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyMigrations, countPlaintextSources, migrate, PlaintextSourcesError } from "./migrate.ts";
import { dropDatabases, freshDatabase, withClient } from "./testing.ts";

const sha256Hex = () => randomBytes(32).toString("hex");

let url: string;
let db: pg.Client;

async function insertUser(): Promise<string> {
  const { rows } = await db.query<{ id: string }>(
    "INSERT INTO users (google_sub, email) VALUES ($1, $2) RETURNING id",
    [randomBytes(8).toString("hex"), "someone@example.com"],
  );
  return rows[0]!.id;
}

async function insertProfile(userId: string, name: string, isDefault: boolean): Promise<string> {
  const { rows } = await db.query<{ id: string }>(
    `INSERT INTO storage_profiles (user_id, kind, name, is_default, config, secret_ciphertext, secret_iv, secret_key_id)
     VALUES ($1, 's3', $2, $3, '{"region":"us-east-1","bucket":"b"}', 'Y2lwaGVy', 'aXY=', 'k1') RETURNING id`,
    [userId, name, isDefault],
  );
  return rows[0]!.id;
}

async function insertTorrent(): Promise<string> {
  const { rows } = await db.query<{ id: string }>(
    "INSERT INTO torrents (info_hash) VALUES ($1) RETURNING id",
    [randomBytes(20).toString("hex")],
  );
  return rows[0]!.id;
}

/** Columns and values of a (placeholder) encrypted source, for jobs inserted by hand. */
const SOURCE_COLUMNS = "source_kind, source_ciphertext, source_iv, source_key_id";
const SOURCE_VALUES = "'magnet', 'Y2lwaGVy', 'aXY=', 'k1'";

async function count(table: string, where: string, params: unknown[]): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${table} WHERE ${where}`,
    params,
  );
  return rows[0]!.n;
}

beforeAll(async () => {
  url = await freshDatabase();
  await migrate(url);
  db = new pg.Client({ connectionString: url });
  await db.connect();
});

afterAll(async () => {
  await db?.end();
  await dropDatabases();
});

describe("migrate", () => {
  it("is a no-op when run again", async () => {
    expect(await applyMigrations(url)).toEqual([]);
    await expect(migrate(url)).resolves.toBeUndefined();
  });

  it("applies once when two runs race on a fresh database", async () => {
    const fresh = await freshDatabase();
    const results = await Promise.all([applyMigrations(fresh), applyMigrations(fresh)]);
    // One run did the work; the other waited for the lock and found nothing to do.
    const journal = JSON.parse(
      await readFile(new URL("./migrations/meta/_journal.json", import.meta.url), "utf8"),
    ) as { entries: unknown[] };
    const count = journal.entries.length;
    expect(results.map((r) => r.length).sort()).toEqual([0, count]);
    const rows = await withClient(fresh, (c) => c.query("SELECT 1 FROM drizzle.__drizzle_migrations"));
    expect(rows.rowCount).toBe(count);
  });

  it("creates every table", async () => {
    const { rows } = await db.query<{ table_name: string }>(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
    );
    expect(rows.map((r) => r.table_name)).toEqual([
      "api_tokens",
      "job_files",
      "job_transitions",
      "jobs",
      "storage_profiles",
      "torrents",
      "upload_parts",
      "users",
      "webhook_deliveries",
      "webhook_endpoints",
    ]);
  });
});

describe("constraints", () => {
  it("allows one default storage profile per user", async () => {
    const alice = await insertUser();
    const bob = await insertUser();
    await insertProfile(alice, "main", true);
    await insertProfile(alice, "archive", false);
    await insertProfile(alice, "spare", false);
    await expect(insertProfile(alice, "second default", true)).rejects.toMatchObject({
      code: "23505",
      constraint: "storage_profiles_one_default_per_user",
    });
    await expect(insertProfile(bob, "main", true)).resolves.toBeTypeOf("string");
  });

  it("rejects two profiles with the same name for one user", async () => {
    const user = await insertUser();
    await insertProfile(user, "same", false);
    await expect(insertProfile(user, "same", false)).rejects.toMatchObject({ code: "23505" });
  });

  it("cascades a user's deletion to jobs, files, parts and transitions", async () => {
    const user = await insertUser();
    const profile = await insertProfile(user, "main", true);
    const torrent = await insertTorrent();
    const { rows } = await db.query<{ id: string }>(
      `INSERT INTO jobs (user_id, torrent_id, storage_profile_id, ${SOURCE_COLUMNS}) VALUES ($1, $2, $3, ${SOURCE_VALUES}) RETURNING id`,
      [user, torrent, profile],
    );
    const job = rows[0]!.id;
    const file = await db.query<{ id: string }>(
      "INSERT INTO job_files (job_id, file_index, path, size) VALUES ($1, 0, 'a.bin', 10) RETURNING id",
      [job],
    );
    await db.query(
      "INSERT INTO upload_parts (job_file_id, part_number, etag, size) VALUES ($1, 1, 'e', 10)",
      [file.rows[0]!.id],
    );
    await db.query(
      "INSERT INTO job_transitions (job_id, from_state, to_state, cause, attempt) VALUES ($1, NULL, 'queued', 'user', 0)",
      [job],
    );
    await db.query(
      "INSERT INTO api_tokens (user_id, name, token_hash, prefix) VALUES ($1, 'cli', $2, 'tc_')",
      [user, sha256Hex()],
    );

    await db.query("DELETE FROM users WHERE id = $1", [user]);

    expect(await count("jobs", "id = $1", [job])).toBe(0);
    expect(await count("job_files", "job_id = $1", [job])).toBe(0);
    expect(await count("upload_parts", "job_file_id = $1", [file.rows[0]!.id])).toBe(0);
    expect(await count("job_transitions", "job_id = $1", [job])).toBe(0);
    expect(await count("storage_profiles", "user_id = $1", [user])).toBe(0);
    expect(await count("api_tokens", "user_id = $1", [user])).toBe(0);
    // Torrent metadata is shared, not the user's.
    expect(await count("torrents", "id = $1", [torrent])).toBe(1);
  });

  it("keeps a job when its storage profile is deleted", async () => {
    const user = await insertUser();
    const profile = await insertProfile(user, "main", false);
    const { rows } = await db.query<{ id: string }>(
      `INSERT INTO jobs (user_id, torrent_id, storage_profile_id, ${SOURCE_COLUMNS}) VALUES ($1, $2, $3, ${SOURCE_VALUES}) RETURNING id`,
      [user, await insertTorrent(), profile],
    );
    await db.query("DELETE FROM storage_profiles WHERE id = $1", [profile]);
    const job = await db.query("SELECT storage_profile_id FROM jobs WHERE id = $1", [rows[0]!.id]);
    expect(job.rows).toEqual([{ storage_profile_id: null }]);
  });

  it("rejects a duplicate API token hash", async () => {
    const user = await insertUser();
    const hash = sha256Hex();
    const insert = () =>
      db.query("INSERT INTO api_tokens (user_id, name, token_hash, prefix) VALUES ($1, 't', $2, 'tc_')", [
        user,
        hash,
      ]);
    await insert();
    await expect(insert()).rejects.toMatchObject({
      code: "23505",
      constraint: "api_tokens_token_hash_unique",
    });
  });

  it("rejects a job state outside the contract", async () => {
    const user = await insertUser();
    await expect(
      db.query(
        `INSERT INTO jobs (user_id, torrent_id, state, ${SOURCE_COLUMNS}) VALUES ($1, $2, 'paused', ${SOURCE_VALUES})`,
        [user, await insertTorrent()],
      ),
    ).rejects.toMatchObject({ code: "22P02" });
    const { rows } = await db.query<{ state: string }>(
      `INSERT INTO jobs (user_id, torrent_id, ${SOURCE_COLUMNS}) VALUES ($1, $2, ${SOURCE_VALUES}) RETURNING state, attempt`,
      [user, await insertTorrent()],
    );
    expect(rows[0]).toEqual({ state: "queued", attempt: 0 });
  });

  it("serves the job list order from the pagination index", async () => {
    await db.query("BEGIN");
    try {
      // Tiny tables make every plan cheap; steer the planner off the
      // alternatives so only a usable index can avoid the Sort.
      await db.query("SET LOCAL enable_seqscan = off");
      await db.query("SET LOCAL enable_bitmapscan = off");
      await db.query("SET LOCAL enable_sort = off");
      const { rows } = await db.query<{ "QUERY PLAN": string }>(
        `EXPLAIN SELECT id FROM jobs WHERE user_id = '00000000-0000-0000-0000-000000000000'
         ORDER BY created_at DESC, id DESC LIMIT 20`,
      );
      const plan = rows.map((r) => r["QUERY PLAN"]).join("\n");
      expect(plan).toContain("jobs_user_created_idx");
      expect(plan).not.toContain("Sort");
    } finally {
      await db.query("ROLLBACK");
    }
  });
});

describe("job sources stored before they were encrypted", () => {
  const keys = `k1:${randomBytes(32).toString("base64")}`;
  const hex = (text: string) => Buffer.from(text).toString("hex");

  /** A database migrated only up to `lastTag`, as a deployment of that time left it. */
  async function databaseAt(lastTag: string): Promise<string> {
    const fresh = await freshDatabase();
    const folder = await mkdtemp(join(tmpdir(), "torreclou-migrations-"));
    const source = new URL("./migrations/", import.meta.url);
    const journal = JSON.parse(await readFile(new URL("meta/_journal.json", source), "utf8")) as {
      entries: { tag: string }[];
    };
    const upTo = journal.entries.findIndex((e) => e.tag === lastTag);
    expect(upTo).toBeGreaterThanOrEqual(0);
    journal.entries = journal.entries.slice(0, upTo + 1);
    await mkdir(join(folder, "meta"));
    await writeFile(join(folder, "meta", "_journal.json"), JSON.stringify(journal));
    for (const { tag } of journal.entries)
      await cp(new URL(`${tag}.sql`, source), join(folder, `${tag}.sql`));
    await withClient(fresh, (client) => drizzleMigrate(drizzle({ client }), { migrationsFolder: folder }));
    await rm(folder, { recursive: true });
    return fresh;
  }

  /** A one-file .torrent named "hello" whose announce URL carries `passkey`. */
  function dotTorrent(passkey: string): Buffer {
    const announce = `https://t.example/${passkey}/announce`;
    return Buffer.concat([
      Buffer.from(`d8:announce${announce.length}:${announce}4:infod6:lengthi5e4:name5:hello`),
      Buffer.from("12:piece lengthi16384e6:pieces20:"),
      randomBytes(20),
      Buffer.from("ee"),
    ]);
  }

  const trackerOf = (passkey: string) => encodeURIComponent(`https://t.example/${passkey}/announce`);

  it("are encrypted per job by migrate with CREDENTIALS_KEYS, and cleared; the shared row keeps only facts", async () => {
    const legacy = await databaseAt("0001_job_source");
    const h1 = randomBytes(20).toString("hex");
    const h2 = randomBytes(20).toString("hex");
    const sharedMagnet = `magnet:?xt=urn:btih:${h1}&dn=SCAM%3A%20pay%201%20BTC&tr=${trackerOf("passkey-first")}`;
    const ownMagnet = `magnet:?xt=urn:btih:${h1}&dn=Mine&tr=${trackerOf("passkey-third")}`;
    const torrentFile = dotTorrent("passkey-fourth");
    const ids = await withClient(legacy, async (c) => {
      const user = async () =>
        (
          await c.query<{ id: string }>(
            "INSERT INTO users (google_sub, email) VALUES ($1, 'x@example.com') RETURNING id",
            [randomBytes(8).toString("hex")],
          )
        ).rows[0]!.id;
      const t1 = (
        await c.query<{ id: string }>(
          "INSERT INTO torrents (info_hash, info_hash_v2, name, magnet_uri) VALUES ($1, $2, 'SCAM: pay 1 BTC', $3) RETURNING id",
          [h1, "ab".repeat(32), sharedMagnet],
        )
      ).rows[0]!.id;
      const t2 = (
        await c.query<{ id: string }>(
          "INSERT INTO torrents (info_hash, name, torrent_file, total_size) VALUES ($1, 'hello', $2, 5) RETURNING id",
          [h2, torrentFile],
        )
      ).rows[0]!.id;
      const job = async (torrentId: string, own: { magnet?: string; file?: Buffer } = {}) =>
        (
          await c.query<{ id: string }>(
            "INSERT INTO jobs (user_id, torrent_id, source_magnet, source_torrent_file) VALUES ($1, $2, $3, $4) RETURNING id",
            [await user(), torrentId, own.magnet ?? null, own.file ?? null],
          )
        ).rows[0]!.id;
      return {
        // From before jobs kept their own source: two users' jobs on the shared magnet row.
        first: await job(t1),
        second: await job(t1),
        own: await job(t1, { magnet: ownMagnet }),
        ownFile: await job(t2, { file: torrentFile }),
        oldFile: await job(t2),
        t1,
      };
    });

    // Without the key ring the schema moves on, but it refuses to call the job done.
    await expect(migrate(legacy)).rejects.toThrow(PlaintextSourcesError);
    await expect(migrate(legacy)).rejects.toThrow(
      /5 jobs still hold their magnet link or \.torrent in plain text/,
    );
    expect(await countPlaintextSources(legacy)).toBe(5);

    await migrate(legacy, { credentialsKeys: keys });
    expect(await countPlaintextSources(legacy)).toBe(0);

    const ring = parseKeyring(keys);
    const { rows } = await withClient(legacy, (c) =>
      c.query<{
        id: string;
        name: string | null;
        source_kind: "torrent" | "magnet";
        source_ciphertext: string;
        source_iv: string;
        source_key_id: string;
      }>("SELECT id, name, source_kind, source_ciphertext, source_iv, source_key_id FROM jobs"),
    );
    const byId = new Map(rows.map((r) => [r.id, r]));
    const open = async (id: string) => {
      const r = byId.get(id)!;
      return decryptJobSource(
        ring,
        { kind: r.source_kind, ciphertext: r.source_ciphertext, iv: r.source_iv, keyId: r.source_key_id },
        id,
      );
    };
    // Each job downloads from what it downloaded from before, now its own and encrypted;
    // a shared magnet loses the dn its first submitter chose.
    const sharedWithoutDn = `magnet:?xt=urn:btih:${h1}&tr=${trackerOf("passkey-first")}`;
    expect(await open(ids.first)).toEqual({ kind: "magnet", magnet: sharedWithoutDn });
    expect(await open(ids.second)).toEqual({ kind: "magnet", magnet: sharedWithoutDn });
    expect(await open(ids.own)).toEqual({ kind: "magnet", magnet: ownMagnet });
    for (const id of [ids.ownFile, ids.oldFile]) {
      expect(await open(id)).toEqual({ kind: "torrent", torrent: new Uint8Array(torrentFile) });
    }
    // Names come from each job's own source, never from the shared row.
    expect(byId.get(ids.first)!.name).toBeNull();
    expect(byId.get(ids.second)!.name).toBeNull();
    expect(byId.get(ids.own)!.name).toBe("Mine");
    expect(byId.get(ids.ownFile)!.name).toBe("hello");
    expect(byId.get(ids.oldFile)!.name).toBe("hello");

    const shared = await withClient(legacy, (c) =>
      c.query("SELECT name, info_hash_v2 FROM torrents WHERE id = $1", [ids.t1]),
    );
    expect(shared.rows).toEqual([{ name: null, info_hash_v2: null }]);
    const dump = await withClient(legacy, (c) =>
      c.query<{ j: string }>(
        "SELECT row_to_json(t)::text AS j FROM jobs t UNION ALL SELECT row_to_json(t)::text FROM torrents t",
      ),
    );
    const all = dump.rows.map((r) => r.j).join("\n");
    for (const secret of ["passkey-first", "passkey-third", "passkey-fourth", "SCAM", "magnet:"]) {
      expect(all).not.toContain(secret);
      expect(all).not.toContain(hex(secret));
    }

    // Run again: nothing left to do, nothing changed.
    await migrate(legacy, { credentialsKeys: keys });
    const again = await withClient(legacy, (c) =>
      c.query<{ source_ciphertext: string }>("SELECT id, source_ciphertext FROM jobs"),
    );
    for (const r of again.rows as { id: string; source_ciphertext: string }[]) {
      expect(r.source_ciphertext).toBe(byId.get(r.id)!.source_ciphertext);
    }
  });

  it("`node drizzle/migrate.ts` (npm run migrate) refuses without CREDENTIALS_KEYS and encrypts with it", async () => {
    const legacy = await databaseAt("0001_job_source");
    await withClient(legacy, async (c) => {
      const user = await c.query<{ id: string }>(
        "INSERT INTO users (google_sub, email) VALUES ('cli', 'x@example.com') RETURNING id",
      );
      const torrent = await c.query<{ id: string }>(
        "INSERT INTO torrents (info_hash, name, magnet_uri) VALUES ($1, 'x', 'magnet:?xt=urn:btih:x') RETURNING id",
        [randomBytes(20).toString("hex")],
      );
      await c.query("INSERT INTO jobs (user_id, torrent_id, source_magnet) VALUES ($1, $2, $3)", [
        user.rows[0]!.id,
        torrent.rows[0]!.id,
        `magnet:?xt=urn:btih:x&tr=${trackerOf("passkey-cli")}`,
      ]);
    });
    const script = fileURLToPath(new URL("./migrate.ts", import.meta.url));
    const run = (extra: Record<string, string>) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn(process.execPath, [script], {
          env: { PATH: process.env.PATH ?? "", DATABASE_URL: legacy, ...extra },
        });
        let out = "";
        child.stdout.on("data", (d: Buffer) => (out += d));
        child.stderr.on("data", (d: Buffer) => (out += d));
        child.on("close", (code) => resolve({ code, out }));
      });
    const refused = await run({});
    expect(refused.code).toBe(1);
    expect(refused.out).toContain("applied 0002_sealed_sources");
    expect(refused.out).toMatch(
      /1 job still holds its magnet link or \.torrent in plain text; run the migration again with CREDENTIALS_KEYS set/,
    );
    const done = await run({ CREDENTIALS_KEYS: keys });
    expect(done.out).toContain("migrate: encrypted the sources of 1 jobs");
    expect(done.code).toBe(0);
    expect(done.out).not.toContain("passkey-cli");
    expect(await countPlaintextSources(legacy)).toBe(0);
  });
});
