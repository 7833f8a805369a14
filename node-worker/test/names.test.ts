// Names end to end with real parts (aria2c and a webtorrent peer over a
// loopback tracker, Postgres, Redis, the local S3): look-alike file names each
// get an object of their own, byte for byte; a magnet's metadata goes through
// the .torrent parser, so padding files are not stored and a path with a NUL
// byte fails the job once, with the parser's message.
import { createHash } from "node:crypto";
import { once } from "node:events";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseTorrentFile, queue, TorrentError } from "@torreclou/contracts";
import bencode from "bencode";
import MemoryChunkStore from "memory-chunk-store";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebTorrent from "webtorrent";
import { type MadeTorrent, magnetLink, readTorrent } from "../../local/seeder/index.ts";
import type { Worker } from "../src/worker.ts";
import {
  createProfile,
  type Env,
  expectStoredExactly,
  filesOf,
  jobRow,
  listKeys,
  makeFixture,
  seedFixtures,
  setupEnv,
  sha256File,
  sha256Object,
  startWorker,
  submitJob,
  transitionsOf,
  waitFor,
  waitForState,
} from "./helpers.ts";

let env: Env;
let worker: Worker;
let profileId: string;
const peers: WebTorrent[] = [];

beforeAll(async () => {
  env = await setupEnv(14);
  profileId = await createProfile(env);
  ({ worker } = await startWorker(env));
});

afterAll(async () => {
  await worker?.shutdown(5000);
  for (const peer of peers) await new Promise<void>((done) => peer.destroy(() => done()));
  await env?.cleanup();
});

type BDict = Map<string, unknown> | Record<string, unknown>;

/** A .torrent written next to the seed content, as a MadeTorrent the helpers take. */
async function madeFrom(name: string, bytes: Uint8Array): Promise<MadeTorrent> {
  const torrentPath = join(env.dataDir, "seed", `${name}.torrent`);
  await writeFile(torrentPath, bytes);
  const { infoHash } = readTorrent(bytes);
  return {
    torrentPath,
    infoHash,
    magnet: magnetLink(infoHash, name, [env.tracker.announceUrl]),
    root: join(env.dataDir, "seed", name),
  };
}

