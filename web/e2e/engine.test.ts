// The browser's own torrent engine (webtorrent's browser build), end to end
// with no worker running (`local/dev.ts --no-worker`): a second Chromium page
// seeds a 3-file torrent over WebRTC, announced to the local tracker's
// WebSocket side; a person pastes its magnet asking to choose files, and their
// browser finds the metadata in the swarm and hands it to the edge, which
// checks it (SHA-1 = the info hash, the .torrent parser) and lets the job wait
// for the choice. Nothing but browsers ever had the metadata.
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Browser, type DevStack, launchChromium, root, startDevStack } from "./stack.ts";

// WebRTC between two pages on loopback: Chromium leaves loopback out of its ICE
// candidates, and hides host addresses behind mDNS names, unless told otherwise.
const webrtcOnLoopback = [
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
];

interface Seeded {
  magnetURI: string;
  infoHash: string;
}

interface JobBody {
  job: {
    id: string;
    state: string;
    name: string;
    infoHash: string;
    files: { index: number; path: string; size: number; selected: boolean }[];
    transitions: { from: string | null; to: string; cause: string; reason: string | null }[];
  };
}

/** Serves the seeder's page and webtorrent's browser build, as any static host would. */
async function seederHost(): Promise<{ url: string; close(): Promise<void> }> {
  const engine = readFileSync(join(root, "web", "node_modules", "webtorrent", "dist", "webtorrent.min.js"));
  const server: Server = createServer((req, res) => {
    if (req.url === "/webtorrent.min.js") {
      res.writeHead(200, { "content-type": "text/javascript" }).end(engine);
    } else {
      res
        .writeHead(200, { "content-type": "text/html" })
        .end(
          '<!doctype html><title>seeder</title><script type="module">import WebTorrent from "/webtorrent.min.js"; window.WebTorrent = WebTorrent;</script>',
        );
    }
  });
  await new Promise<void>((ready) => server.listen(0, "127.0.0.1", ready));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((done) => server.close(() => done())),
  };
}

