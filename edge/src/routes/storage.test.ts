// Storage profiles against the real local S3 server (started by the test
// runner) and the real database, inside workerd.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { decryptS3Secret, parseKeyring, sealedOf } from "@torreclou/contracts";
import { AwsClient } from "aws4fetch";
import { sql } from "drizzle-orm";
import { afterEach, beforeEach, describe, expect, it, type MockInstance, vi } from "vitest";
import { fromWebApp, signIn, webOrigin } from "../../test/helpers.ts";
import { app } from "../app.ts";
import { createDb } from "../db/index.ts";

/** A request with an execution context, as in production (token auth uses waitUntil). */
async function call(path: string, init: RequestInit = {}): Promise<Response> {
  const ctx = createExecutionContext();
  const response = await app.request(path, init, env, ctx);
  await waitOnExecutionContext(ctx);
  return response;
}

interface Profile {
  id: string;
  kind: string;
  name: string;
  isDefault: boolean;
  status: string;
  s3?: {
    endpoint: string | null;
    region: string;
    bucket: string;
    prefix: string;
    forcePathStyle: boolean;
    accessKeyId: string | null;
  };
}
interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

const json = (cookie: string, method: string, body?: unknown): RequestInit => ({
  method,
  headers: fromWebApp(cookie, { "content-type": "application/json" }),
  ...(body === undefined ? {} : { body: JSON.stringify(body) }),
});

/** A profile body for the local S3 (which checks signatures, so the secret must be right). */
function s3Body(overrides: Record<string, unknown> = {}) {
  return {
    kind: "s3",
    name: `local ${crypto.randomUUID().slice(0, 8)}`,
    endpoint: env.S3_ENDPOINT,
    region: env.S3_REGION,
    bucket: env.S3_BUCKET,
    prefix: `tests/${crypto.randomUUID()}`,
    forcePathStyle: true,
    accessKeyId: env.S3_ACCESS_KEY_ID,
    secretAccessKey: env.S3_SECRET_ACCESS_KEY,
    ...overrides,
  };
}

async function create(cookie: string, body: Record<string, unknown>) {
  const response = await call("/api/storage", json(cookie, "POST", body));
  const text = await response.text();
  return { response, text, body: JSON.parse(text) as { profile: Profile; warnings: string[] } & ErrorBody };
}

async function list(cookie: string): Promise<Profile[]> {
  const response = await call("/api/storage", { headers: { cookie } });
  expect(response.status).toBe(200);
  return ((await response.json()) as { profiles: Profile[] }).profiles;
}

/** Every row of every table in the database, as JSON text. */
async function dumpDatabase(): Promise<string> {
  const { db, close } = createDb(env);
  try {
    const tables = await db.execute<{ schema: string; name: string }>(sql`
      select table_schema as schema, table_name as name from information_schema.tables
      where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')`);
    expect(tables.rows.map((t) => t.name)).toContain("storage_profiles");
    const parts: string[] = [];
    for (const table of tables.rows) {
      const rows = await db.execute<{ j: string }>(
        sql`select row_to_json(t)::text as j from ${sql.identifier(table.schema)}.${sql.identifier(table.name)} t`,
      );
      for (const row of rows.rows) parts.push(row.j);
    }
    return parts.join("\n");
  } finally {
    await close();
  }
}

async function query<T extends Record<string, unknown>>(text: ReturnType<typeof sql>): Promise<T[]> {
  const { db, close } = createDb(env);
  try {
    return (await db.execute<T>(text)).rows as T[];
  } finally {
    await close();
  }
}

/** Keys in the local bucket under `prefix`, listed directly with the test's own client. */
async function keysUnder(prefix: string): Promise<string[]> {
  const client = new AwsClient({
    accessKeyId: env.S3_ACCESS_KEY_ID,
    secretAccessKey: env.S3_SECRET_ACCESS_KEY,
    service: "s3",
    region: env.S3_REGION,
    retries: 0,
  });
  const url = new URL(`${env.S3_ENDPOINT}/${env.S3_BUCKET}`);
  url.searchParams.set("list-type", "2");
  url.searchParams.set("prefix", `${prefix}/`);
  const response = await client.fetch(url.toString());
  expect(response.status).toBe(200);
  return [...(await response.text()).matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]!);
}

