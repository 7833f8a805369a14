import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { freePort, quietLog } from "../process.ts";
import { quote } from "./query.ts";
import {
  CHUNK_GRANULARITY,
  type DriveDouble,
  FOLDER_MIME,
  type MintedGrant,
  startDriveDouble,
} from "./server.ts";

const KiB = 1024;
const md5 = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("hex");

interface GoogleErrorBody {
  error: { code: number; message: string; status?: string; errors: { domain: string; reason: string }[] };
}

describe("Google Drive double", () => {
  let dataDir: string;
  let port: number;
  let drive: DriveDouble;
  let grant: MintedGrant;
  let token: string;
  let api: string;

  const start = async (extra: { now?: () => number } = {}) => {
    drive = await startDriveDouble({ port, dataDir, log: quietLog, ...extra });
    api = drive.url;
  };
  const restart = async (extra: { now?: () => number } = {}) => {
    await drive.stop();
    await start(extra);
    // Let this process's HTTP client notice its old keep-alive sockets were closed.
    await new Promise((r) => setTimeout(r, 50));
  };

  async function accessToken(refreshToken: string): Promise<Response> {
    return fetch(`${api}/token`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: refreshToken,
        client_id: "local-client",
        client_secret: "local-secret",
      }),
    });
  }

  const auth = () => ({ Authorization: `Bearer ${token}` });

  async function json<T>(response: Response): Promise<T> {
    return (await response.json()) as T;
  }

  async function createFolder(name: string, parent?: string): Promise<string> {
    const response = await fetch(`${api}/drive/v3/files?fields=id`, {
      method: "POST",
      headers: { ...auth(), "Content-Type": "application/json" },
      body: JSON.stringify({ name, mimeType: FOLDER_MIME, ...(parent ? { parents: [parent] } : {}) }),
    });
    expect(response.status).toBe(200);
    return (await json<{ id: string }>(response)).id;
  }

  async function startSession(name: string, size: number | null, parent?: string, fields?: string) {
    const response = await fetch(
      `${api}/upload/drive/v3/files?uploadType=resumable${fields ? `&fields=${encodeURIComponent(fields)}` : ""}`,
      {
        method: "POST",
        headers: {
          ...auth(),
          "Content-Type": "application/json; charset=UTF-8",
          "X-Upload-Content-Type": "application/octet-stream",
          ...(size === null ? {} : { "X-Upload-Content-Length": String(size) }),
        },
        body: JSON.stringify({ name, ...(parent ? { parents: [parent] } : {}) }),
      },
    );
    expect(response.status).toBe(200);
    const location = response.headers.get("location");
    expect(location).toMatch(/\/upload\/drive\/v3\/files\?uploadType=resumable&upload_id=/);
    return location!;
  }

  const put = (session: string, body: Uint8Array, range: string) =>
    fetch(session, {
      method: "PUT",
      headers: { "Content-Range": range, "Content-Length": String(body.length) },
      body,
      redirect: "manual",
    });

  const query = (session: string, total: number | "*") =>
    fetch(session, {
      method: "PUT",
      headers: { "Content-Range": `bytes */${total}`, "Content-Length": "0" },
      redirect: "manual",
    });

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "torreclou-drive-"));
    port = await freePort();
    await start();
    grant = drive.mintRefreshToken("ada@example.com");
    const response = await accessToken(grant.refreshToken);
    token = (await json<{ access_token: string }>(response)).access_token;
  });

  afterAll(async () => {
    await drive?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  beforeEach(() => drive.faults.clear());

  describe("OAuth", () => {
    it("exchanges a refresh token for an access token", async () => {
      const response = await accessToken(grant.refreshToken);
      expect(response.status).toBe(200);
      const body = await json<Record<string, unknown>>(response);
      expect(body).toMatchObject({ token_type: "Bearer", expires_in: 3599 });
      expect(String(body.access_token)).toMatch(/^ya29\./);
    });

    it("answers invalid_grant for an unknown refresh token", async () => {
      const response = await accessToken("1//nope");
      expect(response.status).toBe(400);
      expect(await response.json()).toEqual({
        error: "invalid_grant",
        error_description: "Token has been expired or revoked.",
      });
    });

    it("rejects a Drive call without a valid access token with Google's 401 JSON", async () => {
      for (const headers of [{}, { Authorization: "Bearer ya29.bogus" }]) {
        const response = await fetch(`${api}/drive/v3/files`, { headers });
        expect(response.status).toBe(401);
        const body = await json<GoogleErrorBody>(response);
        expect(body.error.code).toBe(401);
        expect(body.error.status).toBe("UNAUTHENTICATED");
        expect(body.error.message).toMatch(/^Request had invalid authentication credentials/);
        expect(body.error.errors[0]).toMatchObject({ domain: "global", reason: "authError" });
      }
    });

    it("expired access tokens stop working until refreshed", async () => {
      const other = drive.mintRefreshToken("expiry@example.com");
      const access = (await json<{ access_token: string }>(await accessToken(other.refreshToken)))
        .access_token;
      const list = (t: string) =>
        fetch(`${api}/drive/v3/files`, { headers: { Authorization: `Bearer ${t}` } });
      expect((await list(access)).status).toBe(200);
      drive.faults.expireAccessTokens();
      expect((await list(access)).status).toBe(401);
      const fresh = (await json<{ access_token: string }>(await accessToken(other.refreshToken)))
        .access_token;
      expect((await list(fresh)).status).toBe(200);
      // The shared token of the other tests was expired too.
      token = (await json<{ access_token: string }>(await accessToken(grant.refreshToken))).access_token;
    });

    it("revoking a refresh token kills it and its access tokens", async () => {
      const other = drive.mintRefreshToken("revoke@example.com");
      const access = (await json<{ access_token: string }>(await accessToken(other.refreshToken)))
        .access_token;
      const revoke = await fetch(`${api}/revoke?token=${encodeURIComponent(other.refreshToken)}`, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
      });
      expect(revoke.status).toBe(200);
      expect(
        (await fetch(`${api}/drive/v3/files`, { headers: { Authorization: `Bearer ${access}` } })).status,
      ).toBe(401);
      const again = await accessToken(other.refreshToken);
      expect(again.status).toBe(400);
      expect((await json<{ error: string }>(again)).error).toBe("invalid_grant");
      const twice = await fetch(`${api}/revoke?token=${encodeURIComponent(other.refreshToken)}`, {
        method: "POST",
      });
      expect(twice.status).toBe(400);
      expect((await json<{ error: string }>(twice)).error).toBe("invalid_token");
    });

    it("revoking an access token revokes its grant", async () => {
      const other = drive.mintRefreshToken("revoke2@example.com");
      const access = (await json<{ access_token: string }>(await accessToken(other.refreshToken)))
        .access_token;
      expect((await fetch(`${api}/revoke?token=${access}`, { method: "POST" })).status).toBe(200);
      expect((await accessToken(other.refreshToken)).status).toBe(400);
    });
  });

  describe("files", () => {
    it("creates folders, gets metadata with fields, lists with q, deletes", async () => {
      const top = await createFolder("top");
      const sub = await createFolder("it's \\ sub", top);
      const get = await fetch(`${api}/drive/v3/files/${sub}?fields=id,name,parents,mimeType`, {
        headers: auth(),
      });
      expect(await get.json()).toEqual({
        id: sub,
        name: "it's \\ sub",
        parents: [top],
        mimeType: FOLDER_MIME,
      });

      const defaults = await fetch(`${api}/drive/v3/files/${sub}`, { headers: auth() });
      expect(Object.keys(await json<object>(defaults)).sort()).toEqual(["id", "kind", "mimeType", "name"]);

      const q = `name = ${quote("it's \\ sub")} and ${quote(top)} in parents and mimeType = '${FOLDER_MIME}' and trashed = false`;
      const list = await fetch(
        `${api}/drive/v3/files?q=${encodeURIComponent(q)}&fields=${encodeURIComponent("files(id,name)")}`,
        { headers: auth() },
      );
      expect(list.status).toBe(200);
      expect(await list.json()).toEqual({ files: [{ id: sub, name: "it's \\ sub" }] });

      // trashed = false hides trashed files.
      const patch = await fetch(`${api}/drive/v3/files/${sub}`, {
        method: "PATCH",
        headers: { ...auth(), "Content-Type": "application/json" },
        body: JSON.stringify({ trashed: true }),
      });
      expect(patch.status).toBe(200);
      const after = await fetch(`${api}/drive/v3/files?q=${encodeURIComponent(q)}`, { headers: auth() });
      expect((await json<{ files: unknown[] }>(after)).files).toEqual([]);
      const withTrash = `${quote(top)} in parents and (trashed = true or name = 'x') and not mimeType != '${FOLDER_MIME}'`;
      const found = await fetch(`${api}/drive/v3/files?q=${encodeURIComponent(withTrash)}&fields=files(id)`, {
        headers: auth(),
      });
      expect(await found.json()).toEqual({ files: [{ id: sub }] });

      // Deleting a folder deletes what is in it.
      const del = await fetch(`${api}/drive/v3/files/${top}`, { method: "DELETE", headers: auth() });
      expect(del.status).toBe(204);
      for (const id of [top, sub]) {
        const gone = await fetch(`${api}/drive/v3/files/${id}`, { headers: auth() });
        expect(gone.status).toBe(404);
        const body = await json<GoogleErrorBody>(gone);
        expect(body.error.errors[0]?.reason).toBe("notFound");
        expect(body.error.message).toBe(`File not found: ${id}.`);
      }
    });

    it("supports 'root' as a parent alias", async () => {
      const id = await createFolder("at-root");
      const list = await fetch(
        `${api}/drive/v3/files?q=${encodeURIComponent(`'root' in parents and name = 'at-root'`)}&fields=files(id,parents)`,
        { headers: auth() },
      );
      expect(await list.json()).toEqual({ files: [{ id, parents: [grant.rootFolderId] }] });
    });

    it("pages with pageSize, pageToken and nextPageToken", async () => {
      const parent = await createFolder("paging");
      const ids: string[] = [];
      for (let i = 0; i < 7; i++) ids.push(await createFolder(`f${i}`, parent));
      const q = encodeURIComponent(`'${parent}' in parents`);
      const seen: string[] = [];
      let pageToken: string | undefined;
      let pages = 0;
      do {
        const response = await fetch(
          `${api}/drive/v3/files?q=${q}&pageSize=3&fields=nextPageToken,files(id)${pageToken ? `&pageToken=${pageToken}` : ""}`,
          { headers: auth() },
        );
        const body = await json<{ files: { id: string }[]; nextPageToken?: string }>(response);
        seen.push(...body.files.map((f) => f.id));
        pageToken = body.nextPageToken;
        pages++;
      } while (pageToken);
      expect(pages).toBe(3);
      expect(seen).toEqual(ids);
    });

    it("rejects a q it does not understand and bad fields with 400", async () => {
      const bad = await fetch(`${api}/drive/v3/files?q=${encodeURIComponent("name = ")}`, {
        headers: auth(),
      });
      expect(bad.status).toBe(400);
      expect((await json<GoogleErrorBody>(bad)).error.errors[0]?.reason).toBe("invalid");
      const fields = await fetch(`${api}/drive/v3/files?fields=files(nope)`, { headers: auth() });
      expect(fields.status).toBe(400);
    });
  });

  describe("resumable upload", () => {
    const total = 3 * CHUNK_GRANULARITY + 1000;
    const data = randomBytes(total);

    it("uploads in 256 KiB multiples with 308 + Range, then 200 with the file", async () => {
      const folder = await createFolder("uploads");
      const session = await startSession("blob.bin", total, folder, "id,name,size,md5Checksum,parents");
      // Nothing committed: status query answers 308 without a Range header.
      const first = await query(session, total);
      expect(first.status).toBe(308);
      expect(first.headers.get("range")).toBeNull();

      const a = await put(
        session,
        data.subarray(0, 2 * CHUNK_GRANULARITY),
        `bytes 0-${2 * CHUNK_GRANULARITY - 1}/${total}`,
      );
      expect(a.status).toBe(308);
      expect(a.headers.get("range")).toBe(`bytes=0-${2 * CHUNK_GRANULARITY - 1}`);

      const status = await query(session, "*");
      expect(status.status).toBe(308);
      expect(status.headers.get("range")).toBe(`bytes=0-${2 * CHUNK_GRANULARITY - 1}`);

      const b = await put(
        session,
        data.subarray(2 * CHUNK_GRANULARITY),
        `bytes ${2 * CHUNK_GRANULARITY}-${total - 1}/${total}`,
      );
      expect(b.status).toBe(200);
      const file = await json<Record<string, unknown>>(b);
      expect(file).toEqual({
        id: expect.any(String),
        name: "blob.bin",
        size: String(total),
        md5Checksum: md5(data),
        parents: [folder],
      });
      // Complete: a status query returns the file again.
      const done = await query(session, total);
      expect(done.status).toBe(200);
      expect((await json<{ id: string }>(done)).id).toBe(file.id);
      // Content, whole and ranged.
      const whole = await fetch(`${api}/drive/v3/files/${String(file.id)}?alt=media`, { headers: auth() });
      expect(md5(new Uint8Array(await whole.arrayBuffer()))).toBe(md5(data));
      const ranged = await fetch(`${api}/drive/v3/files/${String(file.id)}?alt=media`, {
        headers: { ...auth(), Range: "bytes=10-19" },
      });
      expect(ranged.status).toBe(206);
      expect(ranged.headers.get("content-range")).toBe(`bytes 10-19/${total}`);
      expect(Buffer.from(await ranged.arrayBuffer()).equals(data.subarray(10, 20))).toBe(true);
      expect(drive.stats.session(session)).toMatchObject({
        bytesReceived: total,
        bytesResent: 0,
        bytesCommitted: total,
      });
    });

    it("stores binary bytes exactly, including an empty file", async () => {
      const bytes = Buffer.from([0, 255, 13, 10, 0x80, 0xc3, 0x28, 0]);
      const session = await startSession("bin", bytes.length);
      const done = await put(session, bytes, `bytes 0-${bytes.length - 1}/${bytes.length}`);
      expect(done.status).toBe(200);
      const { id } = await json<{ id: string }>(done);
      expect((await drive.contentOf(id)).equals(bytes)).toBe(true);

      const empty = await startSession("empty", 0, undefined, "id,size,md5Checksum");
      const finished = await query(empty, 0);
      expect(finished.status).toBe(200);
      expect(await finished.json()).toMatchObject({ size: "0", md5Checksum: md5(new Uint8Array()) });
    });

    it("rejects a non-final chunk that is not a multiple of 256 KiB", async () => {
      const session = await startSession("odd", total);
      const response = await put(session, data.subarray(0, 100 * KiB), `bytes 0-${100 * KiB - 1}/${total}`);
      expect(response.status).toBe(400);
      expect((await json<GoogleErrorBody>(response)).error.message).toMatch(/262144/);
      expect((await query(session, total)).headers.get("range")).toBeNull();
    });

    it("ignores bytes it already has and refuses a chunk past the committed offset", async () => {
      const session = await startSession("overlap", total);
      await put(session, data.subarray(0, CHUNK_GRANULARITY), `bytes 0-${CHUNK_GRANULARITY - 1}/${total}`);
      // A gap: the client must resume from the committed offset.
      const gap = await put(
        session,
        data.subarray(2 * CHUNK_GRANULARITY, 3 * CHUNK_GRANULARITY),
        `bytes ${2 * CHUNK_GRANULARITY}-${3 * CHUNK_GRANULARITY - 1}/${total}`,
      );
      expect(gap.status).toBe(400);
      // An overlap: the stored part is skipped, the rest appended.
      const overlap = await put(
        session,
        data.subarray(0, 2 * CHUNK_GRANULARITY),
        `bytes 0-${2 * CHUNK_GRANULARITY - 1}/${total}`,
      );
      expect(overlap.status).toBe(308);
      expect(overlap.headers.get("range")).toBe(`bytes=0-${2 * CHUNK_GRANULARITY - 1}`);
      const rest = await put(
        session,
        data.subarray(2 * CHUNK_GRANULARITY),
        `bytes ${2 * CHUNK_GRANULARITY}-${total - 1}/${total}`,
      );
      expect(rest.status).toBe(200);
      const { id } = await json<{ id: string }>(rest);
      expect(md5(await drive.contentOf(id))).toBe(md5(data));
      expect(drive.stats.session(session).bytesResent).toBe(CHUNK_GRANULARITY);
    });

    it("rejects a total that disagrees with X-Upload-Content-Length", async () => {
      const session = await startSession("mismatch", total);
      const response = await put(
        session,
        data.subarray(0, CHUNK_GRANULARITY),
        `bytes 0-${CHUNK_GRANULARITY - 1}/${total + 1}`,
      );
      expect(response.status).toBe(400);
    });

    it("answers 404 for an unknown session", async () => {
      const response = await query(`${api}/upload/drive/v3/files?uploadType=resumable&upload_id=nope`, 10);
      expect(response.status).toBe(404);
    });

    it("keeps sessions and files across a restart", async () => {
      const session = await startSession("restart.bin", total);
      await put(session, data.subarray(0, CHUNK_GRANULARITY), `bytes 0-${CHUNK_GRANULARITY - 1}/${total}`);
      const folder = await createFolder("survives");
      await restart();
      const status = await query(session, total);
      expect(status.status).toBe(308);
      expect(status.headers.get("range")).toBe(`bytes=0-${CHUNK_GRANULARITY - 1}`);
      const rest = await put(
        session,
        data.subarray(CHUNK_GRANULARITY),
        `bytes ${CHUNK_GRANULARITY}-${total - 1}/${total}`,
      );
      expect(rest.status).toBe(200);
      const { id } = await json<{ id: string }>(rest);
      expect(md5(await drive.contentOf(id))).toBe(md5(data));
      // Tokens and folders survived too.
      expect((await fetch(`${api}/drive/v3/files/${folder}`, { headers: auth() })).status).toBe(200);
    });

    it("expires sessions (404 afterwards)", async () => {
      const session = await startSession("expires", total);
      drive.faults.expireSession(session);
      expect((await query(session, total)).status).toBe(404);
      const other = await startSession("expires-by-fault", total);
      drive.faults.inject({ route: "upload.chunk", kind: "expire-session" });
      expect(
        (await put(other, data.subarray(0, CHUNK_GRANULARITY), `bytes 0-${CHUNK_GRANULARITY - 1}/${total}`))
          .status,
      ).toBe(404);
      expect((await query(other, total)).status).toBe(404);
    });

    it("honours a session's lifetime", async () => {
      // The double's clock moves on by a week instead of the test waiting for it.
      let clock = Date.now();
      await restart({ now: () => clock });
      try {
        const session = await startSession("short-lived", total);
        clock += 7 * 24 * 3600 * 1000 - 1;
        expect((await query(session, total)).status).toBe(308);
        clock += 1;
        expect((await query(session, total)).status).toBe(404);
      } finally {
        await restart();
      }
    });

    it("cancels a session with DELETE (499)", async () => {
      const session = await startSession("cancel", total);
      expect((await fetch(session, { method: "DELETE" })).status).toBe(499);
      expect((await query(session, total)).status).toBe(404);
    });
  });

  describe("faults", () => {
    const total = 2 * CHUNK_GRANULARITY + 10;
    const data = randomBytes(total);

    it("answers 5xx with Google's error JSON, N times, then recovers", async () => {
      drive.faults.inject({ route: "files.list", kind: "status", status: 503, times: 2 });
      for (let i = 0; i < 2; i++) {
        const response = await fetch(`${api}/drive/v3/files`, { headers: auth() });
        expect(response.status).toBe(503);
        const body = await json<GoogleErrorBody>(response);
        expect(body.error.code).toBe(503);
        expect(body.error.errors[0]?.reason).toBe("backendError");
      }
      expect((await fetch(`${api}/drive/v3/files`, { headers: auth() })).status).toBe(200);
      drive.faults.inject({ method: "GET", path: "/drive/v3/files", kind: "status", status: 500, skip: 1 });
      expect((await fetch(`${api}/drive/v3/files`, { headers: auth() })).status).toBe(200);
      expect((await fetch(`${api}/drive/v3/files`, { headers: auth() })).status).toBe(500);
      expect(drive.faults.fired().length).toBe(3);
    });

    it("answers 403 rateLimitExceeded / userRateLimitExceeded and 429", async () => {
      for (const reason of ["rateLimitExceeded", "userRateLimitExceeded"] as const) {
        drive.faults.inject({ route: "files.create", kind: "rate-limit", reason });
        const response = await fetch(`${api}/drive/v3/files`, {
          method: "POST",
          headers: { ...auth(), "Content-Type": "application/json" },
          body: JSON.stringify({ name: "x", mimeType: FOLDER_MIME }),
        });
        expect(response.status).toBe(403);
        const body = await json<GoogleErrorBody>(response);
        expect(body.error.errors[0]).toMatchObject({ domain: "usageLimits", reason });
      }
      drive.faults.inject({ route: "files.get", kind: "status", status: 429 });
      const response = await fetch(`${api}/drive/v3/files/root`, { headers: auth() });
      expect(response.status).toBe(429);
      expect((await json<GoogleErrorBody>(response)).error.errors[0]?.reason).toBe("rateLimitExceeded");
    });

    it("stores a chunk before an afterCommit error: the status query tells", async () => {
      const session = await startSession("after-commit", total);
      drive.faults.inject({ route: "upload.chunk", kind: "status", status: 500, afterCommit: true });
      const response = await put(
        session,
        data.subarray(0, CHUNK_GRANULARITY),
        `bytes 0-${CHUNK_GRANULARITY - 1}/${total}`,
      );
      expect(response.status).toBe(500);
      const status = await query(session, total);
      expect(status.headers.get("range")).toBe(`bytes=0-${CHUNK_GRANULARITY - 1}`);
    });

    it("drops the connection mid-chunk and keeps whole 256 KiB units of what arrived", async () => {
      const session = await startSession("dropped", total);
      drive.faults.inject({ route: "upload.chunk", kind: "drop", afterBytes: CHUNK_GRANULARITY + 5000 });
      await expect(
        put(
          session,
          data.subarray(0, 2 * CHUNK_GRANULARITY),
          `bytes 0-${2 * CHUNK_GRANULARITY - 1}/${total}`,
        ),
      ).rejects.toThrow();
      const status = await query(session, total);
      expect(status.status).toBe(308);
      expect(status.headers.get("range")).toBe(`bytes=0-${CHUNK_GRANULARITY - 1}`);
      const rest = await put(
        session,
        data.subarray(CHUNK_GRANULARITY),
        `bytes ${CHUNK_GRANULARITY}-${total - 1}/${total}`,
      );
      expect(rest.status).toBe(200);
      const { id } = await json<{ id: string }>(rest);
      expect(md5(await drive.contentOf(id))).toBe(md5(data));
      const s = drive.stats.session(session);
      expect(s.bytesResent).toBe(0);
      expect(s.bytesReceived).toBe(CHUNK_GRANULARITY + 5000 + (total - CHUNK_GRANULARITY));
    });

    it("takes rules and reports stats over HTTP, for other processes", async () => {
      const post = await fetch(`${api}/__faults`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ route: "files.get", kind: "status", status: 502 }),
      });
      expect(post.status).toBe(204);
      expect((await fetch(`${api}/drive/v3/files/root`, { headers: auth() })).status).toBe(502);
      const bad = await fetch(`${api}/__faults`, {
        method: "POST",
        body: JSON.stringify({ kind: "explode" }),
      });
      expect(bad.status).toBe(400);
      const stats = await json<{ requests: Record<string, number> }>(await fetch(`${api}/__stats`));
      expect(stats.requests["files.get"]).toBeGreaterThan(0);
      const minted = await json<MintedGrant>(
        await fetch(`${api}/__accounts`, {
          method: "POST",
          body: JSON.stringify({ email: "child@example.com" }),
        }),
      );
      expect((await accessToken(minted.refreshToken)).status).toBe(200);
      const files = await json<{ files: unknown[] }>(
        await fetch(`${api}/__files?account=${grant.accountId}`),
      );
      expect(files.files.length).toBeGreaterThan(0);
    });
  });
});

