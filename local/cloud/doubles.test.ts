// The OneDrive and Dropbox doubles keep what they hold across a restart (so
// `npm run dev` restarted still has its grants, files and sessions), and
// refuse what the real services refuse.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDropboxDouble } from "../dropbox/server.ts";
import { startOneDriveDouble } from "../onedrive/server.ts";
import { freePort, quietLog } from "../process.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "tc-doubles-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function refresh(tokenUrl: string, refreshToken: string): Promise<{ status: number; access?: string }> {
  const response = await fetch(tokenUrl, {
    method: "POST",
    body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: refreshToken }),
  });
  const body = (await response.json()) as { access_token?: string };
  return { status: response.status, access: body.access_token };
}

describe("the OneDrive double", () => {
  it("keeps grants, files and open sessions across a restart", async () => {
    const dataDir = join(dir, "onedrive");
    const port = await freePort();
    let double = await startOneDriveDouble({ port, dataDir, log: quietLog });
    const { refreshToken } = double.mintRefreshToken("ada@example.com");
    const { access } = await refresh(`${double.url}/common/oauth2/v2.0/token`, refreshToken);
    const headers = { Authorization: `Bearer ${access}`, "Content-Type": "application/json" };
    const created = await fetch(
      `${double.url}/v1.0/me/drive/special/approot:/job/a.bin:/createUploadSession`,
      {
        method: "POST",
        headers,
        body: JSON.stringify({ item: { "@microsoft.graph.conflictBehavior": "replace" } }),
      },
    );
    const { uploadUrl } = (await created.json()) as { uploadUrl: string };
    const bytes = randomBytes(2 * 320 * 1024);
    const first = await fetch(uploadUrl, {
      method: "PUT",
      headers: { "Content-Range": `bytes 0-${320 * 1024 - 1}/${bytes.length}` },
      body: bytes.subarray(0, 320 * 1024),
    });
    expect(first.status).toBe(202);
    // The upload URL is the credential: a PUT with a token beside it is refused, as Graph does.
    const withToken = await fetch(uploadUrl, {
      method: "PUT",
      headers: {
        Authorization: `Bearer ${access}`,
        "Content-Range": `bytes ${320 * 1024}-${bytes.length - 1}/${bytes.length}`,
      },
      body: bytes.subarray(320 * 1024),
    });
    expect(withToken.status).toBe(401);
    await double.stop();

    // Restarted on another port, so no connection to the stopped one is reused; the session's id is what must survive.
    const before = double.url;
    double = await startOneDriveDouble({ port: await freePort(), dataDir, log: quietLog });
    const resumed = uploadUrl.replace(before, double.url);
    const status = (await (await fetch(resumed)).json()) as { nextExpectedRanges: string[] };
    expect(status.nextExpectedRanges[0]).toMatch(/^327680-/);
    const last = await fetch(resumed, {
      method: "PUT",
      headers: { "Content-Range": `bytes ${320 * 1024}-${bytes.length - 1}/${bytes.length}` },
      body: bytes.subarray(320 * 1024),
    });
    expect(last.status).toBe(201);
    const [file] = double.filesOf("ada@example.com");
    expect(file?.path).toBe("job/a.bin");
    expect(double.contentOf(file!.id).equals(bytes)).toBe(true);
    // The grant survived too (Microsoft keeps a rotated-away refresh token working for a while).
    expect((await refresh(`${double.url}/common/oauth2/v2.0/token`, refreshToken)).status).toBe(200);
    await double.stop();
  });
});

describe("the Dropbox double", () => {
  it("keeps grants and sessions across a restart, and wants its argument header in ASCII", async () => {
    const dataDir = join(dir, "dropbox");
    const port = await freePort();
    let double = await startDropboxDouble({ port, dataDir, log: quietLog });
    const { refreshToken } = double.mintRefreshToken("ada@example.com");
    const token = async () => (await refresh(`${double.url}/oauth2/token`, refreshToken)).access;
    const call = async (path: string, arg: string, body: Uint8Array) =>
      fetch(`${double.url}${path}`, {
        method: "POST",
        headers: {
          Authorization: `Bearer ${await token()}`,
          "Content-Type": "application/octet-stream",
          "Dropbox-API-Arg": arg,
        },
        body,
      });
    const start = await call(
      "/2/files/upload_session/start",
      JSON.stringify({ close: false }),
      randomBytes(1000),
    );
    const { session_id } = (await start.json()) as { session_id: string };
    await double.stop();

    // Restarted on another port, so no connection to the stopped one is reused.
    double = await startDropboxDouble({ port: await freePort(), dataDir, log: quietLog });
    // The session still holds its 1000 bytes: an append at 0 is told the right offset.
    const probe = await call(
      "/2/files/upload_session/append_v2",
      JSON.stringify({ cursor: { session_id, offset: 0 }, close: false }),
      new Uint8Array(0),
    );
    expect(probe.status).toBe(409);
    expect(((await probe.json()) as { error: { correct_offset: number } }).error.correct_offset).toBe(1000);
    // A header with a raw non-ASCII character is refused; escaped, the same path is fine.
    const raw = JSON.stringify({
      cursor: { session_id, offset: 1000 },
      commit: { path: "/job/é.bin", mode: "add" },
    });
    const refused = await call("/2/files/upload_session/finish", raw, new Uint8Array(0));
    expect(refused.status).toBe(400);
    const escaped = raw.replace("é", "\\u00e9");
    const finished = await call("/2/files/upload_session/finish", escaped, new Uint8Array(0));
    expect(finished.status).toBe(200);
    expect(((await finished.json()) as { path_display: string }).path_display).toBe("/job/é.bin");
    await double.stop();
  });
});
