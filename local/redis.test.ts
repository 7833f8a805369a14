// The local Redis keeps its data across a restart of the stack (append-only file).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { afterAll, expect, it } from "vitest";
import { freePort, portOpen } from "./process.ts";
import { startRedis } from "./redis.ts";

const dataDir = mkdtempSync(join(tmpdir(), "torreclou-redis-"));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

it("keeps data across a restart and frees its port when stopped", async () => {
  const port = await freePort();
  const first = await startRedis({ port, dataDir, log: () => {} });
  const client = new Redis(first.env.REDIS_URL!);
  await client.xadd("torreclou:test", "*", "n", "1");
  await client.set("torreclou:kept", "yes");
  client.disconnect();
  await first.stop();
  expect(await portOpen(port)).toBe(false);

  const second = await startRedis({ port, dataDir, log: () => {} });
  const again = new Redis(second.env.REDIS_URL!);
  try {
    expect(await again.get("torreclou:kept")).toBe("yes");
    expect(await again.xlen("torreclou:test")).toBe(1);
  } finally {
    again.disconnect();
    await second.stop();
  }
});
