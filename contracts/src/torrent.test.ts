import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
// @ts-expect-error bencode ships no type declarations; it is typed as Bencode below.
import bencodeModule from "bencode";
import { describe, expect, it } from "vitest";
import {
  infoDictionaryOf,
  MAX_BENCODE_DEPTH,
  MAX_PATH_COMPONENT_BYTES,
  MAX_PATH_DEPTH,
  MAX_TORRENT_BYTES,
  MAX_TORRENT_FILES,
  MAX_TRACKERS,
  parseMagnet,
  parseSelectOnly,
  parseTorrentFile,
  TorrentError,
  type TorrentErrorCode,
  torrentFromInfo,
  webSeedsOf,
} from "./torrent.ts";

// The webtorrent project's encoder, independent of the decoder under test.
interface Bencode {
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): Record<string, unknown>;
}
const bencode = bencodeModule as Bencode;

const sha1 = (bytes: Uint8Array) => createHash("sha1").update(bytes).digest("hex");
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
const text = (s: string) => new TextEncoder().encode(s);
const pieces = (count: number) => new Uint8Array(20 * count).fill(7);

type Info = Record<string, unknown>;

function singleInfo(over: Info = {}): Info {
  return { length: 1000, name: text("movie.mkv"), "piece length": 256, pieces: pieces(4), ...over };
}

function multiInfo(files: { path: string[]; length: number; attr?: string }[], over: Info = {}): Info {
  const total = files.reduce((sum, f) => sum + f.length, 0);
  return {
    files: files.map((f) => ({
      length: f.length,
      path: f.path.map(text),
      ...(f.attr ? { attr: text(f.attr) } : {}),
    })),
    name: text("Album"),
    "piece length": 16384,
    ...("pieces" in over ? {} : { pieces: pieces(Math.ceil(total / 16384)) }),
    ...over,
  };
}

const torrent = (info: Info, over: Info = {}) =>
  bencode.encode({ announce: text("http://tracker.example/announce"), info, ...over });

async function rejection(bytes: Uint8Array): Promise<TorrentError> {
  try {
    await parseTorrentFile(bytes);
  } catch (err) {
    if (err instanceof TorrentError) return err;
    throw err;
  }
  throw new Error("expected the torrent to be refused");
}

async function expectCode(bytes: Uint8Array, code: TorrentErrorCode, message?: RegExp): Promise<void> {
  const err = await rejection(bytes);
  expect(err.code).toBe(code);
  if (message) expect(err.message).toMatch(message);
}

