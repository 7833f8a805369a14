// A private redis-server for the local cloud, append-only so local jobs and
// progress survive a restart of the stack.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { Redis } from "ioredis";
import { type LogSink, prefixedLog, requireProgram, type Service, spawnService } from "./process.ts";

export interface RedisOptions {
  port: number;
  dataDir: string;
  log?: LogSink;
  /** No persistence at all (tests). */
  ephemeral?: boolean;
}

async function pong(port: number): Promise<boolean> {
  const client = new Redis({
    port,
    host: "127.0.0.1",
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  client.on("error", () => {}); // "not up yet" is the answer, not an error to print
  try {
    await client.connect();
    return (await client.ping()) === "PONG";
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

export async function startRedis(options: RedisOptions): Promise<Service> {
  const program = requireProgram("redis-server", "redis-server");
  const dir = join(options.dataDir, "redis");
  mkdirSync(dir, { recursive: true });
  const persistence = options.ephemeral
    ? ["--appendonly", "no", "--save", ""]
    : ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""];
  const server = await spawnService("redis", program, {
    args: [
      "--port",
      String(options.port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--loglevel",
      "warning",
      // One database per test file that runs in parallel (node-worker/test), with room to spare.
      "--databases",
      "32",
      ...persistence,
    ],
    cwd: dir,
    log: options.log ?? prefixedLog,
    ready: () => pong(options.port),
  });
  const url = `redis://127.0.0.1:${options.port}`;
  return { name: "redis", env: { REDIS_URL: url }, urls: [url], stop: server.stop };
}
