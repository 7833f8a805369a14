// What scratch costs on this machine's disk and memory, apart from the worker:
// the CPU of writing pieces into page cache the kernel must allocate against
// rewriting pages it already holds, and what freeing a stored range costs
// (a punched hole first writes the range's dirty pages to the disk; deleting
// the file drops them unwritten). The end-to-end benchmark's CPU per GiB
// moves with the first of these on a VM whose host takes back freed guest
// memory (0.2–1.3 CPU-s per GiB here, depending on how long ago the memory
// was freed; rewriting held pages: ~0.1). Prints one line per measure.
//
//   node node-worker/bench/scratch-io.ts [folder]   (default: the OS temp folder)
import { execFileSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const MiB = 1024 * 1024;
const size = 256 * MiB;
const dir = mkdtempSync(join(process.argv[2] ?? tmpdir(), "torreclou-scratch-io-"));
const chunk = Buffer.alloc(MiB, 7);

/** Sectors written so far to the block device holding `path`, if the kernel says. */
function sectorsWritten(path: string): number | undefined {
  const dev = statSync(path).dev;
  const major = Math.floor(dev / 256) & 0xfff;
  const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  try {
    return Number(readFileSync(`/sys/dev/block/${major}:${minor}/stat`, "utf8").trim().split(/\s+/)[6]);
  } catch {
    return undefined;
  }
}

/** Writes `size` bytes at offset 0 in 1 MiB pieces; returns CPU seconds per GiB. */
function writeAll(path: string, flags: string): number {
  const fd = openSync(path, flags);
  const before = process.cpuUsage();
  for (let at = 0; at < size; at += MiB) writeSync(fd, chunk, 0, MiB, at);
  const used = process.cpuUsage(before);
  closeSync(fd);
  return ((used.user + used.system) / 1e6) * (1024 / (size / MiB));
}

function timed(label: string, path: string, run: () => void): void {
  const sectors = sectorsWritten(dir);
  const start = performance.now();
  run();
  const ms = performance.now() - start;
  const after = sectorsWritten(dir);
  const written =
    sectors === undefined || after === undefined ? "?" : (((after - sectors) * 512) / MiB).toFixed(0);
  console.log(`${label}: ${ms.toFixed(0)} ms, ${written} MiB written to the disk (${path})`);
}

try {
  const a = join(dir, "a");
  console.log(`write into new page cache:       ${writeAll(a, "w").toFixed(2)} CPU-s per GiB`);
  console.log(`rewrite the same pages:          ${writeAll(a, "r+").toFixed(2)} CPU-s per GiB`);
  timed("punch the first half (dirty)", a, () =>
    execFileSync("fallocate", ["--punch-hole", "--offset", "0", "--length", String(size / 2), a]),
  );
  timed("delete the file (dirty half)", a, () => rmSync(a));
  const b = join(dir, "b");
  console.log(`write into just-freed page cache: ${writeAll(b, "w").toFixed(2)} CPU-s per GiB`);
  rmSync(b);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