describe("names end to end", () => {
  it("stores look-alike names from an aria2c seeder under keys of their own, byte-identical", async () => {
    const made = await makeFixture(env, "Looks", [
      { path: "what.bin", size: 70_001 },
      { path: "what?.bin", size: 70_002 },
      { path: "x.bin", size: 70_003 },
      { path: "x.bin ", size: 70_004 },
      { path: " lead/y.bin", size: 70_005 },
      { path: "ok/ .. /x.txt", content: "inside a folder named space-dot-dot-space\n" },
      { path: "ok/x.txt", content: "inside ok\n" },
    ]);
    // The edge's parser takes the torrent as it is, every name unchanged.
    const info = await parseTorrentFile(await readFile(made.torrentPath));
    expect(info.files.map((f) => f.path)).toEqual([
      "Looks/what.bin",
      "Looks/what?.bin",
      "Looks/x.bin",
      "Looks/x.bin ",
      "Looks/ lead/y.bin",
      "Looks/ok/ .. /x.txt",
      "Looks/ok/x.txt",
    ]);
    await seedFixtures(env, [made]);
    const job = await submitJob(env, { made, profileId, targetFolder: "Names" });
    const done = await waitForState(env, job.id, ["completed", "failed"]);
    expect(done.failureReason).toBeNull();
    // Exactly one object per file at `Names/<torrent path>`, each with the seeder's bytes.
    const keys = await expectStoredExactly(env, made, "Names");
    expect(keys).toHaveLength(7);
    const files = await filesOf(env, job.id);
    expect(new Set(files.map((f) => f.cloudId)).size).toBe(7);
    expect(files.map((f) => [f.state, f.cloudId])).toEqual(files.map((f) => ["uploaded", `Names/${f.path}`]));
  });

  it("resolves a magnet with BEP 47 padding files and stores only the real files", async () => {
    const fixture = await makeFixture(
      env,
      "Padded",
      [
        { path: "a.bin", size: 20_000 },
        { path: ".pad/12768", content: new Uint8Array(12_768) },
        { path: "b.bin", size: 30_000 },
        { path: ".pad/2768", content: new Uint8Array(2_768) },
        { path: "c.txt", content: "after the padding\n" },
      ],
      16_384,
    );
    // Mark the padding files as BEP 47 does (`attr: "p"`); aria2c seeds them as the zeros they are.
    const torrent = bencode.decode(await readFile(fixture.torrentPath)) as { info: { files: BDict[] } };
    for (const file of torrent.info.files as { path: Uint8Array[]; attr?: string }[]) {
      if (Buffer.from(file.path[0]!).toString() === ".pad") file.attr = "p";
    }
    const made = await madeFrom("Padded-bep47", bencode.encode(torrent));
    made.root = fixture.root;
    await seedFixtures(env, [made]);

    const job = await submitJob(env, { made, profileId, magnet: true, targetFolder: "padded-job" });
    const done = await waitForState(env, job.id, ["completed", "failed"]);
    expect(done.failureReason).toBeNull();
    const files = await filesOf(env, job.id);
    expect(files.map((f) => [f.fileIndex, f.path, f.size])).toEqual([
      [0, "Padded/a.bin", 20_000],
      [2, "Padded/b.bin", 30_000],
      [4, "Padded/c.txt", 18],
    ]);
    expect(done.bytesTotal).toBe(50_018);
    const keys = await listKeys(env.s3, env.bucket, "padded-job/");
    expect(keys).toEqual(files.map((f) => `padded-job/${f.path}`));
    for (const f of files) {
      const local = await sha256File(join(env.dataDir, "seed", ...f.path.split("/")));
      expect(await sha256Object(env.s3, env.bucket, `padded-job/${f.path}`), f.path).toBe(local);
    }
  });

  it("fails a magnet whose metadata has a NUL byte in a path once, with the parser's message", async () => {
    const content = [Buffer.from("a fine file\n"), Buffer.from("a file with NUL in its name\n")];
    const torrent = bencode.encode({
      announce: env.tracker.announceUrl,
      info: {
        files: [
          { length: content[0]!.length, path: ["fine.txt"] },
          { length: content[1]!.length, path: ["bad\u0000name.txt"] },
        ],
        name: "Nul",
        "piece length": 16_384,
        pieces: createHash("sha1").update(Buffer.concat(content)).digest(),
      },
    });
    const refused = await parseTorrentFile(torrent).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(TorrentError);
    const message = (refused as TorrentError).message;
    expect(message).toBe("The torrent's file #1 path contains a control character.");

    // A peer that has the metadata and no data at all: ut_metadata needs no pieces.
    // It listens on a port the workers may reach (the egress policy refuses the rest of loopback).
    const peer = new WebTorrent({
      dht: false,
      lsd: false,
      natUpnp: false,
      natPmp: false,
      utp: false,
      torrentPort: env.peerPorts.at(-1),
    });
    peers.push(peer);
    const served = peer.add(torrent, { store: MemoryChunkStore, announce: [env.tracker.announceUrl] });
    await once(served, "trackerAnnounce");
    const made = await madeFrom("Nul", torrent);

    const job = await submitJob(env, { made, profileId, magnet: true });
    const failed = await waitForState(env, job.id, ["failed", "completed"]);
    expect(failed.failureReason).toBe(message);
    // Its queue entry is acknowledged: no worker will take it up again.
    await waitFor("the job's queue entry to be acknowledged", async () => {
      const pending = (await env.redis.xpending(queue.stream, queue.group)) as [number, ...unknown[]];
      return pending[0] === 0;
    });
    const history = await transitionsOf(env, job.id);
    expect(history.map((t) => [t.toState, t.attempt])).toEqual([
      ["queued", 0],
      ["resolving", 1],
      ["failed", 1],
    ]);
    expect((await jobRow(env, job.id)).attempt).toBe(1);
    expect(await filesOf(env, job.id)).toEqual([]);
    expect(await listKeys(env.s3, env.bucket, `${job.id}/`)).toEqual([]);
  });
});
