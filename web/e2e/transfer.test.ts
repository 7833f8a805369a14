// "Transfer in this browser", end to end with no worker running
// (`local/dev.ts --no-worker`): the person's own tab downloads a torrent with
// webtorrent's browser build and uploads it straight into the destination.
//
// A second Chromium page seeds a 3-file torrent over WebRTC (announced to the
// local tracker's WebSocket side); the app's tab transfers it into the local
// S3 bucket and into the Drive double, byte for byte; another torrent comes
// from an HTTP web seed alone, and so does the newcomer demo (the dev stack's
// own web seed); a tab closed mid-transfer pauses its job, and a
// new page resumes it without sending a stored part again (part PUTs counted
// per upload and part number); and a paused job is handed to the fleet.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseTorrentFile } from "@torreclou/contracts";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { s3ClientFor } from "../../local/s3.ts";
import { makeTorrent, startWebSeed, type WebSeed } from "../../local/seeder/index.ts";
import { localSecrets } from "../../local/stack.ts";
import { type Browser, type DevStack, launchChromium, root, startDevStack } from "./stack.ts";

const { GetObjectCommand, ListObjectsV2Command } = createRequire(join(root, "local", "s3.ts"))(
  "@aws-sdk/client-s3",
) as typeof import("../../local/node_modules/@aws-sdk/client-s3/dist-types/index.js");

// WebRTC between two pages on loopback (see engine.test.ts).
const webrtcOnLoopback = [
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
];

const MiB = 1024 * 1024;
/** The seeded files: one larger than a part (at most 8 MiB), so a transfer can stop between parts. */
const album = [
  { name: "big.bin", size: 12 * MiB + 4321, seed: 1 },
  { name: "one.bin", size: 300_000, seed: 2 },
  { name: "notes.txt", size: 5_000, seed: 3 },
];

/** The bytes the seeder page makes for a file (the same formula runs in the page). */
function pattern(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (Math.imul(i + seed, 2654435761) >>> 24) & 255;
  return bytes;
}

interface JobView {
  job: {
    id: string;
    state: string;
    runner: string;
    files: { index: number; path: string; size: number; selected: boolean; state: string }[];
    transitions: { to: string; cause: string; reason: string | null }[];
  };
}

/** Serves webtorrent's browser build to the seeder page, as any static host would. */
async function seederHost(): Promise<WebSeed> {
  const dir = mkdtempSync(join(tmpdir(), "torreclou-seeder-page-"));
  writeFileSync(
    join(dir, "webtorrent.min.js"),
    readFileSync(join(root, "web", "node_modules", "webtorrent", "dist", "webtorrent.min.js")),
  );
  writeFileSync(
    join(dir, "index.html"),
    '<!doctype html><title>seeder</title><script type="module">import WebTorrent from "./webtorrent.min.js"; window.WebTorrent = WebTorrent;</script>',
  );
  return startWebSeed({ root: dir, port: 0 });
}

