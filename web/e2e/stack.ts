// What every end-to-end test starts: the whole local stack through
// `local/dev.ts` (as `npm run dev` does) on a free block of ports, and Debian's
// Chromium driven by Playwright; and how both are stopped.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { type BrowserContext, chromium } from "playwright-core";
import { requireProgram } from "../../local/process.ts";
import { freePortRange, type Ports } from "../../local/stack.ts";

export const root = resolve(import.meta.dirname, "..", "..");

const chromiumArgs = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
export const desktop = { width: 1280, height: 860 };

export interface DevStack {
  ports: Ports;
  /** The web app's origin. */
  web: string;
  /** Everything the stack printed so far. */
  output(): string;
  stop(): Promise<void>;
}

/** Starts `local/dev.ts` with `args` and waits for its "ready" line (up to 180 s). */
export async function startDevStack(args: string[] = []): Promise<DevStack> {
  const ports = await freePortRange();
  const dataDir = mkdtempSync(join(tmpdir(), "torreclou-e2e-"));
  let output = "";
  const dev: ChildProcess = spawn(
    process.execPath,
    [join(root, "local", "dev.ts"), "--data-dir", dataDir, "--ports-from", String(ports.postgres), ...args],
    { cwd: root, detached: true, stdio: ["ignore", "pipe", "pipe"] },
  );
  dev.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  dev.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const stop = async () => {
    if (dev.pid && dev.exitCode === null) {
      const exited = new Promise<void>((done) => dev.on("exit", () => done()));
      process.kill(-dev.pid, "SIGINT"); // Ctrl-C to the launcher's process group
      const stopped = await Promise.race([
        exited.then(() => true),
        new Promise<boolean>((done) => setTimeout(() => done(false), 30_000)),
      ]);
      if (!stopped) process.kill(-dev.pid, "SIGKILL");
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    await new Promise<void>((ready, fail) => {
      const timer = setTimeout(() => fail(new Error(`local stack not ready in 180 s:\n${output}`)), 180_000);
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
        fail(new Error(`local stack exited early (${code}):\n${output}`));
      });
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { ports, web: `http://127.0.0.1:${ports.web}`, output: () => output, stop };
}

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

/** Debian's Chromium (installed here as root if missing, else a message naming the package), headless. */
export async function launchChromium(extraArgs: string[] = []): Promise<Browser> {
  const profileDir = mkdtempSync(join(tmpdir(), "torreclou-e2e-chromium-"));
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath: requireProgram("chromium", "chromium", ["/usr/bin"]),
    headless: true,
    args: [...chromiumArgs, ...extraArgs],
    viewport: desktop,
    reducedMotion: "reduce",
  });
  return {
    context,
    close: async () => {
      await context.close().catch(() => {});
      rmSync(profileDir, { recursive: true, force: true });
    },
  };
}