/** Every URL the app fetched during the test. */
let outbound: string[] = [];
let logged: MockInstance[] = [];
const logText = () =>
  logged
    .flatMap((spy) => spy.mock.calls)
    .map((args) => args.map(String).join(" "))
    .join("\n");

beforeEach(() => {
  logged = (["log", "info", "warn", "error", "debug"] as const).map((level) => vi.spyOn(console, level));
  outbound = [];
  const real = globalThis.fetch.bind(globalThis);
  vi.spyOn(globalThis, "fetch").mockImplementation((input, init) => {
    outbound.push(input instanceof Request ? input.url : String(input));
    return real(input, init);
  });
});
afterEach(() => {
  vi.restoreAllMocks();
});

describe("POST /api/storage (S3)", () => {
  it("checks the bucket, saves the profile with its secret encrypted, and never shows the secret", async () => {
    const { cookie } = await signIn();
    const body = s3Body({ prefix: "/backups//torreclou/" });
    const { response, text, body: created } = await create(cookie, body);
    expect(response.status, text).toBe(201);
    expect(created.warnings).toEqual([]);
    expect(created.profile).toMatchObject({
      kind: "s3",
      name: body.name,
      isDefault: true, // the first profile
      status: "active",
      s3: {
        endpoint: env.S3_ENDPOINT,
        region: env.S3_REGION,
        bucket: env.S3_BUCKET,
        prefix: "backups/torreclou",
        forcePathStyle: true,
        accessKeyId: "…lou", // "torreclou", masked
      },
    });
    expect(text).not.toContain(body.secretAccessKey);
    // The check cleaned up after itself.
    expect(await keysUnder("backups/torreclou")).toEqual([]);

    const listResponse = await call("/api/storage", { headers: { cookie } });
    const listText = await listResponse.text();
    expect(listText).not.toContain(body.secretAccessKey);
    expect(listText).not.toMatch(/secret|ciphertext|"iv"/i);
    const [listed] = (JSON.parse(listText) as { profiles: Profile[] }).profiles;
    expect(listed).toEqual(created.profile);

    const one = await call(`/api/storage/${created.profile.id}`, { headers: { cookie } });
    const oneText = await one.text();
    expect(one.status).toBe(200);
    expect(oneText).not.toContain(body.secretAccessKey);
    expect((JSON.parse(oneText) as { profile: Profile }).profile).toEqual(created.profile);

    expect(logText()).toContain("storage profile created");
    expect(logText()).not.toContain(body.secretAccessKey);
  });

  it("leaves no plaintext secret in the database, and stores what the worker can decrypt", async () => {
    const { cookie } = await signIn();
    const accessKeyId = env.S3_ACCESS_KEY_ID;
    const body = s3Body();
    const { response, text, body: created } = await create(cookie, body);
    expect(response.status, text).toBe(201);

    const dump = await dumpDatabase();
    expect(dump).toContain(created.profile.id);
    expect(dump).not.toContain(body.secretAccessKey);
    // Nor base64 of it, in case something encoded instead of encrypting.
    expect(dump).not.toContain(btoa(body.secretAccessKey).slice(0, 24));

    const [row] = await query<{
      id: string;
      secretCiphertext: string;
      secretIv: string;
      secretKeyId: string;
      config: unknown;
    }>(
      sql`select id, secret_ciphertext as "secretCiphertext", secret_iv as "secretIv", secret_key_id as "secretKeyId", config
          from storage_profiles where id = ${created.profile.id}`,
    );
    const keyring = parseKeyring(env.CREDENTIALS_KEYS);
    expect(row!.secretKeyId).toBe(keyring.current);
    expect(JSON.stringify(row!.config)).not.toContain(body.secretAccessKey);
    expect(await decryptS3Secret(keyring, sealedOf(row!), row!.id)).toEqual({
      accessKeyId,
      secretAccessKey: body.secretAccessKey,
    });
    // Bound to its row: the same columns under another profile id do not open.
    await expect(decryptS3Secret(keyring, sealedOf(row!), crypto.randomUUID())).rejects.toThrow(
      /does not decrypt/,
    );
  });

  it("shows the provider's InvalidAccessKeyId for an unknown access key, and saves nothing", async () => {
    const { cookie } = await signIn();
    const body = s3Body({
      accessKeyId: "AKIANOTAREALKEY12345",
      secretAccessKey: `secret-${crypto.randomUUID()}`,
    });
    const { response, text, body: failed } = await create(cookie, body);
    expect(response.status, text).toBe(422);
    expect(failed.error.code).toBe("storage_check_failed");
    expect(failed.error.message).toMatch(/does not know this access key id/);
    expect(failed.error.message).toContain("InvalidAccessKeyId");
    expect(failed.error.details).toMatchObject({
      step: "list",
      endpoint: env.S3_ENDPOINT,
      provider: { code: "InvalidAccessKeyId", status: 403, message: expect.any(String) },
    });
    expect(text).not.toContain(body.secretAccessKey);
    expect(logText()).not.toContain(body.secretAccessKey);
    expect(await list(cookie)).toEqual([]);
  });

  it("shows the provider's SignatureDoesNotMatch for a wrong secret, and saves nothing", async () => {
    const { cookie } = await signIn();
    const body = s3Body({ secretAccessKey: `wrong-${crypto.randomUUID()}` });
    const { response, text, body: failed } = await create(cookie, body);
    expect(response.status, text).toBe(422);
    expect(failed.error.code).toBe("storage_check_failed");
    expect(failed.error.message).toContain("SignatureDoesNotMatch");
    expect(failed.error.details).toMatchObject({ provider: { code: "SignatureDoesNotMatch", status: 403 } });
    expect(text).not.toContain(body.secretAccessKey);
    expect(await list(cookie)).toEqual([]);
  });

  it("shows the provider's NoSuchBucket for a missing bucket", async () => {
    const { cookie } = await signIn();
    const { response, text, body: failed } = await create(cookie, s3Body({ bucket: "no-such-bucket-here" }));
    expect(response.status, text).toBe(422);
    expect(failed.error.message).toContain('The bucket "no-such-bucket-here" does not exist');
    expect(failed.error.message).toContain("NoSuchBucket");
    expect(failed.error.details).toMatchObject({ provider: { code: "NoSuchBucket", status: 404 } });
    expect(await list(cookie)).toEqual([]);
  });

  it("names the endpoint when it cannot be reached, without the runtime's own words", async () => {
    const { cookie } = await signIn();
    // 127.0.0.1:1 is in the tests' EGRESS_ALLOW, and nothing listens there.
    const { response, text, body: failed } = await create(cookie, s3Body({ endpoint: "http://127.0.0.1:1" }));
    expect(response.status, text).toBe(422);
    expect(failed.error.message).toBe(
      "Could not connect to http://127.0.0.1:1. Check the endpoint address, and that it is reachable from the internet.",
    );
    expect(failed.error.details).toMatchObject({ provider: { code: "NetworkError", message: null } });
  });

  it("refuses a non-public endpoint with a 400 naming the host and why, without contacting it", async () => {
    const { cookie } = await signIn();
    const s3 = new URL(env.S3_ENDPOINT);
    for (const [endpoint, reason] of [
      ["https://169.254.169.254", "endpoint: must be a public host: 169.254.169.254 is a link-local address"],
      ["http://localhost.:4569", "endpoint: must be a public host: localhost. is a loopback name"],
      ["https://[::7f00:1]", "endpoint: must be a public host: [::7f00:1] is an IPv4-compatible form"],
      [
        "https://[64:ff9b::a9fe:a9fe]",
        "endpoint: must be a public host: [64:ff9b::a9fe:a9fe] is a NAT64 form",
      ],
      ["https://metadata.google.internal", "endpoint: must be a public host: metadata.google.internal is"],
      // The allowed S3 server's host on another port is not the exception.
      [`http://${s3.hostname}:${Number(s3.port) + 1}`, `endpoint: must be a public host: ${s3.hostname} is`],
    ] as const) {
      const { response, text, body: failed } = await create(cookie, s3Body({ endpoint }));
      expect(response.status, text).toBe(400);
      expect(failed.error.message, endpoint).toContain(reason);
      const host = new URL(endpoint).host;
      expect(outbound.filter((url) => new URL(url).host === host)).toEqual([]);
    }
    expect(await list(cookie)).toEqual([]);
  });

  it.each([
    [{ bucket: undefined }, "bucket"],
    [{ bucket: "Bad_Bucket!" }, "bucket"],
    [{ name: "  " }, "name"],
    [{ kind: "gdrive" }, "kind"],
    [{ kind: undefined }, "kind"],
    [{ accessKeyId: "" }, "accessKeyId"],
    [{ secretAccessKey: "" }, "secretAccessKey"],
    [{ forcePathStyle: "yes" }, "forcePathStyle"],
    [{ region: "US East" }, "region"],
    [{ prefix: "a/../b" }, "prefix"],
    [{ endpoint: "ftp://s3.example.com" }, "endpoint"],
    [{ endpoint: "not a url" }, "endpoint"],
    [{ endpoint: "http://s3.example.com" }, "endpoint"],
    [{ endpoint: "https://s3.example.com/some/path" }, "endpoint"],
    [{ endpoint: "https://user:pw@s3.example.com" }, "endpoint"],
    [{ forcePathStyle: false }, "forcePathStyle"], // an IP endpoint cannot take the bucket in its host name
  ])("rejects %j with a 400 naming %s", async (overrides, field) => {
    const { cookie } = await signIn();
    const body = s3Body(overrides);
    const { response, text, body: failed } = await create(cookie, body);
    expect(response.status, text).toBe(400);
    expect(failed.error.code).toBe("invalid_request");
    expect(failed.error.message.startsWith(`${field}:`), failed.error.message).toBe(true);
    if (body.secretAccessKey) expect(text).not.toContain(body.secretAccessKey);
  });

  it("points a Google Drive profile to the Drive connect flow", async () => {
    const { cookie } = await signIn();
    const { response, text, body: failed } = await create(cookie, s3Body({ kind: "gdrive" }));
    expect(response.status, text).toBe(400);
    expect(failed.error.message).toContain("GET /api/drive/connect");
    expect(await list(cookie)).toEqual([]);
  });

  it("rejects a body that is not JSON with a 400", async () => {
    const { cookie } = await signIn();
    const response = await call("/api/storage", {
      method: "POST",
      headers: fromWebApp(cookie, { "content-type": "application/json" }),
      body: "{not json",
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as ErrorBody).error).toEqual({
      code: "invalid_request",
      message: "The body must be a JSON object.",
    });
  });

  it("refuses a name the user already has with a 409, but another user may use it", async () => {
    const alice = await signIn();
    const bob = await signIn();
    const body = s3Body({ name: "Backups" });
    expect((await create(alice.cookie, body)).response.status).toBe(201);
    const again = await create(alice.cookie, s3Body({ name: " Backups " }));
    expect(again.response.status, again.text).toBe(409);
    expect(again.body.error).toMatchObject({ code: "storage_profile_exists" });
    expect((await create(bob.cookie, s3Body({ name: "Backups" }))).response.status).toBe(201);
  });

  it("needs a signed-in user, and the browser session rather than an API token", async () => {
    const anonymous = await call("/api/storage", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(s3Body()),
    });
    expect(anonymous.status).toBe(401);
    expect((await call("/api/storage")).status).toBe(401);

    const { cookie } = await signIn();
    const minted = await call("/api/tokens", json(cookie, "POST", { name: "script" }));
    expect(minted.status).toBe(201);
    const { token } = (await minted.json()) as { token: string };
    const viaToken = await call("/api/storage", {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(s3Body()),
    });
    expect(viaToken.status).toBe(403);
    const listed = await call("/api/storage", { headers: { authorization: `Bearer ${token}` } });
    expect(listed.status).toBe(200);
  });
});

