// The whole repository type-checks (TypeScript strict, every package) and
// passes the one formatter/linter, so `npm test` fails on either; and no two
// worker test files share a Redis database (they run at once and flush it).
import { execFile } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = resolve(import.meta.dirname, "..");
const bin = (name: string) => join(root, "node_modules", ".bin", name);

async function check(command: string, args: string[], cwd: string): Promise<string> {
  try {
    await run(command, args, { cwd, maxBuffer: 16 * 1024 * 1024 });
    return "";
  } catch (err) {
    const { stdout = "", stderr = "" } = err as { stdout?: string; stderr?: string };
    return `${stdout}${stderr}`.trim() || String(err);
  }
}

describe("the repository", () => {
  it.each(["contracts", "drizzle", "edge", "local", "node-worker", "web", "web/e2e"])(
    "%s type-checks",
    async (pkg) => {
      expect(await check(bin("tsc"), ["--noEmit", "-p", "."], join(root, pkg))).toBe("");
    },
    180_000,
  );

  it("is formatted and lint-clean (biome)", async () => {
    expect(await check(bin("biome"), ["check", "--error-on-warnings", "."], root)).toBe("");
  }, 120_000);

  it("gives every worker test file a Redis database of its own", async () => {
    const users = new Map<number, string[]>();
    const files = (await readdir(join(root, "node-worker"), { recursive: true }))
      .filter((f) => f.endsWith(".test.ts") && !f.includes("node_modules"))
      .map((f) => join(root, "node-worker", f));
    for (const file of files) {
      const text = await readFile(file, "utf8");
      // setupEnv(N) on the suite's Redis (not with a server of the test's own), or a URL path "/N".
      const found = [
        ...[...text.matchAll(/setupEnv\((\d+)\)/g)].map((m) => Number(m[1])),
        ...[...text.matchAll(/pathname = "\/(\d+)"/g)].map((m) => Number(m[1])),
      ];
      for (const db of found) users.set(db, [...(users.get(db) ?? []), relative(root, file)]);
    }
    const shared = [...users].filter(([, names]) => names.length > 1);
    expect(shared).toEqual([]);
    expect(users.size).toBeGreaterThan(5);
  });
});
