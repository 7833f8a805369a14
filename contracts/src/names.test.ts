// @ts-expect-error bencode ships no type declarations; it is typed as Bencode below.
import bencodeModule from "bencode";
import { describe, expect, it } from "vitest";
import {
  defaultFolder,
  destinationNameRules,
  exactNames,
  findNameClash,
  type NameRules,
  nameProblem,
  storageKey,
  storagePath,
  UnsafeNameError,
} from "./names.ts";
import { parseTorrentFile, TorrentError } from "./torrent.ts";

const bencode = bencodeModule as { encode(value: unknown): Uint8Array };
const text = (s: string) => new TextEncoder().encode(s);

/** Paths that lossy mappings (trimming, stripping reserved characters, dropping odd segments) merge. */
const lookAlikes = [
  "T/what.bin",
  "T/what?.bin",
  "T/x.bin",
  "T/x.bin ",
  "T/ lead/y.bin",
  "T/lead/y.bin",
  "T/ok/ .. /x.txt",
  "T/ok/x.txt",
  "T/ok/ ./x.txt",
  "T/a#b%20c+d.bin",
  "T/a#b c+d.bin",
  "T/Café.txt", // NFC
  "T/Cafe\u0301.txt", // NFD: S3 and Drive keep the two apart
  "T/CAFÉ.txt",
  "T/日本語/🎬 movie.mkv",
];

/**
 * A destination stricter than S3 and Drive, like a Windows file system or
 * OneDrive: case-insensitive, NFC, reserved characters replaced, trailing
 * dots and spaces dropped.
 */
