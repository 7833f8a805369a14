#!/usr/bin/env node
// Entry point for the root scripts (`npm run dev`, `npm test`, ...).
//
// It runs on whatever Node the machine has (20 is enough), then makes sure the
// project's own toolchain is present -- the Node version in `.node-version`
// and the pnpm in package.json's `packageManager`, both taken from the npm
// registry into `.toolchain/` -- installs the workspace, and hands over to the
// real command under that Node. The system Node is never changed.
//
// Plain JavaScript with no dependencies on purpose: nothing is installed yet
// when it starts.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const toolchain = join(root, ".toolchain");
const nodeVersion = readFileSync(join(root, ".node-version"), "utf8").trim();
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const pnpmVersion = String(pkg.packageManager).replace(/^pnpm@/, "");
const nodePackage = `node-${process.platform}-${process.arch}`;
const nodeBin = join(toolchain, "node_modules", nodePackage, "bin");
const pnpmBin = join(toolchain, "node_modules", "pnpm", "bin", "pnpm.cjs");

function log(message) {
  process.stderr.write(`[toolchain] ${message}\n`);
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: "inherit", ...options });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

function installedVersion(dir) {
  try {
    return JSON.parse(readFileSync(join(dir, "package.json"), "utf8")).version;
  } catch {
    return undefined;
  }
}

function ensureToolchain() {
  const haveNode = installedVersion(join(toolchain, "node_modules", nodePackage));
  const havePnpm = installedVersion(join(toolchain, "node_modules", "pnpm"));
  if (haveNode === nodeVersion && havePnpm === pnpmVersion) return;
  log(`installing Node ${nodeVersion} and pnpm ${pnpmVersion} into .toolchain/ (from the npm registry)`);
  mkdirSync(toolchain, { recursive: true });
  writeFileSync(join(toolchain, "package.json"), '{ "private": true }\n');
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const status = run(
    npm,
    [
      "install",
      "--no-save",
      "--no-package-lock",
      "--no-audit",
      "--no-fund",
      `${nodePackage}@${nodeVersion}`,
      `pnpm@${pnpmVersion}`,
    ],
    { cwd: toolchain },
  );
  if (status !== 0 || !existsSync(join(nodeBin, "node"))) {
    log(`could not install ${nodePackage}@${nodeVersion}: is this platform published on the npm registry?`);
    process.exit(1);
  }
}

function env() {
  const path = [nodeBin, join(root, "node_modules", ".bin"), process.env.PATH].join(delimiter);
  return { ...process.env, PATH: path, TORRECLOU_ROOT: root, npm_config_update_notifier: "false" };
}

function mtime(file) {
  try {
    return statSync(file).mtimeMs;
  } catch {
    return 0;
  }
}

function ensureDependencies() {
  const marker = join(root, "node_modules", ".modules.yaml");
  const lock = join(root, "pnpm-lock.yaml");
  const manifests = [lock, join(root, "package.json"), join(root, "pnpm-workspace.yaml")];
  const stale = manifests.some((file) => mtime(file) > mtime(marker));
  if (!stale) return;
  log("installing workspace dependencies (pnpm install)");
  const args = [pnpmBin, "install", "--prefer-offline"];
  if (process.env.CI) args.push("--frozen-lockfile");
  const status = run(join(nodeBin, "node"), args, { cwd: root, env: env() });
  if (status !== 0) process.exit(status);
}

const [command = "dev", ...rest] = process.argv.slice(2);
ensureToolchain();
ensureDependencies();

const node = join(nodeBin, "node");
const commands = {
  dev: [node, [join(root, "local", "dev.ts"), ...rest]],
  test: [node, [join(root, "local", "test.ts"), ...rest]],
  migrate: [node, [join(root, "drizzle", "migrate.ts"), ...rest]],
  pnpm: [node, [pnpmBin, ...rest]],
  // wrangler is a dependency of edge/ only; this runs it from the root, where wrangler.toml is.
  wrangler: [node, [join(root, "edge", "node_modules", "wrangler", "bin", "wrangler.js"), ...rest]],
  // Any tool from node_modules/.bin, run under the project's Node.
  exec: [node, [pnpmBin, "exec", ...rest]],
};
const chosen = commands[command];
if (!chosen) {
  log(`unknown command "${command}"; one of: ${Object.keys(commands).join(", ")}`);
  process.exit(2);
}
// `dev` runs in a process group of its own and hears every signal from this
// process: Ctrl-C in a terminal, or SIGINT/SIGTERM from a process manager, an
// IDE or `kill` sent to `npm run dev`, all stop it the same way (a second
// one stops it at once). Its services never read the terminal, so it needs no
// stdin; if this process dies without a word, the closed IPC channel tells it.
// Other commands stay in the terminal's group (they may prompt): Ctrl-C
// reaches them directly, so SIGINT is only waited out here.
const own = command === "dev";
const child = spawn(chosen[0], chosen[1], {
  cwd: root,
  env: env(),
  stdio: own ? ["ignore", "inherit", "inherit", "ipc"] : "inherit",
  detached: own,
});
const forwarded = own ? ["SIGINT", "SIGTERM", "SIGHUP"] : ["SIGTERM", "SIGHUP"];
if (!own) process.on("SIGINT", () => {});
for (const signal of forwarded) {
  process.on(signal, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  });
}
child.on("exit", (code, signal) => {
  process.exitCode = code ?? (signal ? 128 + 2 : 1);
});