describe("transfer in this browser, with no worker running", () => {
  let stack: DevStack;
  let browser: Browser;
  let host: WebSeed;
  let seeder: Page;
  let page: Page;
  let scratch: string;
  let albumTorrent: string;
  const problems: string[] = [];
  /** S3 part PUTs sent, by `uploadId partNumber`, and by the page that sent them. */
  const partPuts = new Map<string, number>();
  const partPutsBy = new Map<Page, string[]>();

  const s3 = () =>
    s3ClientFor({
      S3_ENDPOINT: `http://127.0.0.1:${stack.ports.s3}`,
      S3_ACCESS_KEY_ID: localSecrets.s3AccessKeyId,
      S3_SECRET_ACCESS_KEY: localSecrets.s3SecretAccessKey,
    });

  /** Counts every part PUT the browser sends to S3 (a page's own route, which holds one, comes first). */
  async function countPartPuts(): Promise<void> {
    await browser.context.route(
      (url) => url.port === String(stack.ports.s3) && url.searchParams.has("partNumber"),
      async (route) => {
        const request = route.request();
        if (request.method() === "PUT") {
          const url = new URL(request.url());
          const key = `${url.searchParams.get("uploadId")} ${url.searchParams.get("partNumber")}`;
          const p = request.frame().page();
          partPuts.set(key, (partPuts.get(key) ?? 0) + 1);
          partPutsBy.set(p, [...(partPutsBy.get(p) ?? []), key]);
        }
        await route.continue();
      },
    );
  }

  function watch(name: string, p: Page): void {
    p.on("pageerror", (error) => problems.push(`${name}: page error ${error.message}`));
    p.on("console", (m) => {
      if (m.type() === "error") problems.push(`${name}: ${m.text()}`);
    });
  }

  async function openApp(): Promise<Page> {
    const p = await browser.context.newPage();
    p.setDefaultTimeout(30_000);
    watch("app", p);
    return p;
  }

  const readJob = (p: Page, id: string) =>
    p.evaluate(async (jobId) => (await (await fetch(`/api/jobs/${jobId}`)).json()) as JobView, id);

  /** The new-job page with a .torrent, a folder, a destination, and "Transfer in this browser". */
  async function startBrowserJob(p: Page, torrent: string, folder: string, destination?: RegExp) {
    await p.goto(`${stack.web}/jobs/new`);
    await p.getByTestId("torrent-input").setInputFiles(torrent);
    await p.getByTestId("torrent-name").waitFor();
    if (destination) {
      const option = p.locator("#destination option").filter({ hasText: destination });
      await p.locator("#destination").selectOption((await option.getAttribute("value")) ?? "");
    }
    await p.getByLabel("Folder in the destination").fill(folder);
    await p.getByTestId("runner-browser").check();
    await p.getByRole("button", { name: /^Start job/ }).click();
    await expect.poll(() => new URL(p.url()).pathname).toMatch(/^\/jobs\/[0-9a-f-]{36}$/);
    return new URL(p.url()).pathname.split("/").pop()!;
  }

  async function waitForStatus(p: Page, status: string, timeout = 120_000): Promise<void> {
    try {
      await p
        .getByTestId("job-status")
        .filter({ hasText: new RegExp(`^\\s*${status}\\s*$`) })
        .waitFor({ timeout });
    } catch (err) {
      const shown = await p
        .getByTestId("job-status")
        .textContent()
        .catch(() => null);
      const said = await p
        .getByTestId("browser-transfer")
        .textContent({ timeout: 1000 })
        .catch(() => null);
      throw new Error(`job not ${status} (shows ${shown}; ${said}):\n${problems.join("\n")}`, { cause: err });
    }
  }

  /** The bucket's objects under `folder`, by the path after it. */
  async function storedObjects(folder: string): Promise<Map<string, Uint8Array>> {
    const client = s3();
    try {
      const listed = await client.send(new ListObjectsV2Command({ Bucket: localSecrets.s3Bucket }));
      const found = new Map<string, Uint8Array>();
      for (const { Key } of listed.Contents ?? []) {
        const at = Key?.indexOf(`${folder}/`) ?? -1;
        if (!Key || at < 0) continue;
        const body = await client.send(new GetObjectCommand({ Bucket: localSecrets.s3Bucket, Key }));
        found.set(Key.slice(at + folder.length + 1), await body.Body!.transformToByteArray());
      }
      return found;
    } finally {
      client.destroy();
    }
  }

  function expectAlbum(stored: Map<string, Uint8Array>): void {
    expect([...stored.keys()].sort()).toEqual(album.map((f) => `Browser Album/${f.name}`).sort());
    for (const file of album) {
      const bytes = stored.get(`Browser Album/${file.name}`)!;
      expect(bytes.length).toBe(file.size);
      expect(Buffer.compare(Buffer.from(bytes), Buffer.from(pattern(file.size, file.seed))), file.name).toBe(
        0,
      );
    }
  }

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), "torreclou-transfer-e2e-"));
    stack = await startDevStack(["--no-worker"]);
    host = await seederHost();
    browser = await launchChromium(webrtcOnLoopback);
    await countPartPuts();
    seeder = browser.context.pages()[0] ?? (await browser.context.newPage());
    watch("seeder", seeder);
    page = await openApp();

    // The seeder: a second page seeding the album over WebRTC through the local tracker.
    await seeder.goto(`${host.url}index.html`);
    await seeder.waitForFunction(() => "WebTorrent" in window);
    const torrentFile = await seeder.evaluate(
      async ({ tracker, files }) => {
        const { WebTorrent } = window as unknown as {
          WebTorrent: new (
            opts: object,
          ) => {
            on(event: "error", cb: (err: Error) => void): void;
            seed(files: File[], opts: object, cb: (torrent: { torrentFile: Uint8Array }) => void): void;
          };
        };
        const made = files.map(({ name, size, seed }) => {
          const bytes = new Uint8Array(size);
          for (let i = 0; i < size; i++) bytes[i] = (Math.imul(i + seed, 2654435761) >>> 24) & 255;
          return new File([bytes], name);
        });
        const client = new WebTorrent({ dht: false, lsd: false });
        return new Promise<number[]>((resolve, reject) => {
          client.on("error", reject);
          client.seed(made, { name: "Browser Album", announce: [tracker] }, (torrent) =>
            resolve([...torrent.torrentFile]),
          );
        });
      },
      { tracker: `ws://127.0.0.1:${stack.ports.tracker}`, files: album },
    );
    albumTorrent = join(scratch, "Browser Album.torrent");
    writeFileSync(albumTorrent, Uint8Array.from(torrentFile));

    await page.goto(`${stack.web}/jobs/new`);
    await page.getByLabel("Email").fill("transfer@example.com");
    await page.getByRole("button", { name: "Sign in with email" }).click();
    await page.getByTestId("torrent-input").waitFor({ state: "attached" });
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    await host?.stop();
    await stack?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }, 60_000);

  it("offers the choice only where a browser reaches the torrent", async () => {
    await page.goto(`${stack.web}/jobs/new`);
    await page.getByTestId("torrent-input").setInputFiles(albumTorrent);
    await page.getByTestId("torrent-name").waitFor();
    expect(await page.getByTestId("runner-browser").isEnabled()).toBe(true);
    expect(await page.getByTestId("runner-note").textContent()).toMatch(/from WebRTC peers and uploads them/);
    // The demo torrent's HTTP tracker is no use to a browser, but its web seed is.
    const demo = /demo torrent: (.+\.torrent)\s*$/im.exec(stack.output())?.[1]?.trim();
    await page.getByTestId("torrent-input").setInputFiles(demo!);
    await page.getByTestId("torrent-name").filter({ hasText: "TorreClou Demo" }).waitFor();
    expect(await page.getByTestId("runner-note").textContent()).toMatch(/from web seeds and uploads them/);
    const plain = await makeTorrent({
      dir: scratch,
      name: "Fleet Only",
      files: [{ path: "Fleet Only", size: 1000 }],
      announce: [`http://127.0.0.1:${stack.ports.tracker}/announce`],
    });
    await page.getByTestId("torrent-input").setInputFiles(plain.torrentPath);
    await page.getByTestId("torrent-name").filter({ hasText: "Fleet Only" }).waitFor();
    expect(await page.getByTestId("runner-browser").isDisabled()).toBe(true);
    expect(await page.getByTestId("runner-note").textContent()).toMatch(/^Not offered: .*names neither/);
  });

  it("moves a 3-file torrent from a WebRTC peer into S3, byte for byte", async () => {
    const id = await startBrowserJob(page, albumTorrent, "s3-webrtc");
    expect(await page.getByTestId("job-runner").textContent()).toBe("your browser");
    await waitForStatus(page, "Completed");
    const job = (await readJob(page, id)).job;
    expect(job.runner).toBe("browser");
    expect(job.files.every((f) => f.state === "uploaded")).toBe(true);
    const moves = job.transitions.map((t) => t.to);
    expect(moves[0]).toBe("queued");
    expect(moves).toContain("downloading");
    expect(moves.at(-1)).toBe("completed");
    expectAlbum(await storedObjects("s3-webrtc"));
  });

  it("resumes in a new tab after the first was closed, without sending a stored part again", async () => {
    const first = await openApp();
    // The big file's second part never gets an answer in this tab: it closes between parts.
    let held: () => void = () => {};
    const holding = new Promise<void>((resolve) => (held = resolve));
    await first.route(
      (url) => url.port === String(stack.ports.s3) && url.searchParams.get("partNumber") === "2",
      () => held(),
    );
    const info = await parseTorrentFile(readFileSync(albumTorrent));
    const big = info.files.find((f) => f.path.endsWith("big.bin"))!;
    // Part 1 of the big file on record with the edge.
    const recorded = first.waitForResponse(
      (r) =>
        r.request().method() === "PUT" && new URL(r.url()).pathname.endsWith(`/files/${big.index}/parts/1`),
      { timeout: 120_000 },
    );
    const id = await startBrowserJob(first, albumTorrent, "resumed");
    await holding;
    expect((await recorded).status()).toBeLessThan(300);
    expect(await first.getByTestId("browser-transfer").textContent()).toMatch(/Keep this tab open/);

    // Closing the tab asks first (a transfer runs), then pauses the job with a beacon.
    first.on("dialog", (dialog) => void dialog.accept());
    await first.close({ runBeforeUnload: true });
    await expect.poll(async () => (await readJob(page, id)).job.state, { timeout: 30_000 }).toBe("queued");

    const second = await openApp();
    await second.goto(`${stack.web}/jobs/${id}`);
    expect(await second.getByTestId("browser-transfer").textContent()).toMatch(/^Paused/);
    await second.getByTestId("transfer-start").click();
    await waitForStatus(second, "Completed");
    expectAlbum(await storedObjects("resumed"));

    // Every part went to S3 once; the second tab sent no part the first had stored.
    const puts = [...partPuts.entries()];
    expect(puts.filter(([, count]) => count !== 1)).toEqual([]);
    const firstSent = new Set(partPutsBy.get(first) ?? []);
    const secondSent = partPutsBy.get(second) ?? [];
    expect(secondSent.filter((key) => firstSent.has(key))).toEqual([]);
    expect(secondSent.some((key) => key.endsWith(" 2"))).toBe(true);
    const job = (await readJob(second, id)).job;
    expect(job.transitions.some((t) => t.to === "queued" && t.cause === "browser")).toBe(true);
    await second.close();
  });

  it("moves a torrent from an HTTP web seed alone into S3", async () => {
    const seedDir = join(scratch, "webseed");
    const webSeed = await startWebSeed({ root: seedDir, port: 0 });
    try {
      const made = await makeTorrent({
        dir: seedDir,
        name: "Over HTTP",
        files: [
          { path: "a.bin", size: 700_000 },
          { path: "b/c.bin", size: 300_001 },
        ],
        announce: [],
        urlList: [webSeed.url],
      });
      await startBrowserJob(page, made.torrentPath, "webseed");
      await waitForStatus(page, "Completed");
      const stored = await storedObjects("webseed");
      for (const path of ["a.bin", "b/c.bin"]) {
        const expected = readFileSync(join(made.root, path));
        expect(Buffer.compare(Buffer.from(stored.get(`Over HTTP/${path}`)!), expected), path).toBe(0);
      }
      expect(webSeed.requests.get("/Over HTTP/a.bin")).toBeGreaterThan(0);
    } finally {
      await webSeed.stop();
    }
  });

  it("runs the newcomer demo in this browser, from the dev stack's web seed", async () => {
    const demo = /demo torrent: (.+\.torrent)\s*$/im.exec(stack.output())?.[1]?.trim();
    await startBrowserJob(page, demo!, "demo-in-browser");
    await waitForStatus(page, "Completed");
    const stored = await storedObjects("demo-in-browser");
    for (const path of ["README.txt", "video/sample-a.bin", "audio/sample-b.bin"]) {
      const expected = readFileSync(join(dirname(demo!), "TorreClou Demo", path));
      expect(Buffer.compare(Buffer.from(stored.get(`TorreClou Demo/${path}`) ?? []), expected), path).toBe(0);
    }
  });

  it("moves the torrent into Google Drive (its local double), byte for byte", async () => {
    await page.goto(`${stack.web}/storage`);
    await page.getByRole("button", { name: "Connect Google Drive" }).click();
    await page.getByTestId("drive-connected").waitFor();
    await startBrowserJob(page, albumTorrent, "drive-webrtc", /Google Drive/);
    await waitForStatus(page, "Completed");

    // Read what landed, as the account's owner would.
    const drive = `http://127.0.0.1:${stack.ports.drive}`;
    const post = async (path: string, body: object, form = false) =>
      (await (
        await fetch(`${drive}${path}`, {
          method: "POST",
          headers: { "content-type": form ? "application/x-www-form-urlencoded" : "application/json" },
          body: form ? new URLSearchParams(body as Record<string, string>).toString() : JSON.stringify(body),
        })
      ).json()) as Record<string, string>;
    const account = await post("/__accounts", { email: "transfer@example.com" });
    const token = await post(
      "/token",
      { grant_type: "refresh_token", refresh_token: account.refreshToken! },
      true,
    );
    const listed = (await (await fetch(`${drive}/__files?account=${account.accountId}`)).json()) as {
      files: { id: string; name: string; mimeType: string }[];
    };
    for (const file of album) {
      const found = listed.files.filter((f) => f.name === file.name);
      expect(found, file.name).toHaveLength(1);
      const media = await fetch(`${drive}/drive/v3/files/${found[0]!.id}?alt=media`, {
        headers: { authorization: `Bearer ${token.access_token}` },
      });
      const bytes = Buffer.from(await media.arrayBuffer());
      expect(Buffer.compare(bytes, Buffer.from(pattern(file.size, file.seed))), file.name).toBe(0);
    }
  });

  it("hands a paused job to the fleet", async () => {
    const tab = await openApp();
    // Nothing reaches the bucket from this tab: the job is paused before any file is stored.
    let asked: () => void = () => {};
    const asking = new Promise<void>((resolve) => (asked = resolve));
    await tab.route(
      (url) => url.port === String(stack.ports.s3),
      () => asked(),
    );
    const id = await startBrowserJob(tab, albumTorrent, "to-fleet");
    await asking;
    await tab.getByTestId("transfer-pause").click();
    await expect.poll(async () => (await readJob(tab, id)).job.state).toBe("queued");
    await tab
      .getByTestId("browser-transfer")
      .filter({ hasText: /^Paused/ })
      .waitFor();
    await tab.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Jobs" }).click();
    const row = tab.locator(`[data-job-id="${id}"]`);
    expect(await row.getByTestId("job-runner").textContent()).toBe("in this browser");

    await row.getByRole("link").first().click();
    await tab.getByTestId("hand-to-fleet").click();
    await tab.getByTestId("job-runner").filter({ hasText: "the worker fleet" }).waitFor();
    await waitForStatus(tab, "Queued", 10_000);
    expect(await tab.getByTestId("transfer-start").count()).toBe(0);
    const job = (await readJob(tab, id)).job;
    expect(job.runner).toBe("fleet");
    expect(job.state).toBe("queued");
    expect(job.transitions.at(-1)?.reason).toMatch(/handed to the worker fleet/);
    await tab.goto(`${stack.web}/jobs`);
    expect(await tab.locator(`[data-job-id="${id}"]`).getByTestId("job-runner").count()).toBe(0);
  });
});
