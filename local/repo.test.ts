// The whole repository type-checks (TypeScript strict, every package) and
// passes the one formatter/linter, so `npm test` fails on either.
import { execFile } from "node:child_process";
import { join, resolve } from "node:path";
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
});