describe("checking an endpoint that is not S3", () => {
  const probe = (bucket: string) =>
    s3Body({ endpoint: env.PROBE_ORIGIN, bucket, accessKeyId: "AKIAPROBE", secretAccessKey: "probe" });

  it.each([
    ["html-page", 403, "answered HTTP 403 with an HTML page (text/html), not an S3 error document;"],
    ["json-doc", 404, "answered HTTP 404 with a JSON document (application/json), not an S3 error document;"],
    ["plain-text", 400, "answered HTTP 400 with a body in another format (text/plain), not an S3 error"],
    ["untyped-text", 401, "answered HTTP 401 with a body in another format, not an S3 error document;"],
    ["empty-body", 403, "answered HTTP 403 with an empty body, not an S3 error document;"],
    ["html-with-code", 404, "answered HTTP 404 with an HTML page (text/html), not an S3 error document;"],
    ["xml-other", 403, "answered HTTP 403 with an XML document (application/xml), not an S3 error document;"],
    ["error-bad-code", 403, "answered HTTP 403 with an XML document (application/xml), not an S3 error"],
    ["server-error", 502, "(HTTP 502). It answered HTTP 502 with an HTML page (text/html)."],
    [
      "redirect",
      302,
      "redirected the request (HTTP 302); check the endpoint and region. It answered HTTP 302",
    ],
    ["write-html", 403, "answered HTTP 403 with an HTML page (text/html)"],
  ])("says what kind of answer %s was, never what it said", async (bucket, status, said) => {
    const { cookie } = await signIn();
    const { response, text, body: failed } = await create(cookie, probe(bucket));
    expect(response.status, text).toBe(422);
    expect(failed.error.message).toContain(said);
    expect(failed.error.details).toMatchObject({
      step: bucket === "write-html" ? "write" : "list",
      provider: { code: `HTTP${status}`, status, message: null },
    });
    expect(text).not.toContain(env.PROBE_SECRET);
    expect(logText()).not.toContain(env.PROBE_SECRET);
    expect(await list(cookie)).toEqual([]);
  });

  it("keeps a failed delete's answer out of the warning too", async () => {
    const { cookie } = await signIn();
    const { response, text, body: created } = await create(cookie, probe("delete-html"));
    expect(response.status, text).toBe(201);
    // The delete's warning, then the CORS one: this endpoint answers no preflight.
    expect(created.warnings).toHaveLength(2);
    expect(created.warnings[0]).toContain("could not be deleted");
    expect(created.warnings[0]).toContain("It answered HTTP 500 with an HTML page (text/html).");
    expect(created.warnings[1]).toContain("Transfers in the browser need the bucket to allow");
    expect(created.warnings[1]).toContain('"ExposeHeaders":["ETag"]');
    const { browserTransfer } = created as unknown as { browserTransfer: { ready: boolean; rule: unknown } };
    expect(browserTransfer).toMatchObject({
      ready: false,
      rule: { AllowedOrigins: [webOrigin], AllowedMethods: ["PUT", "GET"], ExposeHeaders: ["ETag"] },
    });
    expect(text).not.toContain(env.PROBE_SECRET);
  });

  it("takes only a plausible region from a redirect", async () => {
    const { cookie } = await signIn();
    const { response, text, body: failed } = await create(cookie, probe("bad-region"));
    expect(response.status, text).toBe(422);
    expect(failed.error.message).toContain("must be reached through another endpoint or region");
    expect(failed.error.details).toMatchObject({ provider: { code: "PermanentRedirect", status: 301 } });
    expect(text).not.toContain(env.PROBE_SECRET);
  });

  it("still shows an S3 error document's code and message", async () => {
    const { cookie } = await signIn();
    const { response, text, body: failed } = await create(cookie, probe("s3-error"));
    expect(response.status, text).toBe(422);
    expect(failed.error.message).toBe(
      'The access key may not list the bucket in the bucket "s3-error". TorreClou needs to list the bucket and write objects under the prefix. The provider said: AccessDenied: Access Denied',
    );
    expect(failed.error.details).toMatchObject({
      provider: { code: "AccessDenied", status: 403, message: "Access Denied" },
    });
  });
});