const windowsLike: NameRules = {
  label: "a Windows-like drive",
  name: (c) =>
    c
      .normalize("NFC")
      .replace(/[<>:"|?*]/g, "_")
      .replace(/[. ]+$/, ""),
  same: (n) => n.toLowerCase(),
};

function multiFileTorrent(paths: string[][]): Uint8Array {
  const length = 100;
  return bencode.encode({
    info: {
      files: paths.map((path) => ({ length, path: path.map(text) })),
      name: text("T"),
      "piece length": 16384,
      pieces: new Uint8Array(20 * Math.ceil((length * paths.length) / 16384)),
    },
  });
}

describe("storage names", () => {
  it("keep every name exactly as the torrent spells it, under the job folder", () => {
    for (const path of lookAlikes) expect(storageKey("job", path)).toBe(`job/${path}`);
    expect(storagePath("Music/2024", "T/ lead/y.bin ")).toEqual(["Music", "2024", "T", " lead", "y.bin "]);
    expect(storageKey("it's", "T/100% + 50#.bin")).toBe("it's/T/100% + 50#.bin");
  });

  it("give every file of a torrent a key of its own, look-alike names included", () => {
    const keys = lookAlikes.map((path) => storageKey("job", path));
    expect(new Set(keys).size).toBe(lookAlikes.length);
    for (const rules of [exactNames, destinationNameRules.s3, destinationNameRules.gdrive])
      expect(findNameClash(lookAlikes, rules)).toBeUndefined();
  });

  it("are one-to-one over random paths the parser accepts", () => {
    // A deterministic generator over an alphabet of the characters lossy mappings trip on.
    const alphabet = ["a", "A", " ", ".", "?", "#", "%", "+", "é", "e\u0301", "日", "🎬", "'", '"', "*", ":"];
    let seed = 42;
    const next = (n: number) => {
      // mulberry32
      seed = (seed + 0x6d2b79f5) >>> 0;
      let t = Math.imul(seed ^ (seed >>> 15), seed | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) % n;
    };
    const name = () => {
      for (;;) {
        const candidate = Array.from({ length: 1 + next(4) }, () => alphabet[next(alphabet.length)]).join("");
        if (nameProblem(candidate) === undefined) return candidate;
      }
    };
    const paths = new Set<string>();
    while (paths.size < 5000) paths.add(["T", ...Array.from({ length: 1 + next(3) }, name)].join("/"));
    // Drop files that are also folders, as the parser does.
    const folders = new Set(
      [...paths].flatMap((p) => p.split("/").map((_, i, a) => a.slice(0, i).join("/"))),
    );
    const files = [...paths].filter((p) => !folders.has(p));
    const keys = new Set(files.map((p) => storageKey("job", p)));
    expect(keys.size).toBe(files.length);
    expect(findNameClash(files, destinationNameRules.s3)).toBeUndefined();
    expect(findNameClash(files, destinationNameRules.gdrive)).toBeUndefined();
  });

  it("refuse a name that has no one-to-one stored form, in the folder or the path", () => {
    const bad = [
      "",
      ".",
      "..",
      "a\u0000b",
      "tab\there",
      "del\u007f",
      "c1\u0085",
      "back\\slash",
      "lone\uD800",
    ];
    for (const component of bad) {
      expect(nameProblem(component), JSON.stringify(component)).toBeDefined();
      expect(() => storageKey("job", `T/${component}/x`), JSON.stringify(component)).toThrow(UnsafeNameError);
      expect(() => storageKey(`job/${component}`, "T/x"), JSON.stringify(component)).toThrow(UnsafeNameError);
    }
    expect(() => storageKey("job", "T//x")).toThrow(/has a name that is empty/);
    expect(() => storageKey("job", "T/a\u0000b")).toThrow(/"T\/a\?b" has a name that contains a control/);
    expect(nameProblem(" .. ")).toBeUndefined();
    expect(nameProblem("😀")).toBeUndefined();
  });
});

describe("defaultFolder", () => {
  it("names the folder after the torrent: a one-file torrent's stem, a multi-file torrent its own top folder", () => {
    expect(defaultFolder([{ path: "ubuntu-24.04.iso" }])).toBe("ubuntu-24.04");
    expect(defaultFolder([{ path: "Movie (2020) . .mkv" }])).toBe("Movie (2020)");
    expect(defaultFolder([{ path: "README" }])).toBe("README");
    expect(defaultFolder([{ path: ".iso" }])).toBe(".iso");
    expect(defaultFolder([{ path: "Show/ep1.mkv" }])).toBe("");
    expect(defaultFolder([{ path: "Show/ep1.mkv" }, { path: "Show/ep2.mkv" }])).toBe("");
    expect(defaultFolder([])).toBeUndefined();
  });

  it('stores a one-file torrent under its stem and a multi-file torrent at the destination\'s folder ("")', () => {
    expect(storageKey(defaultFolder([{ path: "a.iso" }]) ?? "", "a.iso")).toBe("a/a.iso");
    expect(storageKey("", "Show/ep1.mkv")).toBe("Show/ep1.mkv");
    expect(storagePath("", "Show/ep1.mkv", destinationNameRules.onedrive)).toEqual(["Show", "ep1.mkv"]);
  });
});

describe("findNameClash", () => {
  it("finds two files under one name and a file that another needs as a folder", () => {
    expect(findNameClash(["T/a", "T/b", "T/a"], exactNames)).toEqual({
      paths: ["T/a", "T/a"],
      kind: "file",
      name: "T/a",
    });
    expect(findNameClash(["T/a/b", "T/a"], exactNames)).toEqual({
      paths: ["T/a/b", "T/a"],
      kind: "folder",
      name: "T/a",
    });
    expect(findNameClash(["T/a", "T/a/b"], exactNames)).toEqual({
      paths: ["T/a", "T/a/b"],
      kind: "folder",
      name: "T/a",
    });
  });

  it("applies a stricter destination's rules: case, normal form, reserved characters, trailing dots", () => {
    const cases: [string, string][] = [
      ["T/x.bin", "T/x.bin "],
      ["T/what.bin", "T/WHAT.bin"],
      ["T/a:b.txt", "T/a_b.txt"],
      ["T/what?.bin", "T/what_.bin"],
      ["T/Café.txt", "T/Cafe\u0301.txt"],
      ["T/dir./x", "T/dir/x"],
    ];
    for (const [first, second] of cases) {
      const clash = findNameClash(["T/other", first, "T/more", second], windowsLike);
      expect(clash?.paths, `${first} / ${second}`).toEqual([first, second]);
      expect(clash?.kind).toBe("file");
      expect(findNameClash([first, second], exactNames)).toBeUndefined();
    }
    // Folders that merge are fine as long as their files do not.
    expect(findNameClash(["T/Dir/a", "T/dir/b"], windowsLike)).toBeUndefined();
    expect(findNameClash(["T/Dir/a", "T/dir "], windowsLike)).toEqual({
      paths: ["T/Dir/a", "T/dir "],
      kind: "folder",
      name: "T/dir",
    });
  });

  it("cannot be fooled by a rule that puts a slash inside a name", () => {
    const slashy: NameRules = { label: "slashy", name: (c) => c.replace(/_/g, "/"), same: (n) => n };
    expect(findNameClash(["T/a_b", "T/a/b"], slashy)).toBeUndefined();
  });
});

describe("parseTorrentFile and destination names", () => {
  it("accepts the look-alike names and lists them exactly", async () => {
    const paths = lookAlikes.map((p) => p.split("/").slice(1));
    const info = await parseTorrentFile(multiFileTorrent(paths));
    expect(info.files.map((f) => f.path)).toEqual(lookAlikes);
  });

  it("refuses, naming both files, a torrent a destination's rules would store two files of under one name", async () => {
    const bytes = multiFileTorrent([["keep.txt"], ["x.bin"], ["x.bin "]]);
    await expect(parseTorrentFile(bytes)).resolves.toBeDefined();
    const refused = await parseTorrentFile(bytes, { names: [windowsLike] }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(TorrentError);
    const error = refused as TorrentError;
    expect(error.code).toBe("name_clash");
    expect(error.message).toBe(
      'The torrent\'s files "T/x.bin" and "T/x.bin " would both be stored as "T/x.bin" in a Windows-like drive.',
    );
    expect(error.details).toEqual({ paths: ["T/x.bin", "T/x.bin "], destination: "a Windows-like drive" });
  });
});
