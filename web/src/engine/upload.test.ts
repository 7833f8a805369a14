import { describe, expect, it } from "vitest";
import { type Http, putDriveChunk, putS3Part, UploadRefused } from "./upload.ts";

/** Answers each request with the next of `answers` (a Response, or an error thrown as fetch would). */
function fakeHttp(answers: (Response | Error | ((init: RequestInit) => Response))[]) {
  const requests: { url: string; init: RequestInit }[] = [];
  const slept: number[] = [];
  let now = 0;
  const http: Http = {
    async fetch(url, init) {
      requests.push({ url, init });
      const next = answers.shift();
      if (!next) throw new Error("no more answers");
      if (next instanceof Error) throw next;
      return typeof next === "function" ? next(init) : next;
    },
    async sleep(ms) {
      slept.push(ms);
      now += ms;
    },
    now: () => now,
  };
  return { http, requests, slept, advance: (ms: number) => (now += ms) };
}

const signal = new AbortController().signal;
const origin = "https://app.example";

describe("putS3Part", () => {
  const urls = () => {
    let n = 0;
    return {
      asked: () => n,
      url: async () => ({ url: `https://bucket.example/part?sig=${++n}`, expiresAt: 15 * 60_000 }),
    };
  };

  it("PUTs the bytes and answers S3's ETag", async () => {
    const { http, requests } = fakeHttp([new Response(null, { headers: { etag: '"abc"' } })]);
    const etag = await putS3Part({ bytes: Uint8Array.of(1, 2), url: urls().url, http, signal, origin });
    expect(etag).toBe('"abc"');
    expect(requests[0]?.init.method).toBe("PUT");
    expect([...(requests[0]!.init.body as Uint8Array)]).toEqual([1, 2]);
  });

  it("tries again with backoff after a 5xx, and with a fresh URL after a 403 or near expiry", async () => {
    const { http, requests, slept, advance } = fakeHttp([
      new Response("<Error><Code>SlowDown</Code></Error>", { status: 503 }),
      () => {
        advance(15 * 60_000);
        return new Response(
          "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
          {
            status: 403,
          },
        );
      },
      new Response(null, { headers: { etag: '"ok"' } }),
    ]);
    const signer = urls();
    expect(await putS3Part({ bytes: Uint8Array.of(1), url: signer.url, http, signal, origin })).toBe('"ok"');
    expect(slept).toEqual([1000, 2000]);
    expect(requests.map((r) => r.url)).toEqual([
      "https://bucket.example/part?sig=1",
      "https://bucket.example/part?sig=1",
      // Signed again after the 403, and again since that URL too is past its time.
      "https://bucket.example/part?sig=3",
    ]);
  });

  it("fails with CORS advice when the browser cannot send, or cannot read the ETag", async () => {
    const blocked = fakeHttp(Array.from({ length: 5 }, () => new TypeError("Failed to fetch")));
    const refusal = await putS3Part({
      bytes: Uint8Array.of(1),
      url: urls().url,
      http: blocked.http,
      signal,
      origin,
    })
      .then(() => undefined)
      .catch((err: unknown) => err);
    expect(refusal).toBeInstanceOf(UploadRefused);
    expect((refusal as Error).message).toMatch(
      /CORS rule must allow PUT from https:\/\/app\.example and expose the ETag header/,
    );
    expect(blocked.requests).toHaveLength(5);

    const hidden = fakeHttp([new Response(null, { status: 200 })]);
    await expect(
      putS3Part({ bytes: Uint8Array.of(1), url: urls().url, http: hidden.http, signal, origin }),
    ).rejects.toThrow(/hid its ETag.*ExposeHeaders: ETag/);
  });

  it("gives up at once on a refusal that will not pass, with S3's words", async () => {
    const { http } = fakeHttp([
      new Response("<Error><Code>EntityTooLarge</Code><Message>Too big</Message></Error>", { status: 400 }),
    ]);
    await expect(
      putS3Part({ bytes: Uint8Array.of(1), url: urls().url, http, signal, origin }),
    ).rejects.toThrow("The bucket refused a part (EntityTooLarge: Too big).");
  });
});

describe("putDriveChunk", () => {
  const size = 600_000;
  const session = (http: Http) => ({ sessionUrl: "https://drive.example/upload?id=s", size, http, signal });
  const bytes = new Uint8Array(262_144);

  it("sends a chunk with Content-Range and goes on from the 308's Range", async () => {
    const { http, requests } = fakeHttp([
      new Response(null, { status: 308, headers: { range: "bytes=0-262143" } }),
    ]);
    expect(await putDriveChunk(session(http), { start: 0, end: 262_144 }, bytes)).toEqual({
      done: false,
      offset: 262_144,
    });
    expect(new Headers(requests[0]?.init.headers).get("content-range")).toBe("bytes 0-262143/600000");
  });

  it("sends again what Drive did not keep of a chunk", async () => {
    const { http, requests } = fakeHttp([
      new Response(null, { status: 308, headers: { range: "bytes=0-131071" } }),
      new Response(null, { status: 308, headers: { range: "bytes=0-262143" } }),
    ]);
    await putDriveChunk(session(http), { start: 0, end: 262_144 }, bytes);
    expect(new Headers(requests[1]?.init.headers).get("content-range")).toBe("bytes 131072-262143/600000");
    expect((requests[1]!.init.body as Uint8Array).length).toBe(131_072);
  });

  it("after an error asks where the session stands, then finishes with the file id", async () => {
    const last = new Uint8Array(size - 524_288);
    const { http, requests } = fakeHttp([
      new Response('{"error":{"message":"backend"}}', { status: 503 }),
      new Response(null, { status: 308, headers: { range: "bytes=0-524287" } }),
      new Response(JSON.stringify({ id: "file-1" }), { status: 200 }),
    ]);
    expect(await putDriveChunk(session(http), { start: 524_288, end: size }, last)).toEqual({
      done: true,
      fileId: "file-1",
    });
    expect(new Headers(requests[1]?.init.headers).get("content-range")).toBe("bytes */600000");
    expect(requests[1]?.init.body).toBeUndefined();
  });

  it("says when the Drive is full", async () => {
    const { http } = fakeHttp([
      new Response('{"error":{"errors":[{"reason":"storageQuotaExceeded"}],"message":"full"}}', {
        status: 403,
      }),
    ]);
    await expect(putDriveChunk(session(http), { start: 0, end: 262_144 }, bytes)).rejects.toThrow(
      "The Google Drive is full.",
    );
  });
});
