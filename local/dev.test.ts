// The launcher as a person uses it: start `local/dev.ts`, use the app through
// the URL it prints, press Ctrl-C, and find nothing left behind.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { portOpen } from "./process.ts";
import { type Ports, portNames, portsFrom } from "./stack.ts";

const root = resolve(import.meta.dirname, "..");

async function freeRange(): Promise<Ports> {
  for (;;) {
    // Below the kernel's ephemeral range (32768+), so no outgoing connection holds one of them.
    const base = 20000 + Math.floor(Math.random() * 12000);
    const ports = portsFrom(base);
    const busy = await Promise.all(portNames.map((name) => portOpen(ports[name])));
    if (!busy.some(Boolean)) return ports;
  }
}

/** Every process below `pid`, found through the parent links in ps. */
function descendants(pid: number): number[] {
  const rows = execFileSync("ps", ["-e", "-o", "pid=,ppid="], { encoding: "utf8" })
    .trim()
    .split("\n")
    .map((line) => line.trim().split(/\s+/).map(Number) as [number, number]);
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const parent = queue.shift()!;
    for (const [child, ppid] of rows) {
      if (ppid === parent) {
        found.push(child);
        queue.push(child);
      }
    }
  }
  return found;
}

/** Running, not a zombie waiting for a reaper that is not its parent's business. */
function alive(pid: number): boolean {
  try {
    const state = execFileSync("ps", ["-o", "stat=", "-p", String(pid)], { encoding: "utf8" }).trim();
    return state !== "" && !state.startsWith("Z");
  } catch {
    return false; // ps exits 1 when there is no such process
  }
}

function describeProcess(pid: number): string {
  try {
    return execFileSync("ps", ["-o", "pid=,stat=,args=", "-p", String(pid)], { encoding: "utf8" }).trim();
  } catch {
    return `${pid} (gone)`;
  }
}

describe("npm run dev", () => {
  let dev: ChildProcess;
  let output = "";
  let ports: Ports;
  let dataDir: string;

  beforeAll(async () => {
    ports = await freeRange();
    dataDir = mkdtempSync(join(tmpdir(), "torreclou-dev-"));
    // Its own process group, like a shell job, so "Ctrl-C" can go to the group.
    dev = spawn(
      process.execPath,
      [join(root, "local", "dev.ts"), "--data-dir", dataDir, "--ports-from", String(ports.postgres)],
      { cwd: root, detached: true, stdio: ["ignore", "pipe", "pipe"] },
    );
    dev.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    dev.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    await new Promise<void>((ready, fail) => {
      const timer = setTimeout(() => fail(new Error(`launcher not ready in 150 s:\n${output}`)), 150_000);
      const check = setInterval(() => {
        if (/local\s+\| ready/.test(output)) {
          clearInterval(check);
          clearTimeout(timer);
          ready();
        }
      }, 200);
      dev.on("exit", (code) => {
        clearInterval(check);
        clearTimeout(timer);
        fail(new Error(`launcher exited early (${code}):\n${output}`));
      });
    });
  }, 180_000);

  afterAll(() => {
    if (dev.exitCode === null && dev.pid) process.kill(-dev.pid, "SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("prints the web app URL", () => {
    expect(output).toContain(`http://127.0.0.1:${ports.web}`);
    expect(output).toContain("Press Ctrl-C");
  });

  it("serves the web app at that URL", async () => {
    const page = await fetch(`http://127.0.0.1:${ports.web}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain("<title>TorreClou</title>");
  });

  it("reports Postgres and Redis healthy through the web app's /api", async () => {
    const response = await fetch(`http://127.0.0.1:${ports.web}/api/health`);
    const body = (await response.json()) as {
      ok: boolean;
      postgres: { ok: boolean };
      redis: { ok: boolean };
    };
    expect(response.status).toBe(200);
    expect(body.postgres.ok).toBe(true);
    expect(body.redis.ok).toBe(true);
  });

  it("stops every process and frees every port on Ctrl-C", async () => {
    const pid = dev.pid!;
    const tree = descendants(pid);
    // postgres, redis, aria2c, wrangler (and its workerd), worker, vite at least.
    expect(tree.length).toBeGreaterThanOrEqual(6);
    const exited = new Promise<number | null>((done) => dev.on("exit", (code) => done(code)));
    process.kill(-pid, "SIGINT");
    expect(await exited).toBe(0);
    expect(output).toContain("all stopped");
    // Give the kernel a moment to reap what the launcher waited for.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const survivors = [pid, ...tree].filter(alive).map(describeProcess);
    expect(survivors).toEqual([]);
    const open = [];
    for (const name of portNames) if (await portOpen(ports[name])) open.push(`${name}:${ports[name]}`);
    expect(open).toEqual([]);
  }, 60_000);
});
