// `npm run deploy` as the README gives it, up to the point where it would talk
// to Cloudflare: the web app is built and wrangler (a dependency of edge/ only)
// runs from the root and bundles the Worker with its assets, offline.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, expect, it } from "vitest";
import { wranglerEnv } from "./edge.ts";

const root = resolve(import.meta.dirname, "..");
const outDir = mkdtempSync(join(tmpdir(), "torreclou-deploy-"));

afterAll(() => rmSync(outDir, { recursive: true, force: true }));

it("npm run deploy -- --dry-run builds the app and bundles the Worker", () => {
  const run = spawnSync("npm", ["run", "deploy", "--", "--dry-run", "--outdir", outDir], {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, ...wranglerEnv },
  });
  const output = `${run.stdout}\n${run.stderr}`;
  expect(output).not.toContain("not found");
  expect(run.status, output).toBe(0);
  expect(output).toContain("--dry-run: exiting now");
  // The built app went along as the Worker's assets.
  expect(output).toMatch(/Read \d+ files from the assets directory/);
  expect(existsSync(join(root, "web", "dist", "index.html"))).toBe(true);
  // The browser's torrent engine is a chunk of its own, its size in the build's report, and
  // the app's entry never loads it (only a page that looks for metadata imports it).
  expect(output).toMatch(/assets\/webtorrent\.min-[\w-]+\.js\s+[\d.]+ kB │ gzip:\s+[\d.]+ kB/);
  const assets = readdirSync(join(root, "web", "dist", "assets"));
  const engine = assets.find((name) => /^webtorrent\.min-.*\.js$/.test(name));
  expect(engine).toBeDefined();
  expect(readFileSync(join(root, "web", "dist", "assets", engine!), "utf8")).toContain("ut_metadata");
  const entry = /src="\/assets\/([^"]+\.js)"/.exec(
    readFileSync(join(root, "web", "dist", "index.html"), "utf8"),
  )?.[1];
  expect(entry).toBeDefined();
  expect(readFileSync(join(root, "web", "dist", "assets", entry!), "utf8")).not.toContain("ut_metadata");
  const bundle = readFileSync(join(outDir, "index.js"), "utf8");
  expect(bundle).toContain("/api/health");
}, 180_000);
