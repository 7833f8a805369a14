// The README's screenshots of the job page, mid-download and done, at desktop
// and phone width: the whole local stack (local/dev.ts) with the demo seeder
// held to 300 KiB/s, so the job can be seen while it downloads.
//
//   node web/e2e/screenshots.ts        (with the project's Node on PATH)
//
// Writes docs/screenshots/job-{downloading,done}-{desktop,phone}.png.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium, type Page } from "playwright-core";
import { portOpen, requireProgram } from "../../local/process.ts";
import { portNames, portsFrom } from "../../local/stack.ts";

const root = resolve(import.meta.dirname, "..", "..");
const out = join(root, "docs", "screenshots");
const sizes = { desktop: { width: 1280, height: 860 }, phone: { width: 390, height: 844 } } as const;

async function freeBase(): Promise<number> {
  for (;;) {
    const base = 20000 + Math.floor(Math.random() * 12000);
    const busy = await Promise.all(portNames.map((name) => portOpen(portsFrom(base)[name])));
    if (!busy.some(Boolean)) return base;
  }
}

async function shoot(page: Page, name: string): Promise<void> {
  for (const [label, size] of Object.entries(sizes)) {
    await page.setViewportSize(size);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(out, `${name}-${label}.png`), fullPage: true });
  }
  await page.setViewportSize(sizes.desktop);
}

async function main(): Promise<void> {
  mkdirSync(out, { recursive: true });
  const base = await freeBase();
  const ports = portsFrom(base);
  const dataDir = mkdtempSync(join(tmpdir(), "torreclou-shots-"));
  let output = "";
  const dev: ChildProcess = spawn(
    process.execPath,
    [
      join(root, "local", "dev.ts"),
      "--data-dir",
      dataDir,
      "--ports-from",
      String(base),
      "--seed-rate",
      "300K",
    ],
    { cwd: root, detached: true, stdio: ["ignore", "pipe", "pipe"] },
  );
  dev.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  dev.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const browser = await chromium.launch({
    executablePath: requireProgram("chromium", "chromium", ["/usr/bin"]),
    args: ["--headless", "--no-sandbox", "--disable-gpu"],
  });
  try {
    await new Promise<void>((ready, fail) => {
      dev.stdout?.on("data", () => /local\s+\| ready/.test(output) && ready());
      dev.on("exit", (code) => fail(new Error(`local stack exited (${code}):\n${output}`)));
    });
    const demo = /demo torrent: (.+\.torrent)\s*$/im.exec(output)?.[1]?.trim();
    if (!demo) throw new Error("no demo torrent in the banner");
    const web = `http://127.0.0.1:${ports.web}`;
    const page = await browser.newPage({ viewport: sizes.desktop, reducedMotion: "reduce" });
    page.setDefaultTimeout(30_000);
    await page.goto(`${web}/jobs/new`);
    await page.getByLabel("Email").fill("ada@example.com");
    await page.getByRole("button", { name: "Sign in with email" }).click();
    await page.getByTestId("torrent-input").setInputFiles(demo);
    await page.getByTestId("torrent-name").waitFor();
    await page.getByRole("button", { name: /^Start job/ }).click();
    await page.waitForURL(/\/jobs\/[0-9a-f-]{36}$/);
    // Mid-download: a third of the way, with a rate and a time left.
    await page.waitForFunction(() => {
      const percent = Number.parseInt(
        document.querySelector("[data-testid=job-percent]")?.textContent ?? "",
        10,
      );
      const eta = document.querySelector("[data-testid=eta]")?.textContent ?? "—";
      return percent >= 30 && percent < 80 && eta !== "—";
    });
    await shoot(page, "job-downloading");
    await page.getByTestId("job-status").getByText("Completed").waitFor({ timeout: 120_000 });
    // The job's own row has caught up: every file linked, the finish time shown.
    await page.getByText("Finished", { exact: true }).waitFor();
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=file-link]").length === 3);
    await shoot(page, "job-done");
    process.stdout.write(`screenshots in ${out}\n`);
  } finally {
    await browser.close();
    if (dev.pid && dev.exitCode === null) {
      const exited = new Promise<void>((done) => dev.on("exit", () => done()));
      process.kill(-dev.pid, "SIGINT");
      await exited;
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
