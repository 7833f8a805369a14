// `npm test`: start a throwaway local cloud on free ports, run every test of
// the repo against it with Vitest, stop it, and end with "N passed, N failed".
// Extra arguments go to Vitest (e.g. `npm test -- local/upstash`).
import { spawn } from "node:child_process";
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort } from "./process.ts";
import { type Ports, portNames, startStack } from "./stack.ts";

const root = resolve(import.meta.dirname, "..");

interface VitestReport {
  numPassedTests: number;
  numFailedTests: number;
  numFailedTestSuites: number;
  numPendingTests: number;
  numTodoTests: number;
  success: boolean;
}

async function freePorts(): Promise<Ports> {
  const entries = [];
  for (const name of portNames) entries.push([name, await freePort()] as const);
  return Object.fromEntries(entries) as Ports;
}

async function main(): Promise<number> {
  const dataDir = mkdtempSync(join(tmpdir(), "torreclou-test-"));
  const logDir = join(root, ".local", "test-logs");
  mkdirSync(logDir, { recursive: true });
  const serviceLog = createWriteStream(join(logDir, "services.log"));
  const log = (service: string, line: string) => serviceLog.write(`${service.padEnd(8)} | ${line}\n`);

  process.stdout.write(
    `starting the local cloud for tests (service logs: ${join(logDir, "services.log")})\n`,
  );
  const ports = await freePorts();
  const stack = await startStack({ dataDir, ports, log, ephemeral: true, seeder: false });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await stack.stop();
    rmSync(dataDir, { recursive: true, force: true });
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => void stop().then(() => process.exit(130)));
  }

  // One report per run, so runs that overlap never read each other's totals.
  const reportFile = join(logDir, `vitest-${process.pid}.json`);
  const vitest = join(root, "node_modules", "vitest", "vitest.mjs");
  const code = await new Promise<number>((done) => {
    const child = spawn(
      process.execPath,
      [
        vitest,
        "run",
        "--reporter=default",
        "--reporter=json",
        `--outputFile.json=${reportFile}`,
        ...process.argv.slice(2),
      ],
      { cwd: root, stdio: "inherit", env: { ...process.env, ...stack.env, TORRECLOU_TEST_DATA: dataDir } },
    );
    child.on("exit", (status) => done(status ?? 1));
  });
  await stop();
  serviceLog.end();

  let report: VitestReport | undefined;
  try {
    report = JSON.parse(readFileSync(reportFile, "utf8")) as VitestReport;
  } catch {
    // Vitest crashed before writing its report; the exit code tells.
  }
  rmSync(reportFile, { force: true });
  const passed = report?.numPassedTests ?? 0;
  const failedTests = report?.numFailedTests ?? 0;
  // A file can fail with every test in it passed (a hook timed out, an unhandled error): a failure too.
  const failed = failedTests > 0 || code === 0 ? failedTests : Math.max(1, report?.numFailedTestSuites ?? 1);
  const skipped = (report?.numPendingTests ?? 0) + (report?.numTodoTests ?? 0);
  process.stdout.write(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}\n`);
  return code !== 0 || failed > 0 || passed === 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.stdout.write("\n0 passed, 1 failed\n");
    process.exit(1);
  },
);
