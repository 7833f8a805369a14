// Drives the local Upstash REST server with the real @upstash/redis client
// against the redis-server named by REDIS_URL.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { Redis as Upstash } from "@upstash/redis";
import { Redis as IORedis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, type Service } from "../process.ts";
import { maxBodyBytes, startUpstashServer } from "./server.ts";

const redisUrl = process.env.REDIS_URL;
const token = "test-token";

let service: Service;
let url: string;
let direct: IORedis;

/** A key of its own for each use, so tests never see each other's data. */
const key = (name: string) => `upstash-test:${randomUUID()}:${name}`;

function client(
  options: { responseEncoding?: false; automaticDeserialization?: boolean; token?: string } = {},
) {
  return new Upstash({
    url,
    token: options.token ?? token,
    enableTelemetry: false,
    retry: false,
    ...(options.responseEncoding === false ? { responseEncoding: false } : {}),
    ...(options.automaticDeserialization === false ? { automaticDeserialization: false } : {}),
  });
}

/** A raw REST call, for what the client hides (status codes, headers, bytes). */
function rest(path: string, body?: unknown, headers: Record<string, string> = {}) {
  return fetch(`${url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, ...headers },
    body:
      body === undefined
        ? undefined
        : typeof body === "string" || body instanceof Uint8Array
          ? body
          : JSON.stringify(body),
  });
}

beforeAll(async () => {
  if (!redisUrl) throw new Error("REDIS_URL must point at a redis-server for these tests");
  service = await startUpstashServer({ port: await freePort(), redisUrl, token });
  url = service.env.UPSTASH_REDIS_REST_URL!;
  direct = new IORedis(redisUrl);
});

afterAll(async () => {
  direct?.disconnect();
  await service?.stop();
});

describe("the service", () => {
  it("hands out the client's environment", () => {
    expect(service.env.UPSTASH_REDIS_REST_URL).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(service.env.UPSTASH_REDIS_REST_TOKEN).toBe(token);
    expect(service.urls?.length).toBe(1);
  });
});

describe("values through the client", () => {
  const values = ["plain", "héllo wörld ✓ 🚀", "aGVsbG8=", "OK", "", "line\nbreak"];

  it("round-trips strings with base64 responses (the client's default)", async () => {
    const redis = client();
    for (const value of values) {
      const k = key("b64");
      await redis.set(k, value);
      expect(await redis.get(k)).toBe(value);
    }
  });

  it("round-trips strings with plain responses", async () => {
    const redis = client({ responseEncoding: false });
    for (const value of values) {
      const k = key("plain");
      await redis.set(k, value);
      expect(await redis.get(k)).toBe(value);
    }
  });

  it("stores a value that looks like base64 unchanged in Redis", async () => {
    const k = key("looks-b64");
    await client().set(k, "aGVsbG8=");
    expect(await direct.get(k)).toBe("aGVsbG8=");
    expect(await client({ automaticDeserialization: false }).get(k)).toBe("aGVsbG8=");
  });

  it("serializes JSON objects and numbers automatically", async () => {
    const redis = client();
    const k = key("json");
    const doc = { name: "torrent", size: 1024, tags: ["a", "b"], nested: { ok: true } };
    await redis.set(k, doc);
    expect(await direct.get(k)).toBe(JSON.stringify(doc));
    expect(await redis.get(k)).toEqual(doc);
    expect(await client({ responseEncoding: false }).get(k)).toEqual(doc);
    expect(await client({ automaticDeserialization: false }).get(k)).toBe(JSON.stringify(doc));

    const h = key("hash");
    await redis.hset(h, { a: 1, b: "two", c: { x: 1 } });
    expect(await redis.hgetall(h)).toEqual({ a: 1, b: "two", c: { x: 1 } });
    expect(await redis.incrby(key("n"), 5)).toBe(5);
  });

  it("keeps integers as numbers, nil as null and arrays as arrays", async () => {
    const redis = client();
    const list = key("list");
    expect(await redis.rpush(list, "x", "y", "z")).toBe(3);
    expect(await redis.lrange(list, 0, -1)).toEqual(["x", "y", "z"]);
    expect(await redis.get(key("missing"))).toBeNull();
    expect(await redis.mget(list, key("missing"))).toEqual([null, null]);
  });

  it("supports SET NX PX", async () => {
    const redis = client();
    const k = key("lock");
    expect(await redis.set(k, "owner-1", { nx: true, px: 5_000 })).toBe("OK");
    expect(await redis.set(k, "owner-2", { nx: true, px: 5_000 })).toBeNull();
    expect(await redis.get(k)).toBe("owner-1");
    const ttl = await redis.pttl(k);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(5_000);
  });
});

describe("binary values", () => {
  const bytes = Buffer.concat([Buffer.from([0, 255, 254, 0x80, 0xc3, 0x28, 10, 13]), randomBytes(4096)]);

  it("returns raw bytes exactly in base64 mode", async () => {
    const k = key("bin");
    await direct.set(k, bytes);
    const res = await rest("/", ["GET", k], { "Upstash-Encoding": "base64" });
    const body = (await res.json()) as { result: string };
    expect(Buffer.from(body.result, "base64").equals(bytes)).toBe(true);

    const list = key("binlist");
    await direct.rpush(list, bytes, Buffer.from("text"));
    const range = await rest("/", ["LRANGE", list, 0, -1], { "Upstash-Encoding": "base64" });
    const items = ((await range.json()) as { result: string[] }).result.map((s) => Buffer.from(s, "base64"));
    expect(items[0]?.equals(bytes)).toBe(true);
    expect(items[1]?.toString()).toBe("text");
  });

  it("stores a binary POST body of the path form byte for byte", async () => {
    const k = key("bin-path");
    const res = await rest(`/set/${encodeURIComponent(k)}?EX=100`, new Uint8Array(bytes));
    expect(await res.json()).toEqual({ result: "OK" });
    expect((await direct.getBuffer(k))?.equals(bytes)).toBe(true);
    expect(await direct.ttl(k)).toBeGreaterThan(90);
  });
});

describe("pipeline and transactions", () => {
  it("runs a pipeline; one failing command does not stop the others", async () => {
    const redis = client();
    const [a, b] = [key("a"), key("b")];
    await redis.set(b, "not a number");
    const results = await redis.pipeline().set(a, "1").incr(a).incr(b).get(a).exec({ keepErrors: true });
    expect(results.map((r) => r.result)).toEqual(["OK", 2, undefined, 2]);
    expect(results[2]?.error).toMatch(/^ERR value is not an integer/);
    await expect(redis.pipeline().incr(b).get(a).exec()).rejects.toThrow(/Command 1 \[ incr \] failed: ERR/);
  });

  it("runs a pipeline with plain responses", async () => {
    const redis = client({ responseEncoding: false });
    const a = key("a");
    expect(await redis.pipeline().set(a, "aGVsbG8=").get(a).exec()).toEqual(["OK", "aGVsbG8="]);
  });

  it("runs multi() as one MULTI/EXEC transaction", async () => {
    const redis = client();
    const [a, h] = [key("a"), key("h")];
    const results = await redis.multi().set(a, "v").incr(key("n")).hset(h, { f: "x" }).get(a).exec();
    expect(results).toEqual(["OK", 1, 1, "v"]);
  });

  it("reports a command failing inside a transaction in its place, after running the rest", async () => {
    const redis = client();
    const [a, b] = [key("a"), key("b")];
    await redis.set(b, "text");
    const results = await redis.multi().set(a, "1").incr(b).incr(a).exec({ keepErrors: true });
    expect(results.map((r) => r.result)).toEqual(["OK", undefined, 2]);
    expect(results[1]?.error).toMatch(/^ERR value is not an integer/);
  });

  it("discards a transaction whose command Redis refuses to queue, with one error", async () => {
    const k = key("never");
    const res = await rest("/multi-exec", [
      ["SET", k, "v"],
      ["GET", k, "extra", "args"],
    ]);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toMatch(/^EXECABORT/);
    expect(await direct.exists(k)).toBe(0);
    // HGET with one argument on purpose: Redis refuses to queue it, which aborts the transaction.
    // @ts-expect-error the client's types forbid the wrong arity this test needs
    const wrongArity = client().multi().set(k, "v").hget(k);
    await expect(wrongArity.exec()).rejects.toThrow(/EXECABORT/);
  });

  it("refuses connection-state commands that would leak into other requests", async () => {
    for (const command of [["MULTI"], ["EXEC"], ["SELECT", "1"], ["SUBSCRIBE", "x"]]) {
      const res = await rest("/", command);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: string }).error).toMatch(/not supported over REST/);
    }
    expect((await rest("/multi-exec", [["SET", key("x"), "1"], ["EXEC"]])).status).toBe(400);
  });
});

describe("streams", () => {
  it("XADD, XRANGE, XGROUP CREATE MKSTREAM, XREADGROUP, XACK, XAUTOCLAIM", async () => {
    const redis = client();
    const stream = key("stream");
    const group = "workers";
    expect(await redis.xgroup(stream, { type: "CREATE", group, id: "$", options: { MKSTREAM: true } })).toBe(
      "OK",
    );

    const id1 = await redis.xadd(stream, "*", { job: "alpha", payload: { size: 3 } });
    const id2 = await redis.xadd(stream, "*", { job: "beta" });
    expect(id1).toMatch(/^\d+-\d+$/);

    expect(await redis.xrange(stream, "-", "+")).toEqual({
      [id1]: { job: "alpha", payload: { size: 3 } },
      [id2]: { job: "beta" },
    });

    const read = await redis.xreadgroup(group, "consumer-1", stream, ">", { count: 10 });
    expect(read).toEqual([
      [
        stream,
        [
          [id1, ["job", "alpha", "payload", { size: 3 }]],
          [id2, ["job", "beta"]],
        ],
      ],
    ]);
    expect(await redis.xack(stream, group, id1)).toBe(1);

    // beta is still pending for consumer-1; another consumer takes it over.
    const claimed = await redis.xautoclaim(stream, group, "consumer-2", 0, "0-0", { count: 10 });
    expect(claimed[0]).toBe("0-0");
    expect(claimed[1]).toEqual([[id2, ["job", "beta"]]]);
    expect(claimed[2]).toEqual([]);

    const nothingNew = await redis.xreadgroup(group, "consumer-1", stream, ">", { count: 10 });
    expect(nothingNew).toBeNull();
  });

  it("keeps nested stream replies intact with plain responses", async () => {
    const redis = client({ responseEncoding: false, automaticDeserialization: false });
    const stream = key("stream");
    const id = await redis.xadd(stream, "*", { f: "v" });
    // Without deserialization the client hands back the reply as it came.
    expect(await redis.xrange(stream, "-", "+")).toEqual([[id, ["f", "v"]]]);
    const res = await rest("/", ["XRANGE", stream, "-", "+"]);
    expect(await res.json()).toEqual({ result: [[id, ["f", "v"]]] });
  });
});

describe("blocking commands", () => {
  /** How many of this server's blocking connections Redis reports as blocked right now. */
  const blockedCount = async () => {
    const clients = (await direct.call("CLIENT", "LIST")) as string;
    return clients
      .split("\n")
      .filter(
        (line) =>
          / flags=\S*b/.test(line) && line.includes(`name=upstash-rest-${new URL(url).port}-blocking`),
      ).length;
  };
  /** Resolves once `n` blocking calls are in Redis, blocked (waits for the event, not for a guess). */
  const blockedAtLeast = async (n: number) => {
    while ((await blockedCount()) < n) await new Promise((r) => setTimeout(r, 20));
  };
  /** A promise with a flag telling whether it has settled yet. */
  const watched = <T>(promise: Promise<T>) => {
    const state = { settled: false, promise };
    void promise.finally(() => {
      state.settled = true;
    });
    return state;
  };

  it("a blocking XREADGROUP does not delay a concurrent GET", async () => {
    const redis = client();
    const stream = key("stream");
    const group = "g";
    await redis.xgroup(stream, { type: "CREATE", group, id: "$", options: { MKSTREAM: true } });
    const k = key("k");
    await redis.set(k, "fast");

    // Blocks until data arrives, however long that takes: a GET queued behind it would never answer.
    const before = await blockedCount();
    const blocked = watched(redis.xreadgroup(group, "c", stream, ">", { blockMS: 0 }));
    await blockedAtLeast(before + 1);
    expect(await redis.get(k)).toBe("fast");
    expect(blocked.settled).toBe(false);

    // Data arriving wakes the blocked reader, through its own connection.
    const id = await redis.xadd(stream, "*", { hello: "world" });
    expect(await blocked.promise).toEqual([[stream, [[id, ["hello", "world"]]]]]);
  });

  it("several blocking calls wait side by side, and one with a timeout ends with null", async () => {
    const redis = client();
    const lists = [key("l1"), key("l2"), key("l3")];
    const before = await blockedCount();
    // The client has no blpop/brpop methods; exec sends any command.
    const waiting = [
      watched(redis.exec<[string, string]>(["BLPOP", lists[0]!, 0])),
      watched(redis.exec<[string, string]>(["BLPOP", lists[1]!, 0])),
      watched(redis.exec<[string, string]>(["BRPOP", lists[2]!, 0])),
    ];
    // All three are blocked at once (one after the other, only one would be), and the shared connection still works.
    await blockedAtLeast(before + 3);
    expect(await redis.set(key("s"), "x")).toBe("OK");
    expect(waiting.map((w) => w.settled)).toEqual([false, false, false]);
    for (const [i, list] of [...lists.entries()].reverse()) {
      await redis.rpush(list, `item ${i}`);
      expect(await waiting[i]!.promise).toEqual([list, `item ${i}`]);
    }
    expect(await redis.exec(["BLPOP", key("empty"), 0.1])).toBeNull();
  });

  it("runs a pipeline holding a blocking command off the shared connection", async () => {
    const redis = client();
    const list = key("list");
    const before = await blockedCount();
    const pending = watched(
      rest("/pipeline", [
        ["BLPOP", list, 0],
        ["GET", list],
      ]),
    );
    await blockedAtLeast(before + 1);
    await redis.rpush(list, "item");
    expect(await (await pending.promise).json()).toEqual([{ result: [list, "item"] }, { result: null }]);
  });

  it("closes the blocked connection when the client gives up", async () => {
    const list = key("abandoned");
    const blockedClients = async () => {
      const clients = (await direct.call("CLIENT", "LIST")) as string;
      return clients
        .split("\n")
        .filter(
          (line) =>
            / flags=\S*b/.test(line) && line.includes(`name=upstash-rest-${new URL(url).port}-blocking`),
        );
    };
    const abort = new AbortController();
    const pending = fetch(`${url}/`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: JSON.stringify(["BLPOP", list, 0]),
      signal: abort.signal,
    }).catch((error: unknown) => error);
    for (let i = 0; i < 50 && (await blockedClients()).length === 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(await blockedClients()).toHaveLength(1);
    abort.abort();
    await pending;
    for (let i = 0; i < 50 && (await blockedClients()).length > 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(await blockedClients()).toHaveLength(0);
    // Nothing was popped on behalf of the departed client.
    await direct.rpush(list, "kept");
    expect(await direct.lrange(list, 0, -1)).toEqual(["kept"]);
  });
});

describe("the HTTP protocol", () => {
  it("rejects a bad token with 401 and the client throws", async () => {
    await expect(client({ token: "wrong" }).get(key("x"))).rejects.toThrow(/Unauthorized/);
    const res = await rest("/", ["PING"], { authorization: "Bearer wrong" });
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ error: "Unauthorized" });
    expect((await fetch(`${url}/ping`)).status).toBe(401);
  });

  it("accepts the token as ?_token=", async () => {
    const res = await fetch(`${url}/ping?_token=${token}`);
    expect(await res.json()).toEqual({ result: "PONG" });
  });

  it("answers the path form with URL-decoded arguments", async () => {
    const k = key("a/b c");
    const set = await fetch(`${url}/set/${encodeURIComponent(k)}/${encodeURIComponent("v/1 ü")}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(await set.json()).toEqual({ result: "OK" });
    expect(await direct.get(k)).toBe("v/1 ü");
    const get = await fetch(`${url}/GET/${encodeURIComponent(k)}`, {
      headers: { authorization: `Bearer ${token}`, "Upstash-Encoding": "base64" },
    });
    expect(await get.json()).toEqual({ result: Buffer.from("v/1 ü").toString("base64") });
  });

  it("returns Redis errors as 400 with the Redis message", async () => {
    const res = await rest("/", ["GET"]);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: "ERR wrong number of arguments for 'get' command" });
    await expect(client().hget(key("x"), "")).resolves.toBeNull();
  });

  it("returns 400 for bad JSON and malformed commands", async () => {
    for (const body of ["{not json", "{}", "[]", '[["GET"]]', '["GET", null]']) {
      const res = await rest("/", body);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: string }).error).toMatch(/^ERR /);
    }
    expect((await rest("/pipeline", "[]")).status).toBe(400);
    expect((await rest("/multi-exec", '["GET", "k"]')).status).toBe(400);
  });

  it("refuses bodies over the limit with 413", async () => {
    const res = await rest("/", JSON.stringify(["SET", key("big"), "x".repeat(maxBodyBytes)]));
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: string }).error).toMatch(/limit/);
  });

  it("sends an upstash-sync-token header and accepts it back", async () => {
    const first = await rest("/", ["PING"]);
    const sync = first.headers.get("upstash-sync-token");
    expect(sync).toBeTruthy();
    const second = await rest("/", ["PING"], { "upstash-sync-token": sync! });
    expect(await second.json()).toEqual({ result: "PONG" });
  });

  it("rejects other response formats and methods", async () => {
    expect((await rest("/", ["PING"], { "Upstash-Response-Format": "resp2" })).status).toBe(400);
    expect((await fetch(`${url}/ping`, { method: "DELETE" })).status).toBe(405);
  });
});

