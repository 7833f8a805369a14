import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { quietLog } from "../process.ts";
import { parseRate, startWebSeed, type WebSeed } from "./webseed.ts";

describe("web seed", () => {
  let dir: string;
  let seed: WebSeed;
  const bytes = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "torreclou-webseed-"));
    await writeFile(join(dir, "a file.bin"), bytes);
    await writeFile(join(tmpdir(), "outside.bin"), "no");
    seed = await startWebSeed({ root: dir, port: 0, log: quietLog });
  });

  afterAll(async () => {
    await seed?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("answers byte ranges with CORS a browser accepts", async () => {
    const response = await fetch(new URL("a%20file.bin", seed.url), { headers: { range: "bytes=10-19" } });
    expect(response.status).toBe(206);
    expect(response.headers.get("content-range")).toBe("bytes 10-19/1000");
    expect(response.headers.get("access-control-allow-origin")).toBe("*");
    expect([...new Uint8Array(await response.arrayBuffer())]).toEqual([...bytes.subarray(10, 20)]);
    const whole = await fetch(new URL("a%20file.bin", seed.url));
    expect((await whole.arrayBuffer()).byteLength).toBe(1000);
    expect(seed.requests.get("/a file.bin")).toBe(2);
  });

  it("lets webtorrent's preflight through and refuses what is outside its folder or past the end", async () => {
    const preflight = await fetch(new URL("a%20file.bin", seed.url), {
      method: "OPTIONS",
      headers: { "access-control-request-headers": "cache-control,range,user-agent" },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-headers")).toBe("cache-control,range,user-agent");
    expect((await fetch(`${seed.url}..%2Foutside.bin`)).status).toBe(404);
    expect(
      (await fetch(new URL("a%20file.bin", seed.url), { headers: { range: "bytes=1000-" } })).status,
    ).toBe(416);
  });

  it("reads rates as aria2c does", () => {
    expect(parseRate("300K")).toBe(307_200);
    expect(parseRate("2M")).toBe(2 * 1024 * 1024);
    expect(() => parseRate("fast")).toThrow(/300K/);
  });
});