describe("parseTorrentFile: good torrents", () => {
  it("reads a one-file torrent and hashes its info dictionary like every other client", async () => {
    const info = singleInfo({ private: 1 });
    const parsed = await parseTorrentFile(torrent(info));
    expect(parsed).toEqual({
      infoHash: sha1(bencode.encode(info)),
      name: "movie.mkv",
      files: [{ index: 0, path: "movie.mkv", size: 1000 }],
      totalSize: 1000,
      pieceLength: 256,
      pieceCount: 4,
      trackers: ["http://tracker.example/announce"],
      private: true,
    });
  });

  it("reads a multi-file torrent with folders, prefixing paths with the torrent name", async () => {
    const info = multiInfo([
      { path: ["CD1", "01 Intro.flac"], length: 20000 },
      { path: ["CD1", "02 Song.flac"], length: 30000 },
      { path: ["cover.jpg"], length: 5000 },
    ]);
    const parsed = await parseTorrentFile(torrent(info));
    expect(parsed.files).toEqual([
      { index: 0, path: "Album/CD1/01 Intro.flac", size: 20000 },
      { index: 1, path: "Album/CD1/02 Song.flac", size: 30000 },
      { index: 2, path: "Album/cover.jpg", size: 5000 },
    ]);
    expect(parsed.totalSize).toBe(55000);
    expect(parsed.pieceCount).toBe(4);
    expect(parsed.private).toBe(false);
    expect(parsed.infoHash).toBe(sha1(bencode.encode(info)));
  });

  it("leaves out BEP 47 padding files but keeps the other files' indexes", async () => {
    const info = multiInfo([
      { path: ["a.bin"], length: 10000 },
      { path: [".pad", "6384"], length: 6384, attr: "p" },
      { path: ["b.bin"], length: 500 },
    ]);
    const parsed = await parseTorrentFile(torrent(info));
    expect(parsed.files).toEqual([
      { index: 0, path: "Album/a.bin", size: 10000 },
      { index: 2, path: "Album/b.bin", size: 500 },
    ]);
    expect(parsed.totalSize).toBe(10500);
    expect(parsed.pieceCount).toBe(2);
  });

  it("prefers name.utf-8 and path.utf-8 over legacy-encoded fields", async () => {
    const info = multiInfo([{ path: ["x"], length: 100 }], {
      name: new Uint8Array([0xc4, 0xe3, 0xba, 0xc3]), // GBK, not UTF-8
      "name.utf-8": text("你好"),
    });
    (info.files as Info[])[0]!["path.utf-8"] = [text("数据.txt")];
    const parsed = await parseTorrentFile(torrent(info));
    expect(parsed.name).toBe("你好");
    expect(parsed.files[0]!.path).toBe("你好/数据.txt");
  });

  it("collects trackers from announce and announce-list, deduplicated, dropping non-URLs", async () => {
    const parsed = await parseTorrentFile(
      torrent(singleInfo(), {
        "announce-list": [
          [text("http://tracker.example/announce"), text("udp://open.example:6969")],
          [text("javascript:alert(1)"), text("wss://ws.example/announce")],
        ],
      }),
    );
    expect(parsed.trackers).toEqual([
      "http://tracker.example/announce",
      "udp://open.example:6969",
      "wss://ws.example/announce",
    ]);
  });

  it(`keeps at most ${MAX_TRACKERS} trackers`, async () => {
    const tier = Array.from({ length: MAX_TRACKERS + 50 }, (_, i) => text(`udp://t${i}.example:80`));
    const parsed = await parseTorrentFile(torrent(singleInfo(), { "announce-list": [tier] }));
    expect(parsed.trackers).toHaveLength(MAX_TRACKERS);
  });

  it("hashes the info dictionary's raw bytes, even when its keys are not in canonical order", async () => {
    // Keys written out of order: re-encoding would sort them and change the hash.
    const info = "d4:name3:abc6:lengthi10e12:piece lengthi16e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
    const bytes = text(`d8:announce3:x:y4:info${info}e`);
    const parsed = await parseTorrentFile(bytes);
    expect(parsed.infoHash).toBe(sha1(text(info)));
    expect(parsed.infoHash).not.toBe(sha1(bencode.encode(bencode.decode(text(info)))));
  });

  it("hashes a hybrid v1 + v2 torrent both ways", async () => {
    const info = singleInfo({
      "meta version": 2,
      "file tree": { "movie.mkv": { "": { length: 1000, "pieces root": new Uint8Array(32) } } },
    });
    const parsed = await parseTorrentFile(torrent(info));
    const raw = bencode.encode(info);
    expect(parsed.infoHash).toBe(sha1(raw));
    expect(parsed.infoHashV2).toBe(sha256(raw));
  });

  it("reads a torrent made by create-torrent (the webtorrent project's generator)", async () => {
    // Imported at run time: the seeder is Node tooling outside this package.
    const seeder = "../../local/seeder/index.ts";
    const { makeTorrent } = (await import(seeder)) as {
      makeTorrent(opts: {
        dir: string;
        name: string;
        files: { path: string; size: number }[];
        announce: string[];
        pieceLength?: number;
      }): Promise<{ torrentPath: string; infoHash: string }>;
    };
    const dir = await mkdtemp(join(tmpdir(), "torreclou-contracts-"));
    try {
      const made = await makeTorrent({
        dir,
        name: "Real Torrent",
        files: [
          { path: "docs/readme.txt", size: 1234 },
          { path: "video/clip.bin", size: 300_000 },
          { path: "empty.dat", size: 0 },
        ],
        announce: ["http://127.0.0.1:8000/announce"],
        pieceLength: 16384,
      });
      const bytes = new Uint8Array(await readFile(made.torrentPath));
      const parsed = await parseTorrentFile(bytes);
      expect(parsed.infoHash).toBe(made.infoHash);
      expect(parsed.name).toBe("Real Torrent");
      expect(parsed.totalSize).toBe(301_234);
      expect(parsed.pieceCount).toBe(Math.ceil(301_234 / 16384));
      expect(parsed.files.map((f) => f.path).sort()).toEqual([
        "Real Torrent/docs/readme.txt",
        "Real Torrent/empty.dat",
        "Real Torrent/video/clip.bin",
      ]);
      expect(parsed.trackers).toEqual(["http://127.0.0.1:8000/announce"]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("parseTorrentFile: refused input", () => {
  it("refuses empty and oversized files", async () => {
    await expectCode(new Uint8Array(), "empty");
    await expectCode(new Uint8Array(MAX_TORRENT_BYTES + 1), "too_large", /limit is 8388608 bytes/);
  });

  it("refuses data that is not bencode, naming where it broke", async () => {
    await expectCode(text("<html>hello</html>"), "invalid_bencode", /at byte 0/);
    await expectCode(text("d4:info"), "invalid_bencode", /ends too early/);
    await expectCode(text("d4:infoi1e"), "invalid_bencode", /ends too early/);
    await expectCode(text("d3:keyi01ee"), "invalid_bencode", /leading zero/);
    await expectCode(text("d3:keyi-0ee"), "invalid_bencode", /negative zero/);
    await expectCode(text("d3:keyi99999999999999999999ee"), "invalid_bencode", /too large/);
    await expectCode(text("d3:key99999:abce"), "invalid_bencode", /runs past the end/);
    await expectCode(text("d3:key-5:abcde"), "invalid_bencode");
    await expectCode(text("di1ei2ee"), "invalid_bencode", /key is not a string/);
    await expectCode(text("d1:ai1e1:ai2ee"), "invalid_bencode", /appears twice/);
    await expectCode(text("de junk"), "invalid_bencode", /after the end/);
  });

  it(`refuses nesting deeper than ${MAX_BENCODE_DEPTH} levels without overflowing the stack`, async () => {
    const depth = 100_000;
    await expectCode(text(`${"l".repeat(depth)}${"e".repeat(depth)}`), "invalid_bencode", /nest deeper/);
  });

  it("refuses bencode that is not a torrent", async () => {
    await expectCode(text("li1ee"), "not_a_torrent", /not a bencoded dictionary/);
    await expectCode(bencode.encode({ announce: text("x") }), "not_a_torrent", /no "info"/);
    await expectCode(torrent(singleInfo({ files: [] })), "not_a_torrent");
    await expectCode(torrent(multiInfo([{ path: ["a"], length: 1 }], { files: [] })), "not_a_torrent");
    await expectCode(torrent(multiInfo([{ path: ["a"], length: 1 }], { files: [1] })), "not_a_torrent");
  });

  it("refuses bad names", async () => {
    await expectCode(torrent(singleInfo({ name: undefined })), "invalid_name", /no name/);
    await expectCode(torrent(singleInfo({ name: text("") })), "invalid_name", /empty name/);
    await expectCode(torrent(singleInfo({ name: text("..") })), "invalid_name", /escape/);
    await expectCode(torrent(singleInfo({ name: text("a/b") })), "invalid_name", /"\/"/);
    await expectCode(torrent(singleInfo({ name: new Uint8Array([0xff, 0xfe]) })), "invalid_name", /UTF-8/);
    await expectCode(torrent(singleInfo({ name: 5 })), "invalid_name");
  });

  const badPaths: [string, string[], RegExp][] = [
    ["a parent-folder component", ["..", "etc", "passwd"], /escape/],
    ["a current-folder component", [".", "x"], /escape/],
    ["an empty component (absolute path)", ["", "etc", "passwd"], /empty name/],
    ["an empty component in the middle", ["a", "", "b"], /empty name/],
    ["a slash inside a component", ["/etc/passwd"], /"\/"/],
    ["a backslash", ["..\\..\\windows"], /backslash/],
    ["a NUL byte", ["evil\u0000.txt"], /control character/],
    ["a newline", ["line\nbreak"], /control character/],
    ["an overlong name", ["x".repeat(MAX_PATH_COMPONENT_BYTES + 1)], /longer than 255 bytes/],
    ["too many folders", Array.from({ length: MAX_PATH_DEPTH + 1 }, () => "d"), /nested more than/],
    ["no components", [], /empty path/],
  ];
  for (const [label, path, message] of badPaths) {
    it(`refuses a file path with ${label}`, async () => {
      await expectCode(
        torrent(
          multiInfo([
            { path, length: 10 },
            { path: ["ok"], length: 10 },
          ]),
        ),
        "unsafe_path",
        message,
      );
    });
  }

  it("accepts a 255-byte multi-byte name at the limit and counts bytes, not characters", async () => {
    const ok = "é".repeat(127); // 254 bytes
    const parsed = await parseTorrentFile(torrent(multiInfo([{ path: [ok], length: 10 }])));
    expect(parsed.files[0]!.path).toBe(`Album/${ok}`);
    await expectCode(torrent(multiInfo([{ path: ["é".repeat(128)], length: 10 }])), "unsafe_path");
  });

  it("refuses a path that is not valid UTF-8 or not a list of strings", async () => {
    const info = multiInfo([{ path: ["a"], length: 10 }]);
    (info.files as Info[])[0]!.path = [new Uint8Array([0xc3, 0x28])];
    await expectCode(torrent(info), "unsafe_path", /UTF-8/);
    (info.files as Info[])[0]!.path = [7];
    await expectCode(torrent(info), "unsafe_path");
    (info.files as Info[])[0]!.path = text("a");
    await expectCode(torrent(info), "unsafe_path", /no path/);
  });

  it("refuses duplicate paths and a path used as both file and folder", async () => {
    await expectCode(
      torrent(
        multiInfo([
          { path: ["a"], length: 10 },
          { path: ["a"], length: 10 },
        ]),
      ),
      "duplicate_path",
      /more than once/,
    );
    await expectCode(
      torrent(
        multiInfo([
          { path: ["a"], length: 10 },
          { path: ["a", "b"], length: 10 },
        ]),
      ),
      "duplicate_path",
      /both a file and a folder/,
    );
    await expectCode(
      torrent(
        multiInfo([
          { path: ["a", "b"], length: 10 },
          { path: ["a"], length: 10 },
        ]),
      ),
      "duplicate_path",
    );
  });

  it(`refuses more than ${MAX_TORRENT_FILES} files`, async () => {
    const files = Array.from({ length: MAX_TORRENT_FILES + 1 }, (_, i) => ({ path: [`f${i}`], length: 1 }));
    await expectCode(torrent(multiInfo(files)), "too_many_files", /20001 files; the limit is 20000/);
  });

  it("refuses negative, missing and non-integer sizes, and empty torrents", async () => {
    await expectCode(torrent(singleInfo({ length: -1 })), "invalid_size", /negative/);
    await expectCode(torrent(singleInfo({ length: text("12") })), "invalid_size");
    await expectCode(text("d4:infod6:lengthi1.5e4:name1:a12:piece lengthi1e6:pieces0:ee"), "invalid_bencode");
    await expectCode(torrent(multiInfo([{ path: ["a"], length: -5 }])), "invalid_size", /file #0/);
    await expectCode(
      torrent(singleInfo({ length: 0, pieces: new Uint8Array(20) })),
      "invalid_size",
      /no data/,
    );
    await expectCode(
      torrent(
        multiInfo(
          [
            { path: ["a"], length: 2 ** 52 },
            { path: ["b"], length: 2 ** 52 },
          ],
          { pieces: pieces(1) },
        ),
      ),
      "invalid_size",
    );
  });

  it("refuses a missing, zero or huge piece length", async () => {
    await expectCode(
      torrent(singleInfo({ "piece length": undefined })),
      "invalid_piece_length",
      /no piece length/,
    );
    await expectCode(torrent(singleInfo({ "piece length": 0 })), "invalid_piece_length");
    await expectCode(torrent(singleInfo({ "piece length": 2 ** 40 })), "invalid_piece_length");
  });

  it("refuses piece hashes of the wrong length or count", async () => {
    await expectCode(torrent(singleInfo({ pieces: undefined })), "invalid_pieces", /no piece hashes/);
    await expectCode(torrent(singleInfo({ pieces: new Uint8Array(79) })), "invalid_pieces", /20-byte/);
    await expectCode(torrent(singleInfo({ pieces: pieces(3) })), "invalid_pieces", /3 piece hashes.*need 4/);
    await expectCode(torrent(singleInfo({ pieces: pieces(5) })), "invalid_pieces");
  });

  it("refuses a v2-only torrent clearly, giving its v2 hash", async () => {
    const info = {
      "file tree": { "a.txt": { "": { length: 100, "pieces root": new Uint8Array(32) } } },
      "meta version": 2,
      name: text("v2"),
      "piece length": 16384,
    };
    const err = await rejection(torrent(info));
    expect(err.code).toBe("v2_only");
    expect(err.message).toMatch(/v2-only/);
    expect(err.details).toEqual({ infoHashV2: sha256(bencode.encode(info)) });
    await expectCode(torrent(singleInfo({ "meta version": 3 })), "unsupported_version");
  });

  it("refuses both files and length", async () => {
    await expectCode(
      torrent(multiInfo([{ path: ["a"], length: 10 }], { length: 10 })),
      "not_a_torrent",
      /both "files" and "length"/,
    );
  });
});

describe("parseMagnet", () => {
  const hash = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

  it("reads a hex v1 magnet with a name and trackers", () => {
    const link = `magnet:?xt=urn:btih:${hash.toUpperCase()}&dn=Big+Buck%20Bunny&tr=${encodeURIComponent("udp://t.example:80")}&tr=${encodeURIComponent("https://t2.example/announce")}&tr=bogus`;
    expect(parseMagnet(link)).toEqual({
      infoHash: hash,
      name: "Big Buck Bunny",
      trackers: ["udp://t.example:80", "https://t2.example/announce"],
    });
  });

  it("reads a base32 v1 hash", () => {
    const base32 = "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK";
    expect(parseMagnet(`magnet:?xt=urn:btih:${base32}`).infoHash).toBe(hash);
    expect(parseMagnet(`magnet:?xt=urn:btih:${base32.toLowerCase()}`).infoHash).toBe(hash);
  });

  it("reads a hybrid magnet by its v1 hash and refuses a v2-only one clearly", () => {
    const v2 = "a".repeat(64);
    expect(parseMagnet(`magnet:?xt=urn:btih:${hash}&xt=urn:btmh:1220${v2}`)).toMatchObject({
      infoHash: hash,
      infoHashV2: v2,
    });
    // Either order of the two xt parameters.
    expect(parseMagnet(`magnet:?xt=urn:btmh:1220${v2}&xt=urn:btih:${hash}`).infoHash).toBe(hash);
    try {
      parseMagnet(`magnet:?xt=urn:btmh:1220${v2}&dn=x`);
      expect.unreachable();
    } catch (err) {
      expect((err as TorrentError).code).toBe("v2_only");
      expect((err as TorrentError).message).toMatch(/only a BitTorrent v2 hash.*hybrid magnet link/);
    }
  });

  it("reads a BEP 53 selection (so=) into sorted indexes", () => {
    expect(parseMagnet(`magnet:?xt=urn:btih:${hash}&so=0,2,4-6`).selectOnly).toEqual([0, 2, 4, 5, 6]);
    expect(parseMagnet(`magnet:?xt=urn:btih:${hash}&so=3%2C1,1-2`).selectOnly).toEqual([1, 2, 3]);
    expect(parseMagnet(`magnet:?so=7&xt=urn:btih:${hash}`).selectOnly).toEqual([7]);
    expect(parseMagnet(`magnet:?xt=urn:btih:${hash}`).selectOnly).toBeUndefined();
    expect(parseSelectOnly("5-5")).toEqual([5]);
    expect(parseSelectOnly(`0-${MAX_TORRENT_FILES - 1}`)).toHaveLength(MAX_TORRENT_FILES);
  });

  const badSelections: [string, RegExp][] = [
    ["", /empty/],
    ["1,,2", /empty item/],
    ["1,", /empty item/],
    ["-1", /not an index/],
    ["01", /not an index/],
    ["+1", /not an index/],
    ["a", /not an index/],
    ["1 ,2", /not an index/],
    ["1-2-3", /not an index/],
    ["1.5", /not an index/],
    ["6-4", /runs backwards/],
    [`0-${MAX_TORRENT_FILES}`, /past the most files/],
    ["9999999", /not an index/],
  ];
  for (const [value, message] of badSelections) {
    it(`refuses the selection so=${value}`, () => {
      expect(() => parseSelectOnly(value)).toThrow(message);
      try {
        parseMagnet(`magnet:?xt=urn:btih:${hash}&so=${encodeURIComponent(value)}`);
        expect.unreachable();
      } catch (err) {
        expect((err as TorrentError).code).toBe("invalid_magnet");
      }
    });
  }

  it("refuses two so= selections", () => {
    expect(() => parseMagnet(`magnet:?xt=urn:btih:${hash}&so=1&so=2`)).toThrow(/more than one so=/);
  });

  it("strips control characters from the display name", () => {
    expect(parseMagnet(`magnet:?xt=urn:btih:${hash}&dn=a%00b%0Ac`).name).toBe("abc");
    expect(parseMagnet(`magnet:?xt=urn:btih:${hash}&dn=%0A`).name).toBeUndefined();
  });

  const bad: [string, string, TorrentErrorCode][] = [
    ["not a magnet", "https://example.com/x.torrent", "invalid_magnet"],
    ["no hash", "magnet:?dn=nothing", "invalid_magnet"],
    ["a short hash", `magnet:?xt=urn:btih:${hash.slice(1)}`, "invalid_magnet"],
    ["a non-hex hash", `magnet:?xt=urn:btih:${"z".repeat(40)}`, "invalid_magnet"],
    ["a hash with trailing junk", `magnet:?xt=urn:btih:${hash}zz`, "invalid_magnet"],
    ["bad base32", `magnet:?xt=urn:btih:${"1".repeat(32)}`, "invalid_magnet"],
    ["a malformed escape", `magnet:?xt=urn:btih:${hash}&dn=%E0%A4%A`, "invalid_magnet"],
    ["an oversized link", `magnet:?xt=urn:btih:${hash}&tr=${"x".repeat(20_000)}`, "too_large"],
  ];
  for (const [label, link, code] of bad) {
    it(`refuses ${label}`, () => {
      try {
        parseMagnet(link);
        expect.unreachable();
      } catch (err) {
        expect(err).toBeInstanceOf(TorrentError);
        expect((err as TorrentError).code).toBe(code);
      }
    });
  }
});

describe("resolved metadata", () => {
  it("keeps the info dictionary byte for byte and wraps it into a .torrent the parser reads alike", async () => {
    const info = multiInfo([
      { path: ["a.txt"], length: 20_000 },
      { path: [".pad", "1"], length: 12_768, attr: "p" },
      { path: ["b.txt"], length: 5 },
    ]);
    const original = torrent(info);
    const dict = infoDictionaryOf(original);
    expect(sha1(dict)).toBe(sha1(bencode.encode(info)));
    const rebuilt = torrentFromInfo(dict, {
      trackers: ["http://t1.example/announce", "udp://t2.example:80"],
      webSeeds: ["https://seed.example/"],
    });
    const [a, b] = [await parseTorrentFile(original), await parseTorrentFile(rebuilt)];
    expect(b.infoHash).toBe(a.infoHash);
    expect(b.files).toEqual(a.files);
    expect(b.trackers).toEqual(["http://t1.example/announce", "udp://t2.example:80"]);
    // bencode's own decoder reads it (keys sorted, lists well formed).
    expect(bencode.decode(rebuilt)["url-list"]).toBeDefined();
    // The bare dictionary, without any source, parses too.
    expect((await parseTorrentFile(torrentFromInfo(dict))).infoHash).toBe(a.infoHash);
  });
});

describe("webSeedsOf", () => {
  it("reads BEP 19 url-list, one URL or a list, HTTP(S) only, each once", () => {
    const info = singleInfo();
    expect(webSeedsOf(torrent(info))).toEqual([]);
    expect(webSeedsOf(torrent(info, { "url-list": text("https://seed.example/movie.mkv") }))).toEqual([
      "https://seed.example/movie.mkv",
    ]);
    const list = ["http://a.example/", "ftp://b.example/", "http://a.example/", " https://c.example/x "].map(
      text,
    );
    expect(webSeedsOf(torrent(info, { "url-list": list }))).toEqual([
      "http://a.example/",
      "https://c.example/x",
    ]);
  });

  it("refuses what is not a .torrent", () => {
    expect(() => webSeedsOf(text("i1e"))).toThrow(TorrentError);
  });
});