describe("Google Drive double: the consent screen and the code exchange", () => {
  const clientId = "local-client.apps.googleusercontent.com";
  const clientSecret = "local-client-secret";
  const redirectUri = "http://127.0.0.1:8787/api/drive/callback";
  let dataDir: string;
  let drive: DriveDouble;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "drive-double-oauth-"));
    drive = await startDriveDouble({
      port: await freePort(),
      dataDir,
      log: quietLog,
      clientId,
      clientSecret,
      consentEmail: "local@example.com",
    });
  });

  afterAll(async () => {
    await drive?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  const verifier = randomBytes(32).toString("base64url");
  const challenge = createHash("sha256").update(verifier).digest("base64url");

  function consentUrl(params: Record<string, string> = {}): string {
    const url = new URL(drive.env.GOOGLE_OAUTH_AUTH_URL!);
    const all: Record<string, string> = {
      response_type: "code",
      client_id: clientId,
      redirect_uri: redirectUri,
      state: "state-123",
      scope: "https://www.googleapis.com/auth/drive.file",
      code_challenge_method: "S256",
      code_challenge: challenge,
      access_type: "offline",
      prompt: "consent",
      ...params,
    };
    for (const [k, v] of Object.entries(all)) if (v !== "") url.searchParams.set(k, v);
    return url.toString();
  }

  /** The consent screen's redirect back to the app. */
  async function consent(params: Record<string, string> = {}): Promise<URL> {
    const response = await fetch(consentUrl(params), { redirect: "manual" });
    expect(response.status).toBe(302);
    return new URL(response.headers.get("location")!);
  }

  async function exchange(
    code: string,
    opts: { verifier?: string; redirectUri?: string; basic?: boolean; secret?: string } = {},
  ): Promise<Response> {
    const form = new URLSearchParams({
      grant_type: "authorization_code",
      code,
      redirect_uri: opts.redirectUri ?? redirectUri,
    });
    if (opts.verifier !== "") form.set("code_verifier", opts.verifier ?? verifier);
    const headers: Record<string, string> = { "Content-Type": "application/x-www-form-urlencoded" };
    const secret = opts.secret ?? clientSecret;
    if (opts.basic === false) {
      form.set("client_id", clientId);
      form.set("client_secret", secret);
    } else headers.Authorization = `Basic ${Buffer.from(`${clientId}:${secret}`).toString("base64")}`;
    return fetch(`${drive.url}/token`, { method: "POST", headers, body: form });
  }

  it("sends the browser straight back with a code and the state", async () => {
    const back = await consent();
    expect(`${back.origin}${back.pathname}`).toBe(redirectUri);
    expect(back.searchParams.get("state")).toBe("state-123");
    expect(back.searchParams.get("code")).toMatch(/^4\/0A/);
    expect(back.searchParams.get("scope")).toBe("https://www.googleapis.com/auth/drive.file");
  });

  it("redeems a code once, with the PKCE verifier, for a refresh and an access token", async () => {
    const code = (await consent()).searchParams.get("code")!;
    const response = await exchange(code);
    expect(response.status).toBe(200);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ token_type: "Bearer", scope: "https://www.googleapis.com/auth/drive.file" });
    expect(body.refresh_token).toMatch(/^1\/\//);
    expect(body.access_token).toMatch(/^ya29\./);

    // The access token works on Drive and names the local account.
    const about = await fetch(`${drive.url}/drive/v3/about?fields=user(emailAddress,displayName)`, {
      headers: { Authorization: `Bearer ${body.access_token}` },
    });
    expect(await about.json()).toEqual({ user: { emailAddress: "local@example.com", displayName: "local" } });
    // The refresh token refreshes (the worker's grant) ...
    const refreshed = await fetch(`${drive.url}/token`, {
      method: "POST",
      body: new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: String(body.refresh_token),
        client_id: clientId,
        client_secret: clientSecret,
      }),
    });
    expect(refreshed.status).toBe(200);
    // ... and the code is spent.
    const replay = await exchange(code);
    expect(replay.status).toBe(400);
    expect(await replay.json()).toMatchObject({ error: "invalid_grant" });
  });

  it("accepts the client in the form as well as in Basic auth, and refuses a wrong secret", async () => {
    const code = (await consent()).searchParams.get("code")!;
    expect((await exchange(code, { basic: false })).status).toBe(200);
    const other = (await consent()).searchParams.get("code")!;
    const wrong = await exchange(other, { secret: "not-the-secret" });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toMatchObject({ error: "invalid_client" });
  });

  it("refuses a wrong or missing PKCE verifier and another redirect URI", async () => {
    const a = (await consent()).searchParams.get("code")!;
    expect(await (await exchange(a, { verifier: "x".repeat(43) })).json()).toMatchObject({
      error: "invalid_grant",
    });
    const b = (await consent()).searchParams.get("code")!;
    expect(await (await exchange(b, { verifier: "" })).json()).toMatchObject({ error: "invalid_grant" });
    const c = (await consent()).searchParams.get("code")!;
    expect(await (await exchange(c, { redirectUri: "http://127.0.0.1:1/elsewhere" })).json()).toMatchObject({
      error: "redirect_uri_mismatch",
    });
  });

  it("issues a refresh token only for offline access", async () => {
    const code = (await consent({ access_type: "" })).searchParams.get("code")!;
    const body = (await (await exchange(code)).json()) as Record<string, unknown>;
    expect(body.access_token).toBeTruthy();
    expect(body.refresh_token).toBeUndefined();
  });

  it("signs in as the login_hint account when one is given", async () => {
    const code = (await consent({ login_hint: "hinted@example.com" })).searchParams.get("code")!;
    const body = (await (await exchange(code)).json()) as { access_token: string };
    const about = await fetch(`${drive.url}/drive/v3/about?fields=user/emailAddress`, {
      headers: { Authorization: `Bearer ${body.access_token}` },
    });
    expect(await about.json()).toEqual({ user: { emailAddress: "hinted@example.com" } });
  });

  it("shows an error page for an unknown client or a missing redirect URI, as Google does", async () => {
    const broken: Record<string, string>[] = [{ client_id: "someone-else" }, { redirect_uri: "" }];
    for (const params of broken) {
      const response = await fetch(consentUrl(params), { redirect: "manual" });
      expect(response.status).toBe(400);
      expect(response.headers.get("content-type")).toMatch(/text\/html/);
    }
  });

  it("reports request errors back to the redirect URI with the state", async () => {
    const back = await consent({ response_type: "token" });
    expect(back.searchParams.get("error")).toBe("unsupported_response_type");
    expect(back.searchParams.get("state")).toBe("state-123");
    const noScope = await consent({ scope: "" });
    expect(noScope.searchParams.get("error")).toBe("invalid_request");
  });

  it("requires `fields` on about.get", async () => {
    const { refreshToken } = drive.mintRefreshToken("fields@example.com");
    const token = (await (
      await fetch(`${drive.url}/token`, {
        method: "POST",
        body: new URLSearchParams({
          grant_type: "refresh_token",
          refresh_token: refreshToken,
          client_id: clientId,
          client_secret: clientSecret,
        }),
      })
    ).json()) as { access_token: string };
    const response = await fetch(`${drive.url}/drive/v3/about`, {
      headers: { Authorization: `Bearer ${token.access_token}` },
    });
    expect(response.status).toBe(400);
  });
});
