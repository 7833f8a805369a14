// The launcher as a person uses it: `npm run dev` (npm, then local/bootstrap.mjs,
// then local/dev.ts), use the app through the URL it prints, stop it the way a
// terminal, a process manager or `kill` would -- SIGINT or SIGTERM to the
// process that was started, not to its group -- and find nothing left behind.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { portOpen } from "./process.ts";
import { freePortRange, localSecrets, type Ports, portNames } from "./stack.ts";

const root = resolve(import.meta.dirname, "..");

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

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  describe(`npm run dev, stopped by ${signal}`, () => {
    let dev: ChildProcess;
    let output = "";
    let ports: Ports;
    let dataDir: string;

    beforeAll(async () => {
      ports = await freePortRange();
      dataDir = mkdtempSync(join(tmpdir(), "torreclou-dev-"));
      // Its own process group, so that the cleanup below can reach every process
      // if the test fails; the signal under test goes to npm alone.
      dev = spawn(
        "npm",
        ["run", "dev", "--", "--data-dir", dataDir, "--ports-from", String(ports.postgres)],
        {
          cwd: root,
          detached: true,
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      dev.stdout?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      dev.stderr?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      await new Promise<void>((ready, fail) => {
        const onData = () => {
          if (/local\s+\| ready/.test(output)) {
            dev.stdout?.off("data", onData);
            dev.off("exit", onExit);
            ready();
          }
        };
        const onExit = (code: number | null) =>
          fail(new Error(`launcher exited early (${code}):\n${output}`));
        dev.stdout?.on("data", onData);
        dev.on("exit", onExit);
      });
    }, 180_000);

    afterAll(() => {
      if (dev.pid) {
        try {
          process.kill(-dev.pid, "SIGKILL");
        } catch {
          // nothing left
        }
      }
      rmSync(dataDir, { recursive: true, force: true });
    });

    it("prints the web app URL, the local S3 endpoint and its keys", () => {
      // First thing in the banner, on the line that says to open it.
      expect(output).toContain(`TorreClou is running. Open the web app: http://127.0.0.1:${ports.web}\n`);
      expect(output).toContain("Press Ctrl-C");
      const banner = output.slice(output.indexOf("TorreClou is running"));
      expect(banner).toContain(`endpoint           http://127.0.0.1:${ports.s3}`);
      expect(banner).toContain(`access key id      ${localSecrets.s3AccessKeyId}`);
      expect(banner).toContain(`secret access key  ${localSecrets.s3SecretAccessKey}`);
      // The demo torrent once, not once per list it appears in.
      expect(banner.match(/demo torrent/gi)?.length).toBe(1);
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

    it(`stops every process and frees every port on ${signal} to npm`, async () => {
      const pid = dev.pid!;
      const tree = descendants(pid);
      // npm, bootstrap, dev.ts, postgres, redis, aria2c, wrangler (and its workerd), worker, vite at least.
      expect(tree.length).toBeGreaterThanOrEqual(8);
      const exited = new Promise<void>((done) => dev.on("exit", () => done()));
      process.kill(pid, signal);
      await exited;
      const stoppedAt = Date.now();
      expect(output).toContain(`${signal}: stopping every service`);
      expect(output).toContain("all stopped");
      // The launcher waited for every service; a process it SIGKILLed last may
      // still be on its way out, so the table is read until it is empty (the
      // test's timeout is the bound, and the list is what a failure shows).
      let survivors = [pid, ...tree].filter(alive);
      while (survivors.length > 0 && Date.now() - stoppedAt < 30_000) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        survivors = survivors.filter(alive);
      }
      expect(survivors.map(describeProcess)).toEqual([]);
      const open = [];
      for (const name of portNames) if (await portOpen(ports[name])) open.push(`${name}:${ports[name]}`);
      expect(open).toEqual([]);
    }, 60_000);
  });
}