describe("the browser's torrent engine, with no worker running", () => {
  let stack: DevStack;
  let browser: Browser;
  let host: Awaited<ReturnType<typeof seederHost>>;
  let seeder: Page;
  let page: Page;
  let seeded: Seeded;
  const console: string[] = [];

  beforeAll(async () => {
    stack = await startDevStack(["--no-worker"]);
    expect(stack.output()).toContain("no worker (--no-worker)");
    host = await seederHost();
    browser = await launchChromium(webrtcOnLoopback);
    seeder = await browser.context.newPage();
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    page.setDefaultTimeout(20_000);
    for (const [name, p] of [
      ["seeder", seeder],
      ["app", page],
    ] as const) {
      p.on("console", (message) => console.push(`${name}: ${message.type()} ${message.text()}`));
      p.on("pageerror", (error) => console.push(`${name}: page error ${error.message}`));
      p.on("response", (response) => {
        if (response.status() >= 400) console.push(`${name}: ${response.status()} ${response.url()}`);
      });
    }
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    await host?.close();
    await stack?.stop();
  }, 60_000);

  it("seeds a 3-file torrent from a second page over WebRTC", async () => {
    await seeder.goto(host.url);
    const tracker = `ws://127.0.0.1:${stack.ports.tracker}`;
    await seeder.waitForFunction(() => "WebTorrent" in window);
    seeded = await seeder.evaluate(
      async ({ tracker }) => {
        const { WebTorrent } = window as unknown as {
          WebTorrent: new (
            opts: object,
          ) => {
            on(event: "error", cb: (err: Error) => void): void;
            seed(
              files: File[],
              opts: object,
              cb: (torrent: { magnetURI: string; infoHash: string }) => void,
            ): void;
          };
        };
        const client = new WebTorrent({ dht: false, lsd: false });
        const file = (name: string, size: number, seed: number) => {
          const bytes = new Uint8Array(size);
          for (let i = 0; i < size; i++) bytes[i] = (seed + i) % 251;
          return new File([bytes], name);
        };
        const files = [file("one.bin", 300_000, 1), file("two.bin", 200_000, 2), file("notes.txt", 5_000, 3)];
        return new Promise<{ magnetURI: string; infoHash: string }>((resolve, reject) => {
          client.on("error", reject);
          client.seed(files, { name: "Browser Album", announce: [tracker] }, (torrent) =>
            resolve({ magnetURI: torrent.magnetURI, infoHash: torrent.infoHash }),
          );
        });
      },
      { tracker },
    );
    expect(seeded.infoHash).toMatch(/^[0-9a-f]{40}$/);
    expect(decodeURIComponent(seeded.magnetURI)).toContain(tracker);
  });

  it("finds a magnet's file list in the browser and lets the person choose, with no worker", async () => {
    await page.goto(`${stack.web}/jobs/new`);
    await page.getByLabel("Email").fill("webrtc@example.com");
    await page.getByRole("button", { name: "Sign in with email" }).click();
    await page.getByLabel("Or a magnet link").waitFor();
    // Only the job page may load the engine: the new-job page has not yet.
    const engineLoaded = () =>
      page.evaluate(() =>
        performance.getEntriesByType("resource").some((entry) => entry.name.includes("webtorrent")),
      );
    expect(await engineLoaded()).toBe(false);

    await page.getByLabel("Or a magnet link").fill(seeded.magnetURI);
    await page.getByRole("button", { name: "Read link" }).click();
    await page.getByTestId("torrent-name").waitFor();
    await page.getByTestId("choose-files").check();
    expect(await page.getByTestId("magnet-note").textContent()).toMatch(
      /this browser looks for the file list too/,
    );
    await page.getByRole("button", { name: /^Start job/ }).click();
    await expect.poll(() => new URL(page.url()).pathname).toMatch(/^\/jobs\/[0-9a-f-]{36}$/);
    const jobId = new URL(page.url()).pathname.split("/").pop()!;

    // No worker runs: only this browser can find the file list.
    const chooser = page.getByTestId("choose-files-form");
    try {
      await chooser.waitFor({ timeout: 90_000 });
    } catch (err) {
      const search = await page
        .getByTestId("browser-search")
        .textContent({ timeout: 1000 })
        .catch(() => null);
      throw new Error(
        `no file list from the browser (${search}):\n${console.join("\n")}\n${stack
          .output()
          .split("\n")
          .filter((l) => l.includes("tracker"))
          .join("\n")}`,
        { cause: err },
      );
    }
    expect(await engineLoaded()).toBe(true);
    expect((await page.getByTestId("job-status").textContent())?.trim()).toBe("Choose files");
    const total = chooser.getByTestId("selected-total");
    expect(await total.textContent()).toMatch(/^3 of 3 files selected/);
    const timeline = (await page.getByTestId("timeline").textContent()) ?? "";
    expect(timeline).toContain("the metadata was found by the submitter's browser");

    const read = () =>
      page.evaluate(async (id) => (await (await fetch(`/api/jobs/${id}`)).json()) as JobBody, jobId);
    const found = (await read()).job;
    expect(found.infoHash).toBe(seeded.infoHash);
    expect(found.name).toBe("Browser Album");
    expect(found.files.map((f) => [f.path, f.size]).sort()).toEqual([
      ["Browser Album/notes.txt", 5_000],
      ["Browser Album/one.bin", 300_000],
      ["Browser Album/two.bin", 200_000],
    ]);
    // Straight from the queue to the choice: no worker ever resolved it.
    expect(found.transitions.map((t) => t.to)).toEqual(["queued", "awaiting_selection"]);

    await chooser.getByRole("checkbox", { name: /^notes\.txt,/ }).uncheck();
    const selection = page.waitForResponse(
      (r) => new URL(r.url()).pathname === `/api/jobs/${jobId}/selection`,
    );
    await chooser.getByTestId("start-selection").click();
    const answer = await selection;
    expect(answer.status(), await answer.text()).toBe(200);
    await expect
      .poll(async () => (await page.getByTestId("job-status").textContent())?.trim())
      .toBe("Queued");
    const chosen = (await read()).job;
    expect(
      chosen.files
        .filter((f) => f.selected)
        .map((f) => f.path)
        .sort(),
    ).toEqual(["Browser Album/one.bin", "Browser Album/two.bin"]);
  });
});
