// Child processes of the local cloud: started in their own process group so a
// stop takes the whole tree down, with every output line prefixed by the
// service's name, and a readiness probe before anyone depends on them.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";

export interface Service {
  readonly name: string;
  /** Environment variables other parts use to reach this service. */
  readonly env: Record<string, string>;
  /** Lines for the launcher's banner, e.g. URLs. */
  readonly urls?: string[];
  stop(): Promise<void>;
}

export type LogSink = (service: string, line: string) => void;

const colors = [36, 33, 35, 32, 34, 91, 96, 93, 95, 92];
const assigned = new Map<string, number>();

/** Default sink: `name | line`, coloured when writing to a terminal. */
export const prefixedLog: LogSink = (service, line) => {
  if (!assigned.has(service)) assigned.set(service, colors[assigned.size % colors.length] ?? 37);
  const label = service.padEnd(8);
  const tag = process.stdout.isTTY ? `\x1b[${assigned.get(service)}m${label}\x1b[0m` : label;
  process.stdout.write(`${tag} | ${line}\n`);
};

/** A sink that drops everything: tests keep service chatter out of their output. */
export const quietLog: LogSink = () => {};

export class MissingProgramError extends Error {
  readonly program: string;
  readonly debianPackage: string;
  constructor(program: string, debianPackage: string) {
    super(
      `"${program}" was not found. Install it with: sudo apt-get install -y ${debianPackage}` +
        " (or run as root on Debian/Ubuntu and it is installed for you)",
    );
    this.name = "MissingProgramError";
    this.program = program;
    this.debianPackage = debianPackage;
  }
}

/** Finds a program on PATH or in the given extra directories. */
export function which(program: string, extraDirs: string[] = []): string | undefined {
  const dirs = [...extraDirs, ...(process.env.PATH ?? "").split(":")];
  for (const dir of dirs) {
    const candidate = `${dir}/${program}`;
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Finds a program, installing its Debian package when we run as root on a
 * system with apt-get (unless TORRECLOU_NO_AUTO_INSTALL=1). Otherwise fails
 * with a message naming the package.
 */
export function requireProgram(program: string, debianPackage: string, extraDirs: string[] = []): string {
  const found = which(program, extraDirs);
  if (found) return found;
  const canInstall =
    process.getuid?.() === 0 &&
    which("apt-get") !== undefined &&
    process.env.TORRECLOU_NO_AUTO_INSTALL !== "1";
  if (canInstall) {
    process.stderr.write(`[local] installing ${debianPackage} for "${program}" (apt-get)\n`);
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    spawnSync("apt-get", ["update", "-qq"], { stdio: "inherit", env });
    spawnSync("apt-get", ["install", "-y", "-qq", debianPackage], { stdio: "inherit", env });
    const installed = which(program, extraDirs);
    if (installed) return installed;
  }
  throw new MissingProgramError(program, debianPackage);
}

export interface SpawnOptions {
  args?: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  uid?: number;
  gid?: number;
  log?: LogSink;
  /** Resolves true once the service answers; polled until `readyTimeoutMs`. */
  ready?: () => Promise<boolean>;
  readyTimeoutMs?: number;
  /** Signal that asks the process to stop cleanly (default SIGTERM). */
  stopSignal?: NodeJS.Signals;
}

export interface Spawned {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();

// Last resort: if this process dies without a clean stop, take the groups down.
process.on("exit", () => {
  for (const child of live) killGroup(child, "SIGKILL");
});

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

/** Starts a program as a service in its own process group and waits until it is ready. */
export async function spawnService(
  name: string,
  command: string,
  options: SpawnOptions = {},
): Promise<Spawned> {
  const log = options.log ?? prefixedLog;
  const child = spawn(command, options.args ?? [], {
    cwd: options.cwd,
    env: options.env ?? process.env,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    ...(options.uid !== undefined ? { uid: options.uid } : {}),
    ...(options.gid !== undefined ? { gid: options.gid } : {}),
  });
  live.add(child);
  const tail: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    createInterface({ input: stream }).on("line", (line) => {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      log(name, line);
    });
  }
  const exited = new Promise<number | null>((resolve) => {
    child.on("exit", (code) => {
      live.delete(child);
      resolve(code);
    });
    child.on("error", (error) => {
      live.delete(child);
      log(name, `failed to start: ${error.message}`);
      resolve(null);
    });
  });

  const stop = async () => {
    if (!live.has(child)) return;
    killGroup(child, options.stopSignal ?? "SIGTERM");
    const done = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
    if (!done) killGroup(child, "SIGKILL");
    await exited;
    // Children that outlived the leader still share its group id.
    killGroup(child, "SIGKILL");
  };

  if (options.ready) {
    const deadline = Date.now() + (options.readyTimeoutMs ?? 30_000);
    let exitedEarly = false;
    void exited.then(() => {
      exitedEarly = true;
    });
    for (;;) {
      if (exitedEarly) {
        throw new Error(`${name} exited before it was ready:\n${tail.join("\n")}`);
      }
      if (await options.ready().catch(() => false)) break;
      if (Date.now() > deadline) {
        await stop();
        throw new Error(
          `${name} was not ready within ${options.readyTimeoutMs ?? 30_000} ms:\n${tail.join("\n")}`,
        );
      }
      await sleep(100);
    }
  }
  return { child, exited, stop };
}

/** True once something accepts TCP connections on host:port. */
export async function portOpen(port: number, host = "127.0.0.1"): Promise<boolean> {
  const { connect } = await import("node:net");
  return new Promise((resolve) => {
    const socket = connect({ port, host });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** A TCP port free on loopback now, for another process to listen on. */
export async function freePort(): Promise<number> {
  // Below the kernel's ephemeral range (32768+): a port handed to another process to
  // bind must not be one an outgoing connection can take meanwhile (aria2c then
  // fails with "Address already in use"). The stacks of the e2e tests use 20000+.
  const { createServer } = await import("node:net");
  for (;;) {
    const port = 12000 + Math.floor(Math.random() * 8000);
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
}
