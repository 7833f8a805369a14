import { healthKeys, healthRequest } from "@torreclou/contracts";
import { describe, expect, it } from "vitest";
import { redis } from "../../test/fixtures/db.ts";
import { send } from "../../test/fixtures/jobs.ts";
import { signIn } from "../../test/helpers.ts";

const infoHash = () =>
  [...crypto.getRandomValues(new Uint8Array(20))].map((b) => b.toString(16).padStart(2, "0")).join("");

describe("POST /api/torrents/health", () => {
  it("queues one scrape for the fleet while pending, then answers from the stored result", async () => {
    const user = await signIn();
    const hash = infoHash();
    const trackers = ["udp://tracker.example.org:1337/announce", "https://t.example.net/announce?passkey=x"];
    const request = await healthRequest(hash, trackers);
    const before = await redis().llen(healthKeys.requests);

    const first = await send(user.cookie, "POST", "/api/torrents/health", {
      infoHash: hash.toUpperCase(),
      trackers,
    });
    expect(first.status).toBe(202);
    expect(await first.json()).toEqual({ state: "pending" });
    const again = await send(user.cookie, "POST", "/api/torrents/health", {
      infoHash: hash,
      trackers: [...trackers].reverse(),
    });
    expect(again.status).toBe(202);
    // One request on the list for both asks (same hash, same trackers in any order).
    expect(await redis().llen(healthKeys.requests)).toBe(before + 1);
    const queued = (await redis().lrange<Record<string, unknown>>(healthKeys.requests, 0, 0))[0];
    expect(queued).toEqual(request);

    const health = {
      checkedAt: new Date().toISOString(),
      trackers: [{ tracker: "udp://tracker.example.org:1337", seeders: 3, leechers: 1, completed: 9 }],
      seeders: 3,
      verdict: "3 seeders and 1 leecher reported.",
    };
    await redis().set(healthKeys.result(request.id), JSON.stringify(health));
    const done = await send(user.cookie, "POST", "/api/torrents/health", { infoHash: hash, trackers });
    expect(done.status).toBe(200);
    expect(await done.json()).toEqual({ state: "done", health });
  });

  it("refuses a bad info hash, no trackers, too many, or a scheme no tracker speaks, queueing nothing", async () => {
    const user = await signIn();
    const before = await redis().llen(healthKeys.requests);
    const bodies = [
      { infoHash: "xyz", trackers: ["udp://t.example.org:1/announce"] },
      { infoHash: infoHash(), trackers: [] },
      { infoHash: infoHash(), trackers: Array.from({ length: 11 }, (_, i) => `udp://t${i}.example.org:1`) },
      { infoHash: infoHash(), trackers: ["ws://t.example.org/announce"] },
      { infoHash: infoHash(), trackers: ["file:///etc/passwd"] },
    ];
    for (const body of bodies) {
      const response = await send(user.cookie, "POST", "/api/torrents/health", body);
      expect(response.status, JSON.stringify(body)).toBe(400);
    }
    expect(await redis().llen(healthKeys.requests)).toBe(before);
  });
});