describe("publish and subscribe", () => {
  it("delivers published messages to a client subscription", async () => {
    const redis = client();
    const channel = key("chan");
    const subscriber = redis.subscribe<{ n: number }>(channel);
    const messages: Array<{ channel: string; message: { n: number } }> = [];
    const subscribed = new Promise<number>((resolve) => subscriber.on("subscribe", resolve));
    subscriber.on("message", (m) => messages.push(m));
    expect(await subscribed).toBe(1);

    expect(await redis.publish(channel, { n: 1 })).toBe(1);
    await redis.publish(channel, { n: 2 });
    for (let i = 0; i < 50 && messages.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(messages).toEqual([
      { channel, message: { n: 1 } },
      { channel, message: { n: 2 } },
    ]);

    await subscriber.unsubscribe();
    // The server drops the Redis subscriber connection once the stream closes.
    for (let i = 0; i < 50 && (await redis.publish(channel, "x")) > 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(await redis.publish(channel, "x")).toBe(0);
  });
});

describe("Lua scripts", () => {
  // @upstash/ratelimit's scripts start like this; Redis 7.0 rejects the flag.
  const script = "#!lua flags=allow-key-locking\nreturn redis.call('INCR', KEYS[1])";
  const sha = createHash("sha1").update(script).digest("hex");

  it("runs scripts with Upstash-only shebang flags, by text and then by the client's SHA-1", async () => {
    const redis = client();
    const k = key("script");
    expect(await redis.eval(script, [k], [])).toBe(1);
    expect(await redis.evalsha(sha, [k], [])).toBe(2);
  });

  it("answers SCRIPT LOAD with the SHA-1 of the script as sent", async () => {
    const redis = client();
    expect(await redis.scriptLoad(script)).toBe(sha);
    expect(await redis.evalsha(sha, [key("loaded")], [])).toBe(1);
  });
});
