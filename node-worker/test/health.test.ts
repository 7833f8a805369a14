// Swarm health against real trackers: the counts a worker stores for the edge
// are the ones the tracker itself reports, over HTTP (the local tracker, with
// an aria2c seeder announced) and over UDP (bittorrent-tracker's own server);
// a tracker on a refused address is never reached, and a silent one is named.
import dgram from "node:dgram";
import type { AddressInfo } from "node:net";
import { type HealthRequest, healthKeys, healthRequest, type SwarmHealth } from "@torreclou/contracts";
import Server from "bittorrent-tracker/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../local/process.ts";
import type { Worker } from "../src/worker.ts";
import { type Env, makeFixture, seedFixtures, setupEnv, startWorker, waitFor } from "./helpers.ts";

let env: Env;
let worker: Worker;
let udpPort: number;
let udpTracker: Server;
const silent = dgram.createSocket("udp4");
let silentPort: number;

beforeAll(async () => {
  env = await setupEnv(17);
  udpPort = await freePort();
  udpTracker = new Server({ http: false, udp: true, ws: false, stats: false });
  // Its IPv6 socket on ::1 (one hostname for both would not bind).
  await new Promise<void>((resolve) =>
    udpTracker.listen(udpPort, { udp: "127.0.0.1", udp6: "::1" } as unknown as string, () => resolve()),
  );
  // Takes datagrams and never answers.
  await new Promise<void>((resolve) => silent.bind(0, "127.0.0.1", resolve));
  silentPort = (silent.address() as AddressInfo).port;
  ({ worker } = await startWorker(env, {
    EGRESS_ALLOW: [`127.0.0.1:${udpPort}`, `127.0.0.1:${silentPort}`].join(","),
    WORKER_SCRAPE_TIMEOUT_MS: "2000",
  }));
});

afterAll(async () => {
  await worker?.shutdown(5000);
  await new Promise<void>((resolve) => udpTracker?.close(() => resolve()));
  silent.close();
  await env?.cleanup();
});

/** Asks as the edge does (one entry on the list, marked pending) and waits for the stored answer. */
async function ask(
  infoHash: string,
  trackers: string[],
): Promise<{ request: HealthRequest; health: SwarmHealth }> {
  const request = await healthRequest(infoHash, trackers);
  await env.redis.set(healthKeys.pending(request.id), "1", "EX", 60);
  await env.redis.lpush(healthKeys.requests, JSON.stringify(request));
  const stored = await waitFor(
    "the worker's answer",
    async () => (await env.redis.get(healthKeys.result(request.id))) ?? undefined,
  );
  return { request, health: JSON.parse(stored) as SwarmHealth };
}

describe("swarm health", () => {
  it("stores what an HTTP and a UDP tracker report, and who reported it", async () => {
    const made = await makeFixture(env, "healthy", [{ path: "healthy", size: 100_000 }]);
    await seedFixtures(env, [made]);
    const udpAnnounce = `udp://127.0.0.1:${udpPort}`;
    const { request, health } = await ask(made.infoHash, [env.tracker.announceUrl, udpAnnounce]);
    const seeders = env.tracker.seeders(made.infoHash).length;
    expect(seeders).toBeGreaterThan(0);
    const port = new URL(env.tracker.announceUrl).port;
    expect(health.trackers).toEqual([
      { tracker: `http://127.0.0.1:${port}`, seeders, leechers: 0, completed: expect.any(Number) },
      // The UDP tracker has never heard of the torrent.
      { tracker: `udp://127.0.0.1:${udpPort}`, seeders: 0, leechers: 0, completed: 0 },
    ]);
    expect(health.seeders).toBe(seeders);
    expect(health.verdict).toBe(`${seeders} seeder${seeders === 1 ? "" : "s"} and 0 leechers reported.`);
    expect(await env.redis.exists(healthKeys.pending(request.id))).toBe(0);
  });

  it("says so when no tracker reports a seeder, naming one that refused and one that never answered", async () => {
    const refusedPort = await freePort();
    const infoHash = "ab".repeat(20);
    const { health } = await ask(infoHash, [
      `udp://127.0.0.1:${udpPort}`,
      `http://127.0.0.1:${refusedPort}/announce?passkey=secret`,
      `udp://127.0.0.1:${silentPort}`,
    ]);
    expect(health.verdict).toBe("No seeders reported by any tracker: the download may never finish.");
    const [udp, refused, quiet] = health.trackers;
    expect(udp).toEqual({ tracker: `udp://127.0.0.1:${udpPort}`, seeders: 0, leechers: 0, completed: 0 });
    expect(refused!.tracker).toBe(`http://127.0.0.1:${refusedPort}`);
    expect(refused!.error).toBe(
      `refused by the egress policy: 127.0.0.1:${refusedPort} is a loopback address`,
    );
    expect(quiet).toEqual({ tracker: `udp://127.0.0.1:${silentPort}`, error: "no answer within 2 s" });
    expect(JSON.stringify(health)).not.toContain("secret");
  });
});
