// A user aiming a worker at the network it runs in: magnets, .torrents and
// storage profiles whose trackers, web seeds, sources, peers and endpoints
// point at listeners on loopback — by IP, and by a name that resolves to
// loopback only when the worker connects (DNS rebinding). Every listener must
// receive nothing; every job must end with a message naming what was refused.
import { randomBytes } from "node:crypto";
import dgram from "node:dgram";
import type { LookupAddress, LookupOptions } from "node:dns";
import dns from "node:dns";
import { once } from "node:events";
import net from "node:net";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { magnetLink, makeTorrent } from "../../local/seeder/index.ts";
import { loadConfig } from "../src/config.ts";
import { createMetrics } from "../src/metrics.ts";
import { Worker } from "../src/worker.ts";
import {
  createProfile,
  type Env,
  expectStoredExactly,
  makeFixture,
  seedFixtures,
  setupEnv,
  submitJob,
  waitForState,
  workerEnv,
} from "./helpers.ts";

const REBIND = "rebind.example.com";

interface Listener {
  port: number;
  connections: number;
  datagrams: number;
  close(): void;
}

/** A TCP server and a UDP socket on one loopback port, counting whatever reaches them. */
async function listen(): Promise<Listener> {
  for (;;) {
    const server = net.createServer((socket) => {
      listener.connections++;
      socket.destroy();
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const port = (server.address() as net.AddressInfo).port;
    const udp = dgram.createSocket("udp4");
    const bound = await new Promise<boolean>((resolve) => {
      udp.once("error", () => resolve(false));
      udp.bind(port, "127.0.0.1", () => resolve(true));
    });
    const listener: Listener = {
      port,
      connections: 0,
      datagrams: 0,
      close: () => {
        server.close();
        if (bound) udp.close();
      },
    };
    if (!bound) {
      server.close();
      continue; // the UDP port was taken: try another
    }
    udp.on("message", () => listener.datagrams++);
    return listener;
  }
}

/** The system resolver, except that the attacker's name resolves to loopback. */
function rebindingResolver(
  hostname: string,
  options: LookupOptions,
  callback: (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
): void {
  if (hostname !== REBIND) {
    dns.lookup(hostname, { ...options, all: options.all ?? false }, callback as never);
    return;
  }
  if (options.all) callback(null, [{ address: "127.0.0.1", family: 4 }]);
  else callback(null, "127.0.0.1", 4);
}

let env: Env;
let worker: Worker;
const listeners: Record<string, Listener> = {};
const refusals: { host: string; port: number; reason: string }[] = [];

const vectors = [
  "magnet tr http",
  "magnet tr udp",
  "magnet ws",
  "magnet xs",
  "magnet as",
  "magnet x.pe",
  "torrent announce-list",
  "torrent announce-list by name",
  "torrent url-list",
  "tracker peer",
  "s3 endpoint",
  "s3 endpoint by name",
] as const;

beforeAll(async () => {
  env = await setupEnv(9);
  for (const vector of vectors) listeners[vector] = await listen();
  // The worker's debug log records each refusal (host and port only).
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split("\n").filter(Boolean)) {
        const entry = JSON.parse(line) as { msg?: string; host?: string; port?: number; reason?: string };
        if (entry.msg === "egress refused")
          refusals.push({ host: entry.host!, port: entry.port!, reason: entry.reason! });
      }
      done();
    },
  });
  const config = loadConfig(workerEnv(env, { WORKER_CONCURRENCY: "8" }));
  worker = new Worker({
    config,
    db: env.db,
    log: pino({ level: "debug" }, sink),
    metrics: createMetrics(),
    resolver: rebindingResolver,
  });
  await worker.start();
});

afterAll(async () => {
  await worker?.shutdown(5000);
  for (const l of Object.values(listeners)) l.close();
  await env?.cleanup();
});

const port = (vector: (typeof vectors)[number]) => listeners[vector]!.port;

