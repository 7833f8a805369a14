import { describe, expect, it } from "vitest";
import { sourceOf } from "./store.ts";

describe("sourceOf", () => {
  const shared = { torrentFile: new Uint8Array([1, 2, 3]), magnetUri: "magnet:?xt=urn:btih:a&tr=first-user" };

  it("downloads from the job's own magnet, not the shared row's .torrent or magnet", () => {
    expect(sourceOf({ sourceTorrentFile: null, sourceMagnet: "magnet:?tr=this-user" }, shared)).toBe(
      "magnet:?tr=this-user",
    );
  });

  it("prefers the job's own .torrent", () => {
    const own = new Uint8Array([9]);
    expect(sourceOf({ sourceTorrentFile: own, sourceMagnet: null }, shared)).toBe(own);
  });

  it("falls back to the shared row for jobs stored before sources were kept per job", () => {
    expect(sourceOf({ sourceTorrentFile: null, sourceMagnet: null }, shared)).toBe(shared.torrentFile);
    expect(sourceOf({ sourceTorrentFile: null, sourceMagnet: null }, { ...shared, torrentFile: null })).toBe(
      shared.magnetUri,
    );
  });
});
