import { describe, expect, it } from "vitest";
import { makeTorrent, randomMagnet, toBase64 } from "../../test/fixtures/torrents.ts";
import { call, fromWebApp, signIn } from "../../test/helpers.ts";

const analyze = (cookie: string, body: BodyInit, type?: string) =>
  call("/api/torrents/analyze", {
    method: "POST",
    headers: fromWebApp(cookie, type ? { "content-type": type } : {}),
    body,
  });

interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}

describe("POST /api/torrents/analyze", () => {
  it("reads a raw .torrent body", async () => {
    const { cookie } = await signIn();
    const t = await makeTorrent({ name: "Album", private: true });
    const response = await analyze(cookie, t.bytes, "application/x-bittorrent");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      source: "torrent",
      infoHash: t.infoHash,
      name: "Album",
      files: [
        { index: 0, path: "Album/disc 1/track 01.flac", size: 40_000 },
        { index: 1, path: "Album/disc 1/track 02.flac", size: 25_000 },
        { index: 2, path: "Album/cover.jpg", size: 3_000 },
      ],
      totalSize: 68_000,
      pieceLength: 16_384,
      pieceCount: 5,
      trackers: ["http://127.0.0.1:6969/announce"],
      private: true,
    });
  });

  it("reads a .torrent from a multipart form", async () => {
    const { cookie } = await signIn();
    const t = await makeTorrent();
    const form = new FormData();
    form.set("file", new File([t.bytes], "x.torrent", { type: "application/x-bittorrent" }));
    const response = await analyze(cookie, form);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ source: "torrent", infoHash: t.infoHash });
  });

  it("reads base64 in JSON, and a magnet link", async () => {
    const { cookie } = await signIn();
    const t = await makeTorrent();
    const json = await analyze(cookie, JSON.stringify({ torrent: toBase64(t.bytes) }), "application/json");
    expect(await json.json()).toMatchObject({ infoHash: t.infoHash });
    const magnet = randomMagnet("Show S01");
    const response = await analyze(cookie, JSON.stringify({ magnet: magnet.uri }), "application/json");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      source: "magnet",
      infoHash: magnet.infoHash,
      name: "Show S01",
      trackers: ["udp://tracker.example:1337"],
      files: null,
    });
  });

  it("needs a signed-in user", async () => {
    const t = await makeTorrent();
    const response = await call("/api/torrents/analyze", {
      method: "POST",
      headers: { "content-type": "application/x-bittorrent" },
      body: t.bytes,
    });
    expect(response.status).toBe(401);
  });

  it("answers 415 for other content types", async () => {
    const { cookie } = await signIn();
    const response = await analyze(cookie, "hello", "text/plain");
    expect(response.status).toBe(415);
    const body = (await response.json()) as ErrorBody;
    expect(body.error.code).toBe("unsupported_media_type");
    expect(body.error.message).toMatch(/application\/x-bittorrent/);
    expect((await analyze(cookie, "hello")).status).toBe(415);
  });

  it("answers 413 for a body over the limit, before reading it all", async () => {
    const { cookie } = await signIn();
    const big = new Uint8Array(12 * 1024 * 1024);
    const response = await analyze(cookie, big, "application/x-bittorrent");
    expect(response.status).toBe(413);
    expect(((await response.json()) as ErrorBody).error.code).toBe("payload_too_large");
    // Streamed, without a Content-Length to trust.
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 12; i++) controller.enqueue(new Uint8Array(1024 * 1024));
        controller.close();
      },
    });
    const streamed = await call("/api/torrents/analyze", {
      method: "POST",
      headers: fromWebApp(cookie, {
        "content-type": "application/x-bittorrent",
        "transfer-encoding": "chunked",
      }),
      body: stream,
      // @ts-expect-error duplex is required for a streamed request body but missing from the type
      duplex: "half",
    });
    expect(streamed.status).toBe(413);
  });

  it("answers 413 for a .torrent over 8 MiB inside an allowed body", async () => {
    const { cookie } = await signIn();
    const response = await analyze(cookie, new Uint8Array(8 * 1024 * 1024 + 1), "application/x-bittorrent");
    expect(response.status).toBe(413);
    expect(((await response.json()) as ErrorBody).error.details).toMatchObject({ problem: "too_large" });
  });

  it("answers 422 naming the problem for a bad torrent", async () => {
    const { cookie } = await signIn();
    const t = await makeTorrent({
      files: [
        { path: "../../etc/passwd", size: 10 },
        { path: "ok", size: 10 },
      ],
    });
    const response = await analyze(cookie, t.bytes, "application/x-bittorrent");
    expect(response.status).toBe(422);
    const body = (await response.json()) as ErrorBody;
    expect(body.error.code).toBe("invalid_torrent");
    expect(body.error.message).toMatch(/"\.\."/);
    expect(body.error.details).toMatchObject({ problem: "unsafe_path" });

    const garbage = await analyze(
      cookie,
      new TextEncoder().encode("not a torrent"),
      "application/x-bittorrent",
    );
    expect(garbage.status).toBe(422);
    expect(((await garbage.json()) as ErrorBody).error.details).toMatchObject({ problem: "invalid_bencode" });
  });

  it("answers 422 for a bad magnet and 400 for malformed bodies", async () => {
    const { cookie } = await signIn();
    const magnet = await analyze(
      cookie,
      JSON.stringify({ magnet: "magnet:?xt=urn:btih:nothex" }),
      "application/json",
    );
    expect(magnet.status).toBe(422);
    expect(((await magnet.json()) as ErrorBody).error.code).toBe("invalid_magnet");
    expect((await analyze(cookie, "{oops", "application/json")).status).toBe(400);
    expect((await analyze(cookie, JSON.stringify({}), "application/json")).status).toBe(400);
    expect((await analyze(cookie, JSON.stringify({ torrent: "***" }), "application/json")).status).toBe(400);
    const form = new FormData();
    form.set("other", "x");
    expect((await analyze(cookie, form)).status).toBe(400);
  });

  it("is rate limited per user", async () => {
    const { cookie } = await signIn();
    const magnet = JSON.stringify({ magnet: randomMagnet().uri });
    // 60 a minute. The window slides: a run crossing a minute's boundary may get a few more in.
    const statuses: number[] = [];
    while (statuses.at(-1) !== 429 && statuses.length < 120)
      statuses.push((await analyze(cookie, magnet, "application/json")).status);
    expect(statuses.slice(0, 60).every((s) => s === 200)).toBe(true);
    expect(statuses.at(-1), `statuses: ${statuses.join(" ")}`).toBe(429);
    expect(statuses.slice(0, -1).every((s) => s === 200)).toBe(true);
  });
});

describe("OpenAPI document", () => {
  it("describes the torrent, job and progress routes", async () => {
    const response = await call("/api/openapi.json");
    expect(response.status).toBe(200);
    const doc = (await response.json()) as { paths: Record<string, Record<string, unknown>> };
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        "/api/torrents/analyze",
        "/api/jobs",
        "/api/jobs/{id}",
        "/api/jobs/{id}/cancel",
        "/api/jobs/{id}/retry",
        "/api/jobs/{id}/progress",
        "/api/progress",
      ]),
    );
    expect(Object.keys(doc.paths["/api/jobs/{id}"]!).sort()).toEqual(["delete", "get"]);
  });
});