describe("egress policy against a hostile user", () => {
  it("reaches no listener through any vector, and every job says what was refused", async () => {
    const profileId = await createProfile(env);

    // A magnet whose only sources are on loopback.
    const lonely = await makeFixture(env, `egress-magnet-${randomBytes(3).toString("hex")}`, [
      { path: "a.bin", size: 64 * 1024 },
      { path: "b.bin", size: 64 * 1024 },
    ]);
    const magnet = [
      magnetLink(lonely.infoHash, "egress", [
        `http://127.0.0.1:${port("magnet tr http")}/announce`,
        `udp://127.0.0.1:${port("magnet tr udp")}/announce`,
      ]),
      `xs=${encodeURIComponent(`http://127.0.0.1:${port("magnet xs")}/x.torrent`)}`,
      `x.pe=127.0.0.1:${port("magnet x.pe")}`,
    ].join("&");
    const magnetJob = await submitJob(env, { made: { ...lonely, magnet }, profileId, magnet: true });

    // A magnet a real seeder serves, with web seeds on loopback: they are tried once the
    // metadata is known, refused, and the job completes from the seeder all the same.
    const shared = await makeFixture(env, `egress-shared-${randomBytes(3).toString("hex")}`, [
      { path: "g.bin", size: 256 * 1024 },
      { path: "h.bin", size: 256 * 1024 },
    ]);
    await seedFixtures(env, [shared]);
    const withSeeds = [
      shared.magnet,
      `ws=${encodeURIComponent(`http://127.0.0.1:${port("magnet ws")}/seed/`)}`,
      `as=${encodeURIComponent(`http://127.0.0.1:${port("magnet as")}/as/`)}`,
    ].join("&");
    const seededJob = await submitJob(env, {
      made: { ...shared, magnet: withSeeds },
      profileId,
      magnet: true,
      targetFolder: "seeded",
    });

    // A .torrent whose trackers and web seeds are on loopback.
    const seeded = await makeTorrent({
      dir: `${env.dataDir}/hostile`,
      name: `egress-torrent-${randomBytes(3).toString("hex")}`,
      files: [
        { path: "c.bin", size: 64 * 1024 },
        { path: "d.bin", size: 64 * 1024 },
      ],
      announce: [
        `http://127.0.0.1:${port("torrent announce-list")}/announce`,
        `udp://127.0.0.1:${port("torrent announce-list")}/announce`,
        `http://${REBIND}:${port("torrent announce-list by name")}/announce`,
      ],
      urlList: [`http://127.0.0.1:${port("torrent url-list")}/seed/`],
    });
    const torrentJob = await submitJob(env, { made: seeded, profileId });

    // An allowed tracker that hands back a peer on loopback.
    const handed = await makeFixture(env, `egress-peer-${randomBytes(3).toString("hex")}`, [
      { path: "e.bin", size: 64 * 1024 },
      { path: "f.bin", size: 64 * 1024 },
    ]);
    await announcePeer(env.tracker.announceUrl, handed.infoHash, port("tracker peer"));
    const peerJob = await submitJob(env, { made: handed, profileId });

    // Storage profiles aimed at loopback, by IP and by a rebinding name.
    const s3Jobs = [];
    for (const [vector, host] of [
      ["s3 endpoint", "127.0.0.1"],
      ["s3 endpoint by name", REBIND],
    ] as const) {
      const hostile = await createProfile(env, {
        endpoint: `http://${host}:${port(vector)}`,
        name: vector,
        allowed: false,
      });
      s3Jobs.push({ vector, host, job: await submitJob(env, { made: handed, profileId: hostile }) });
    }

    const ended = async (id: string) => waitForState(env, id, ["failed", "completed"]);
    const magnetEnd = await ended(magnetJob.id);
    const torrentEnd = await ended(torrentJob.id);
    const peerEnd = await ended(peerJob.id);
    const seededEnd = await ended(seededJob.id);
    expect(seededEnd.state).toBe("completed");
    await expectStoredExactly(env, shared, "seeded");
    for (const { vector, host, job } of s3Jobs) {
      const end = await ended(job.id);
      expect(end.state).toBe("failed");
      expect(end.failureReason).toContain(
        `${host === REBIND ? `${REBIND} (127.0.0.1)` : host}:${port(vector)}`,
      );
      expect(end.failureReason).toContain("refused by the egress policy: it is a loopback address");
    }
    expect(magnetEnd.state).toBe("failed");
    expect(magnetEnd.failureReason).toMatch(
      /No peers shared this magnet's metadata.*refused by the egress policy/,
    );
    expect(torrentEnd.state).toBe("failed");
    expect(torrentEnd.failureReason).toMatch(
      /No peers are sharing this torrent.*refused by the egress policy/,
    );
    expect(peerEnd.state).toBe("failed");
    expect(peerEnd.failureReason).toContain(`127.0.0.1:${port("tracker peer")}: a loopback address`);

    // Nothing reached any listener, and each vector was tried and refused.
    for (const vector of vectors) {
      const l = listeners[vector]!;
      expect({ vector, connections: l.connections, datagrams: l.datagrams }).toEqual({
        vector,
        connections: 0,
        datagrams: 0,
      });
      expect(
        refusals.some((r) => r.port === l.port),
        `no refusal recorded for ${vector} (port ${l.port})`,
      ).toBe(true);
    }
    expect(refusals.some((r) => r.host === REBIND)).toBe(true);
    // The refusal log names hosts and ports, never a URL path or query.
    expect(refusals.every((r) => !`${r.host}`.includes("/"))).toBe(true);
  });
});

/** Announces a peer at 127.0.0.1:`peerPort` to the tracker (as a peer would, from outside any job). */
async function announcePeer(announceUrl: string, infoHashHex: string, peerPort: number): Promise<void> {
  const percent = (hex: string) => hex.replace(/../g, "%$&");
  const url =
    `${announceUrl}?info_hash=${percent(infoHashHex)}&peer_id=${percent(randomBytes(20).toString("hex"))}` +
    `&port=${peerPort}&uploaded=0&downloaded=0&left=0&event=started&compact=1`;
  const response = await fetch(url);
  expect(response.ok).toBe(true);
  await response.arrayBuffer();
}
