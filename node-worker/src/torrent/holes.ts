// Frees byte ranges of scratch files (fallocate --punch-hole) through one
// long-lived shell per process. Node has no call for it, and spawning
// `fallocate` from the worker for every stored part would fork the worker
// itself each time: with a few hundred MiB mapped, every fork leaves each of
// its pages to fault again on the next write, which cost more CPU than the
// download. The helper is started once, while the worker is small, and forks
// only itself.
import { type ChildProcessByStdio, spawn } from "node:child_process";
import { stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import { removeFile } from "../scratch.ts";

// One request per line: offset, length, path (the rest of the line). One answer
// per request, in order. A missing file (its pieces never came) has nothing to free.
const LOOP = `while IFS=' ' read -r offset length path; do
  if [ ! -e "$path" ] || fallocate --punch-hole --offset "$offset" --length "$length" -- "$path" 2>/dev/null; then
    echo ok
  else
    echo fail
  fi
done`;

interface Pending {
  resolve: () => void;
  reject: (error: Error) => void;
  what: string;
}

export class HolePuncher {
  #child: ChildProcessByStdio<Writable, Readable, null> | undefined;
  #pending: Pending[] = [];

  #start(): ChildProcessByStdio<Writable, Readable, null> {
    if (this.#child && this.#child.exitCode === null) return this.#child;
    const child = spawn("sh", ["-c", LOOP], { stdio: ["pipe", "pipe", "ignore"] });
    child.unref();
    for (const stream of [child.stdin, child.stdout]) (stream as unknown as { unref?: () => void }).unref?.();
    createInterface({ input: child.stdout }).on("line", (line) => {
      const next = this.#pending.shift();
      if (!next) return;
      if (line === "ok") next.resolve();
      else next.reject(new Error(`could not free ${next.what}`));
    });
    const failAll = () => {
      for (const p of this.#pending.splice(0))
        p.reject(new Error(`could not free ${p.what}: the helper stopped`));
    };
    child.on("exit", failAll);
    child.on("error", failAll);
    child.stdin.on("error", failAll);
    this.#child = child;
    return child;
  }

  /** Frees bytes [offset, offset + length) of the file at `path` (its size stays). */
  punch(path: string, offset: number, length: number): Promise<void> {
    if (length <= 0) return Promise.resolve();
    if (/[\n\r]/.test(path)) return Promise.reject(new Error("a scratch path cannot hold a line break"));
    const child = this.#start();
    const what = `bytes ${offset}-${offset + length} of ${path}`;
    return new Promise<void>((resolve, reject) => {
      this.#pending.push({ resolve, reject, what });
      child.stdin.write(`${offset} ${length} ${path}\n`);
    });
  }

  /** Whether the disk holding `dir` can free part of a file: frees half of a 64 KiB probe and looks. */
  async works(dir: string): Promise<boolean> {
    const probe = join(dir, `.punch-probe-${process.pid}`);
    try {
      await writeFile(probe, Buffer.alloc(64 * 1024, 1), { flush: true });
      const before = (await stat(probe)).blocks;
      await this.punch(probe, 0, 32 * 1024);
      return (await stat(probe)).blocks < before;
    } catch {
      return false;
    } finally {
      await removeFile(probe);
    }
  }

  close(): void {
    this.#child?.stdin.end();
    this.#child = undefined;
  }
}
