// Runs the migrations against a real Postgres (DATABASE_URL, provided by the
// test runner) and checks the constraints the application relies on. Each
// run works in fresh databases of its own and drops them afterwards.
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyMigrations, migrate } from "./migrate.ts";
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
    "INSERT INTO torrents (info_hash, name, magnet_uri) VALUES ($1, 'example', $2) RETURNING id",
    [randomBytes(20).toString("hex"), "magnet:?xt=urn:btih:example"],
  );
  return rows[0]!.id;
}

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
      "INSERT INTO jobs (user_id, torrent_id, storage_profile_id) VALUES ($1, $2, $3) RETURNING id",
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
      "INSERT INTO jobs (user_id, torrent_id, storage_profile_id) VALUES ($1, $2, $3) RETURNING id",
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
      db.query("INSERT INTO jobs (user_id, torrent_id, state) VALUES ($1, $2, 'paused')", [
        user,
        await insertTorrent(),
      ]),
    ).rejects.toMatchObject({ code: "22P02" });
    const { rows } = await db.query<{ state: string }>(
      "INSERT INTO jobs (user_id, torrent_id) VALUES ($1, $2) RETURNING state, attempt",
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