describe("default profile", () => {
  it("keeps exactly one default: the first profile, then whichever is made default", async () => {
    const { cookie } = await signIn();
    const first = (await create(cookie, s3Body({ name: "first" }))).body.profile;
    const second = (await create(cookie, s3Body({ name: "second" }))).body.profile;
    expect(first.isDefault).toBe(true);
    expect(second.isDefault).toBe(false);

    const third = (await create(cookie, s3Body({ name: "third", makeDefault: true }))).body.profile;
    expect(third.isDefault).toBe(true);
    let profiles = await list(cookie);
    expect(profiles.filter((p) => p.isDefault).map((p) => p.name)).toEqual(["third"]);
    expect(profiles[0]!.name).toBe("third"); // the default comes first

    const moved = await call(`/api/storage/${second.id}/default`, json(cookie, "POST"));
    expect(moved.status).toBe(200);
    expect(((await moved.json()) as { profile: Profile }).profile).toMatchObject({
      id: second.id,
      isDefault: true,
    });
    profiles = await list(cookie);
    expect(profiles.filter((p) => p.isDefault).map((p) => p.name)).toEqual(["second"]);

    // Again: a no-op, still one default.
    expect((await call(`/api/storage/${second.id}/default`, json(cookie, "POST"))).status).toBe(200);
    expect((await list(cookie)).filter((p) => p.isDefault)).toHaveLength(1);
  });

  it("survives concurrent moves with exactly one default", async () => {
    const { cookie } = await signIn();
    const ids: string[] = [];
    for (const name of ["a", "b", "c", "d"])
      ids.push((await create(cookie, s3Body({ name }))).body.profile.id);
    const responses = await Promise.all(
      [...ids, ...ids].map((id) => call(`/api/storage/${id}/default`, json(cookie, "POST"))),
    );
    expect(responses.map((r) => r.status)).toEqual(Array(8).fill(200));
    expect((await list(cookie)).filter((p) => p.isDefault)).toHaveLength(1);
  });
});

