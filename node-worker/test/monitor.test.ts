// The tests' MONITOR reader: lines parsed as redis-server writes them, and a
// start on a server busy with another client's commands, where ioredis's own
// monitor() can fail its connection.
import { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Monitored, monitorRedis, parseLine } from "./monitor.ts";

let url: URL;
let busy: Redis;

beforeAll(async () => {
  if (!process.env.REDIS_URL) throw new Error("REDIS_URL must be set (run the suite with npm test)");
  url = new URL(process.env.REDIS_URL);
  url.pathname = "/26";
  busy = new Redis(url.toString());
  await busy.flushdb();
});

afterAll(() => busy?.disconnect());

it("parses a line's database, source and arguments, escapes undone", () => {
  expect(parseLine('+1796032725.713061 [19 127.0.0.1:51276] "del" "torreclou:webhooks:due"')).toEqual({
    database: "19",
    source: "127.0.0.1:51276",
    args: ["del", "torreclou:webhooks:due"],
  });
  expect(parseLine('+1796032725.713061 [3 lua] "SET" "a \\"b\\"\\\\" "\\x00\\xff\\r\\n"')).toEqual({
    database: "3",
    source: "lua",
    args: ["SET", 'a "b"\\', "\x00\xff\r\n"],
  });
  expect(parseLine("+OK")).toBeUndefined();
});

it("starts on a server busy with another client's commands and sees each of them", async () => {
  let running = true;
  let sent = 0;
  const traffic = (async () => {
    while (running) {
      const pipeline = busy.pipeline();
      for (let i = 0; i < 50; i++) pipeline.incr("monitor-test:n");
      await pipeline.exec();
      sent += 50;
    }
  })();
  try {
    for (let start = 0; start < 30; start++) {
      const seen: Monitored[] = [];
      let marked: () => void = () => {};
      const marker = new Promise<void>((done) => {
        marked = done;
      });
      const monitor = await monitorRedis(url.toString(), (command) => {
        if (command.args[0] === "echo" && command.args[1] === `mark-${start}`) marked();
        else if (command.database === "26") seen.push(command);
      });
      const from = sent;
      // Every command sent after the start (and before the marker) reaches the reader.
      while (sent < from + 200) await new Promise((next) => setImmediate(next));
      await busy.echo(`mark-${start}`);
      await marker;
      monitor.close();
      expect(seen.length).toBeGreaterThanOrEqual(100);
      expect(seen.every((c) => c.args[0] === "incr" && c.args[1] === "monitor-test:n")).toBe(true);
    }
  } finally {
    running = false;
    await traffic;
  }
});