describe("DELETE /api/storage/:id", () => {
  it("deletes the profile, keeps its jobs without a destination, and passes the default on", async () => {
    const { cookie, userId } = await signIn();
    const first = (await create(cookie, s3Body({ name: "first" }))).body.profile;
    const second = (await create(cookie, s3Body({ name: "second" }))).body.profile;

    const infoHash = Array.from(crypto.getRandomValues(new Uint8Array(20)), (b) =>
      b.toString(16).padStart(2, "0"),
    ).join("");
    const [job] = await query<{ id: string }>(sql`
      with t as (insert into torrents (info_hash) values (${infoHash}) returning id)
      insert into jobs (user_id, torrent_id, storage_profile_id, source_kind, source_ciphertext, source_iv, source_key_id)
      select ${userId}, t.id, ${first.id}, 'magnet', 'placeholder', 'placeholder', 'test' from t returning id`);

    const deleted = await call(`/api/storage/${first.id}`, { method: "DELETE", headers: fromWebApp(cookie) });
    expect(deleted.status).toBe(204);
    expect(await deleted.text()).toBe("");
    expect((await call(`/api/storage/${first.id}`, { headers: { cookie } })).status).toBe(404);

    const [kept] = await query<{ storage_profile_id: string | null }>(
      sql`select storage_profile_id from jobs where id = ${job!.id}`,
    );
    expect(kept).toEqual({ storage_profile_id: null });
    const remaining = await list(cookie);
    expect(remaining).toEqual([expect.objectContaining({ id: second.id, isDefault: true })]);
    expect(await dumpDatabase()).not.toContain(first.id);

    expect(
      (await call(`/api/storage/${first.id}`, { method: "DELETE", headers: fromWebApp(cookie) })).status,
    ).toBe(404);
  });

  it("refuses a Google Drive profile with a 409 pointing to the disconnect route, and keeps it", async () => {
    const { cookie, userId } = await signIn();
    const [drive] = await query<{ id: string }>(sql`
      insert into storage_profiles (user_id, kind, name, is_default, config, secret_ciphertext, secret_iv, secret_key_id)
      values (${userId}, 'gdrive', 'My Drive', true, '{"accountEmail":"ada@example.com"}'::jsonb, 'x', 'x', 'x')
      returning id`);
    const response = await call(`/api/storage/${drive!.id}`, {
      method: "DELETE",
      headers: fromWebApp(cookie),
    });
    expect(response.status).toBe(409);
    const { error } = (await response.json()) as ErrorBody;
    expect(error.code).toBe("use_drive_disconnect");
    expect(error.message).toContain(`POST /api/drive/${drive!.id}/disconnect`);
    expect(await list(cookie)).toEqual([expect.objectContaining({ id: drive!.id, kind: "gdrive" })]);
  });
});

describe("another user's profile", () => {
  it("is a 404 for every route, and left untouched", async () => {
    const owner = await signIn();
    const other = await signIn();
    const mine = (await create(owner.cookie, s3Body())).body.profile;
    const second = (await create(owner.cookie, s3Body())).body.profile;

    expect(await list(other.cookie)).toEqual([]);
    for (const [path, init] of [
      [`/api/storage/${mine.id}`, { headers: { cookie: other.cookie } }],
      [`/api/storage/${second.id}/default`, json(other.cookie, "POST")],
      [`/api/storage/${mine.id}`, { method: "DELETE", headers: fromWebApp(other.cookie) }],
    ] as const) {
      const response = await call(path, init);
      expect(response.status, path).toBe(404);
      expect(((await response.json()) as ErrorBody).error.code).toBe("storage_profile_not_found");
    }
    const profiles = await list(owner.cookie);
    expect(profiles.map((p) => [p.id, p.isDefault])).toEqual([
      [mine.id, true],
      [second.id, false],
    ]);
  });

  it("answers a malformed id with a 400", async () => {
    const { cookie } = await signIn();
    const response = await call("/api/storage/not-a-uuid", { headers: { cookie } });
    expect(response.status).toBe(400);
  });
});

describe("OpenAPI document", () => {
  it("describes the storage routes, with no secret fields in the profile schema", async () => {
    const response = await call("/api/openapi.json");
    expect(response.status).toBe(200);
    const doc = (await response.json()) as {
      paths: Record<string, Record<string, unknown>>;
      components: { schemas: Record<string, { properties?: Record<string, unknown> }> };
    };
    expect(Object.keys(doc.paths["/api/storage"] ?? {}).sort()).toEqual(["get", "post"]);
    expect(Object.keys(doc.paths["/api/storage/{id}"] ?? {}).sort()).toEqual(["delete", "get"]);
    expect(Object.keys(doc.paths["/api/storage/{id}/default"] ?? {})).toEqual(["post"]);
    const settings = doc.components.schemas.S3ProfileSettings?.properties ?? {};
    expect(Object.keys(settings)).toContain("accessKeyId");
    expect(Object.keys(settings)).not.toContain("secretAccessKey");
  });
});
