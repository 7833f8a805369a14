// The web app end to end, as a person uses it: the whole local stack started
// with `local/dev.ts` (edge in wrangler dev, worker, Vite, Postgres, Redis, S3,
// an aria2c seeder of the demo torrent), driven by a real Chromium.
//
// Flow: sign in (dev sign-in; the account gets the local bucket as its
// storage) → a storage profile with a wrong secret is refused inline → a
// correct one is saved → Google Drive is connected (the
// local Drive double) and disconnected → an API token is made and revoked →
// the demo torrent is read in the browser and submitted with two of its three
// files → progress reaches 100% → exactly those two files are listed with links
// and are in the S3 bucket, byte for byte the seeded sizes → a job that cannot
// finish (a magnet nobody seeds) is cancelled while it runs → OneDrive and
// Dropbox (their local doubles) are connected, the demo torrent is stored in
// each, and they are disconnected → jobs are found, filtered and acted on in
// bulk → an unknown job says so → a second person's first job, as the README walks through it → a
// person without storage adds a bucket on the new-job page without losing the
// torrent they chose.
//
// Screenshots of every main screen, light and dark, desktop and phone width,
// go to .local/screenshots/ (git-ignored).
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import type { BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { s3ClientFor } from "../../local/s3.ts";
import { localOperatorEmail, type Ports } from "../../local/stack.ts";
import { type Browser, type DevStack, desktop, launchChromium, root, startDevStack } from "./stack.ts";

// The AWS SDK is a dependency of local/ (the S3 server's own package), so it is loaded from there.
const { GetObjectCommand, ListObjectsV2Command } = createRequire(join(root, "local", "s3.ts"))(
  "@aws-sdk/client-s3",
) as typeof import("../../local/node_modules/@aws-sdk/client-s3/dist-types/index.js");
const shots = join(root, ".local", "screenshots");
const phone = { width: 390, height: 844 };

describe("the web app, end to end", () => {
  let stack: DevStack;
  let browser: Browser;
  let ports: Ports;
  let context: BrowserContext;
  let page: Page;
  let web: string;
  let demoTorrent: string;
  let demoMagnet: string;
  let completedJobUrl = "";

  /** Saves the current page, light and dark, at desktop width (and phone width when asked). */
  async function screenshots(name: string, options: { phone?: boolean } = {}): Promise<void> {
    const sizes = options.phone
      ? [["desktop", desktop] as const, ["phone", phone] as const]
      : [["desktop", desktop] as const];
    for (const [label, size] of sizes) {
      await page.setViewportSize(size);
      for (const scheme of ["light", "dark"] as const) {
        await page.emulateMedia({ colorScheme: scheme, reducedMotion: "reduce" });
        // From the top, so the sticky header sits where a reader sees it.
        await page.evaluate(() => window.scrollTo(0, 0));
        // Two frames: the new size and colour scheme are laid out and painted.
        await page.evaluate(
          () => new Promise<void>((done) => requestAnimationFrame(() => requestAnimationFrame(() => done()))),
        );
        await page.screenshot({ path: join(shots, `${name}-${label}-${scheme}.png`), fullPage: true });
      }
    }
    await page.setViewportSize(desktop);
    await page.emulateMedia({ colorScheme: "light", reducedMotion: "reduce" });
  }

  beforeAll(async () => {
    mkdirSync(shots, { recursive: true });
    stack = await startDevStack();
    ports = stack.ports;
    web = stack.web;
    const output = stack.output();
    const demo = /demo torrent: (.+\.torrent)\s*$/im.exec(output)?.[1];
    if (!demo) throw new Error(`no demo torrent in the banner:\n${output}`);
    demoTorrent = demo.trim();
    const magnet = /demo magnet: (magnet:\S+)/i.exec(output)?.[1];
    if (!magnet) throw new Error(`no demo magnet in the banner:\n${output}`);
    demoMagnet = magnet;
    browser = await launchChromium();
    context = browser.context;
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(20_000);
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  }, 60_000);

  it("sends a visitor to the sign-in screen and signs in with the dev sign-in", async () => {
    await page.goto(`${web}/storage`);
    await expect.poll(() => new URL(page.url()).pathname).toBe("/signin");
    await page.getByLabel("Email").waitFor();
    await page.getByRole("button", { name: "Continue with Google" }).waitFor();
    await screenshots("signin", { phone: true });
    // Google is not configured locally: the button says so instead of leaving the app.
    await page.getByRole("button", { name: "Continue with Google" }).click();
    await page.getByText(/Google sign-in is not configured on this server/).waitFor();
    expect(new URL(page.url()).pathname).toBe("/signin");

    await page.getByLabel("Email").fill("ada@example.com");
    await page.getByRole("button", { name: "Sign in with email" }).click();
    // Back where the visitor was going, with the local bucket already there.
    await page.getByRole("heading", { name: "Storage", level: 1 }).waitFor();
    expect(new URL(page.url()).pathname).toBe("/storage");
    const given = page.getByTestId("storage-profile");
    await expect.poll(() => given.count()).toBe(1);
    expect(await given.textContent()).toContain("Local S3 (dev stack)");
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Jobs" }).click();
    await page.getByRole("heading", { name: "Jobs", level: 1 }).waitFor();
    await page.getByText("No jobs yet").waitFor();
    await screenshots("jobs-empty", { phone: true });
  });

  /** The status badge and the timeline's last line name the same state. */
  async function badgeMatchesTimeline(): Promise<void> {
    const badge = (await page.getByTestId("job-status").textContent())?.trim();
    const last = (
      await page.getByTestId("timeline").locator("li").last().locator("strong").textContent()
    )?.trim();
    expect(last).toBe(badge);
  }

  async function fillS3(name: string, secretAccessKey: string): Promise<void> {
    const field = (label: string) => page.getByLabel(label, { exact: true });
    await field("Name").fill(name);
    await field("Endpoint").fill(`http://127.0.0.1:${ports.s3}`);
    await field("Bucket").fill("torreclou");
    await field("Region").fill("us-east-1");
    await field("Folder (key prefix)").fill("e2e");
    await field("Path-style URLs").check();
    await field("Access key ID").fill("torreclou");
    await field("Secret access key").fill(secretAccessKey);
  }

  it("shows the provider's refusal next to the form for a wrong secret", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Storage" }).click();
    await page.getByRole("heading", { name: "Storage", level: 1 }).waitFor();
    await expect.poll(() => page.getByTestId("storage-profile").count()).toBe(1);
    await fillS3("Wrong key", "not-the-right-secret");
    await page.getByRole("button", { name: "Check and save" }).click();
    const error = page.getByTestId("storage-check-error");
    await error.waitFor();
    expect(await error.textContent()).toMatch(/SignatureDoesNotMatch/);
    // The form keeps what was typed, and nothing was saved.
    expect(await page.getByLabel("Name", { exact: true }).inputValue()).toBe("Wrong key");
    expect(await page.getByTestId("storage-profile").count()).toBe(1);
    await screenshots("storage-error", { phone: true });
  });

  it("saves a working S3 profile as the default", async () => {
    await fillS3("Local S3", "torreclou-local-secret");
    await page.getByLabel("Make this the default destination").check();
    await page.getByRole("button", { name: "Check and save" }).click();
    await page.getByText("Saved “Local S3”").waitFor();
    // The one with the e2e folder (the dev stack's has none).
    const profile = page.getByTestId("storage-profile").filter({ hasText: "torreclou/e2e" });
    await expect.poll(() => page.getByTestId("storage-profile").count()).toBe(2);
    expect(await profile.textContent()).toContain("Default");
    expect(await page.getByTestId("storage-check-error").count()).toBe(0);
    await screenshots("storage", { phone: true });
  });

  it("connects Google Drive through the consent round trip, then disconnects it", async () => {
    await page.getByRole("button", { name: "Connect Google Drive" }).click();
    // A full-page visit: the edge, the (local) consent screen, the callback, back to the storage page.
    await page.getByTestId("drive-connected").waitFor();
    expect(new URL(page.url()).pathname).toBe("/storage");
    await expect.poll(() => new URL(page.url()).search).toBe("");
    const drive = page.getByTestId("storage-profile").filter({ hasText: "Google Drive ·" });
    await expect.poll(() => drive.count()).toBe(1);
    expect(await drive.textContent()).toContain("ada@example.com");
    expect(await page.getByTestId("storage-profile").count()).toBe(3);
    await screenshots("storage-drive", { phone: true });

    await drive.getByRole("button", { name: /^Disconnect / }).click();
    await page.getByRole("button", { name: "Disconnect now" }).click();
    await expect.poll(() => drive.count()).toBe(0);
    expect(await page.getByTestId("storage-profile").count()).toBe(2);
    expect(await page.getByRole("alert").count()).toBe(0);

    // A failed round trip comes back as a readable error, and the query is cleaned.
    await page.goto(`${web}/storage?drive_error=google_denied`);
    await page.getByTestId("drive-error").getByText("Connecting Google Drive was cancelled.").waitFor();
    await expect.poll(() => new URL(page.url()).search).toBe("");
  });

  it("creates an API token, shows it once, and revokes it", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "API tokens" }).click();
    await page.getByRole("heading", { name: "API tokens", level: 1 }).waitFor();
    await page.getByLabel("Name").fill("backup script");
    await page.getByRole("button", { name: "Create token" }).click();
    const token = (await page.getByTestId("new-token").textContent())?.trim() ?? "";
    expect(token).toMatch(/^tc_\S{20,}$/);
    // The token works against the API.
    const me = await fetch(`${web}/api/auth/me`, { headers: { authorization: `Bearer ${token}` } });
    expect(me.status).toBe(200);
    await screenshots("tokens", { phone: true });
    await page.getByRole("button", { name: "I have stored it; hide it" }).click();
    expect(await page.getByTestId("new-token").count()).toBe(0);
    await page.getByRole("button", { name: "Revoke token backup script" }).click();
    await page.getByRole("button", { name: "Revoke now" }).click();
    await page.getByText("No API tokens yet").waitFor();
    const after = await fetch(`${web}/api/auth/me`, { headers: { authorization: `Bearer ${token}` } });
    expect(after.status).toBe(401);
  });

  it("refuses something that is not a torrent in the browser, before sending anything", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "New job" }).click();
    await page.getByRole("heading", { name: "New job", level: 1 }).waitFor();
    let posted = false;
    const watch = (request: { method(): string; url(): string }) => {
      if (request.method() === "POST" && new URL(request.url()).pathname.startsWith("/api/")) posted = true;
    };
    page.on("request", watch);
    await page.getByTestId("torrent-input").setInputFiles({
      name: "notes.torrent",
      mimeType: "application/x-bittorrent",
      buffer: Buffer.from("hello, I am not bencoded"),
    });
    const error = page.getByTestId("torrent-error");
    await error.waitFor();
    expect(await error.textContent()).toMatch(/not a valid \.torrent/i);
    await page.getByLabel("Or a magnet link").fill("magnet:?dn=nothing");
    await page.getByRole("button", { name: "Read link" }).click();
    await expect.poll(async () => (await error.textContent()) ?? "").toMatch(/no BitTorrent info hash/i);
    page.off("request", watch);
    expect(posted).toBe(false);
  });

  it("runs the demo torrent with two of its three files into S3", async () => {
    await page.getByTestId("torrent-input").setInputFiles(demoTorrent);
    await page.getByTestId("torrent-name").waitFor();
    expect(await page.getByTestId("torrent-name").textContent()).toBe("TorreClou Demo");
    // Three files, all selected at first; the folder boxes reflect them.
    const total = page.getByTestId("selected-total");
    expect(await total.textContent()).toMatch(/^3 of 3 files selected/);
    await screenshots("new-job", { phone: true });

    // Leave out README.txt: two files remain.
    await page.getByRole("checkbox", { name: /^README\.txt,/ }).uncheck();
    expect(await total.textContent()).toMatch(/^2 of 3 files selected/);
    // Folder selection is tri-state: clearing "video" then selecting it again.
    const video = page.getByRole("checkbox", { name: /^Folder video,/ });
    await video.uncheck();
    expect(await total.textContent()).toMatch(/^1 of 3 files selected/);
    await video.check();
    expect(await total.textContent()).toMatch(/^2 of 3 files selected/);
    await page.getByLabel("Folder in the destination").fill("demo-run");
    // And give back to the swarm once stored, for a while.
    await page.getByTestId("seed-back").check();
    await page.getByLabel("Until ratio").fill("1");
    await page.getByLabel("or for hours").fill("1");
    await page.getByRole("button", { name: /^Start job/ }).click();

    await expect
      .poll(() => new URL(page.url()).pathname, { timeout: 20_000 })
      .toMatch(/^\/jobs\/[0-9a-f-]{36}$/);
    completedJobUrl = page.url();
    await page.getByTestId("job-status").waitFor();
    await screenshots("job-running");

    // Progress reaches 100% and the job completes.
    await expect
      .poll(async () => (await page.getByTestId("job-status").textContent())?.trim(), {
        timeout: 150_000,
        interval: 1000,
      })
      .toBe("Completed");
    expect(await page.getByTestId("job-percent").textContent()).toBe("100%");
    // Downloaded and stored, each labelled, each the whole selection.
    const chosen = "5.01 MiB";
    expect(await page.getByTestId("downloaded").textContent()).toBe(`${chosen} of ${chosen}`);
    expect(await page.getByTestId("stored").textContent()).toBe(`${chosen} of ${chosen}`);
    await badgeMatchesTimeline();

    // Exactly the two chosen files, each stored and linked.
    const rows = page.getByTestId("job-file");
    expect(await rows.count()).toBe(2);
    const names = (await rows.allTextContents()).join("\n");
    expect(names).toContain("video/sample-a.bin");
    expect(names).toContain("audio/sample-b.bin");
    expect(names).not.toContain("README.txt");
    // Each file with its percentage and bytes.
    expect(await rows.getByTestId("file-numbers").allTextContents()).toEqual(
      expect.arrayContaining(["100% · 3.01 MiB of 3.01 MiB", "100% · 2.00 MiB of 2.00 MiB"]),
    );
    // Each link downloads the stored object (a presigned URL into the private bucket).
    expect(await page.getByTestId("file-link").count(), "links to the stored objects").toBe(2);
    for (const link of await page.getByTestId("file-link").all()) {
      const href = (await link.getAttribute("href")) ?? "";
      expect(href).toMatch(/^https?:\/\//);
      const download = await fetch(href);
      expect(download.status).toBe(200);
      expect((await download.arrayBuffer()).byteLength).toBeGreaterThan(1024 * 1024);
    }
    await page.getByTestId("timeline").getByText("Completed", { exact: true }).waitFor();
    await screenshots("job-completed", { phone: true });

    // And they are in the bucket, with the seeded sizes; README.txt is not.
    const s3 = s3ClientFor({
      S3_ENDPOINT: `http://127.0.0.1:${ports.s3}`,
      S3_ACCESS_KEY_ID: "torreclou",
      S3_SECRET_ACCESS_KEY: "torreclou-local-secret",
    });
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: "torreclou", Prefix: "e2e/" }));
    const objects = new Map((listed.Contents ?? []).map((o) => [o.Key ?? "", o.Size ?? -1]));
    const keys = [...objects.keys()];
    const a = keys.find((k) => k.endsWith("video/sample-a.bin"));
    const b = keys.find((k) => k.endsWith("audio/sample-b.bin"));
    expect(a, `objects: ${keys.join(", ")}`).toBeDefined();
    expect(b, `objects: ${keys.join(", ")}`).toBeDefined();
    expect(a).toMatch(/^e2e\/demo-run\//);
    expect(keys.some((k) => k.endsWith("README.txt"))).toBe(false);
    expect(objects.get(a!)).toBe(3 * 1024 * 1024 + 12_345);
    expect(objects.get(b!)).toBe(2 * 1024 * 1024 - 777);
    const body = await s3.send(new GetObjectCommand({ Bucket: "torreclou", Key: b! }));
    expect((await body.Body!.transformToByteArray()).length).toBe(2 * 1024 * 1024 - 777);
    s3.destroy();

    // It asked to seed: the worker offers the stored files to the swarm until the person stops it.
    const seeding = page.getByTestId("seeding");
    await expect
      .poll(async () => (await seeding.textContent()) ?? "", { timeout: 60_000, interval: 1000 })
      .toMatch(/^Seeding · ratio \d+\.\d\d · \d+ peers? · uploaded /);
    await page.getByRole("button", { name: "Stop seeding" }).click();
    await expect
      .poll(async () => (await seeding.textContent()) ?? "", { timeout: 60_000, interval: 1000 })
      .toMatch(/^Seeded · .* · ended: stopped by the user$/);
    expect(await page.getByRole("button", { name: "Stop seeding" }).count()).toBe(0);
  });

  it("lists the finished job with its progress and filters by status", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Jobs" }).click();
    await page.getByRole("heading", { name: "Jobs", level: 1 }).waitFor();
    const row = page.getByTestId("job-row").first();
    await row.waitFor();
    expect(await row.getByTestId("job-status").textContent()).toBe("Completed");
    expect(await row.getByTestId("percent").textContent()).toBe("100%");
    // The person's usage under the heading: nothing running or waiting, this month's bytes (no limits set).
    await expect
      .poll(() => page.getByTestId("usage").textContent())
      .toBe("Your usage: 0 running · 0 queued · 5.01 MiB this month");
    await screenshots("jobs", { phone: true });
    await page.getByRole("button", { name: "Failed" }).click();
    await page.getByText("No failed jobs").waitFor();
    await page.getByRole("button", { name: "All" }).click();
    await row.waitFor();
  });

  it("adds a webhook endpoint, refusing a private address, and shows its secret once", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Webhooks" }).click();
    await page.getByRole("heading", { name: "Webhooks", level: 1 }).waitFor();
    await page.getByLabel("URL").fill("https://10.0.0.7/hook");
    await page.getByRole("button", { name: "Add endpoint" }).click();
    await page.getByRole("alert").filter({ hasText: "must be a public address: 10.0.0.7 is" }).waitFor();
    await page.getByLabel("URL").fill("https://hooks.example.com/torreclou");
    await page.getByRole("checkbox", { name: "Completed" }).uncheck();
    await page.getByRole("button", { name: "Add endpoint" }).click();
    expect((await page.getByTestId("webhook-secret").textContent())?.trim()).toMatch(/^whsec_\S{32}$/);
    const item = page.getByRole("listitem").filter({ hasText: "https://hooks.example.com/torreclou" });
    await item.waitFor();
    expect(await item.textContent()).toContain("Failed, Cancelled, Waiting for a file choice");
    await screenshots("webhooks", { phone: true });
    await page.getByRole("button", { name: "I have stored it; hide it" }).click();
    expect(await page.getByTestId("webhook-secret").count()).toBe(0);
  });

  it("cancels a running job", async () => {
    // A magnet link nobody seeds: the job stays running (looking for metadata) until cancelled.
    const hash = "0123456789abcdef0123456789abcdef01234567";
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "New job" }).click();
    await page.getByLabel("Or a magnet link").fill(`magnet:?xt=urn:btih:${hash}&dn=Nobody%20seeds%20this`);
    await page.getByRole("button", { name: "Read link" }).click();
    await page.getByTestId("torrent-name").waitFor();
    expect(await page.getByTestId("torrent-name").textContent()).toBe("Nobody seeds this");
    await page.getByRole("button", { name: /^Start job/ }).click();
    await expect.poll(() => new URL(page.url()).pathname).toMatch(/^\/jobs\/[0-9a-f-]{36}$/);
    expect(page.url()).not.toBe(completedJobUrl);
    const jobUrl = page.url();
    const status = page.getByTestId("job-status");
    await expect
      .poll(async () => (await status.textContent())?.trim())
      .toMatch(/Queued|Finding metadata|Downloading/);
    // While it looks for the metadata the page says so, with the time it has spent (not "Peers 0 · ETA 0 s").
    await expect
      .poll(
        async () =>
          (
            await page
              .getByTestId("job-resolving")
              .textContent()
              .catch(() => "")
          )?.trim(),
        {
          timeout: 30_000,
        },
      )
      .toMatch(/^Finding metadata — no peers found yet, \d+ s$/);

    // In the list it is running, with live numbers; the finished job is below it.
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Jobs" }).click();
    const running = page.getByTestId("job-row").first();
    await running.getByText("Nobody seeds this").waitFor();
    expect(await running.getByTestId("job-status").textContent()).toMatch(
      /Queued|Finding metadata|Downloading/,
    );
    await running.getByText("Peers").waitFor();
    expect(await page.getByTestId("job-row").count()).toBe(2);
    await screenshots("jobs-running", { phone: true });
    await page.getByRole("button", { name: "Running" }).click();
    await expect.poll(() => page.getByTestId("job-row").count()).toBe(1);
    await running.getByRole("link", { name: "Nobody seeds this" }).click();
    await expect.poll(() => page.url()).toBe(jobUrl);
    await page.getByRole("button", { name: "Cancel this job" }).click();
    await page.getByRole("button", { name: "Cancel job" }).click();
    await expect
      .poll(async () => (await status.textContent())?.trim(), { timeout: 30_000 })
      .toBe("Cancelled");
    await page.getByTestId("timeline").getByText("Cancelled", { exact: true }).waitFor();
    await page.getByRole("button", { name: "Retry" }).waitFor();
    await badgeMatchesTimeline();
    // Said once: "Cancelled by user", not "Cancelled by user: cancelled by the user".
    const timeline = (await page.getByTestId("timeline").textContent()) ?? "";
    expect(timeline).toContain("Cancelled by user");
    expect(timeline).not.toMatch(/cancelled by the user/i);
    await screenshots("job-cancelled");
  });

  it("lists the cancelled job's webhook delivery, to be sent again", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Webhooks" }).click();
    const item = page.getByRole("listitem").filter({ hasText: "https://hooks.example.com/torreclou" });
    await item.getByRole("button", { name: "Deliveries" }).click();
    const deliveries = item.getByTestId("webhook-deliveries");
    await deliveries.getByRole("cell", { name: /^Cancelled/ }).waitFor();
    expect(await deliveries.getByRole("button", { name: "Send again" }).count()).toBe(1);
  });

  it("finds jobs by name and destination, with keys, and cancels, retries and deletes them in bulk", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Jobs" }).click();
    await page.getByRole("heading", { name: "Jobs", level: 1 }).waitFor();
    const rows = page.getByTestId("job-row");
    await expect.poll(() => rows.count()).toBe(2);
    const nobody = rows.filter({ hasText: "Nobody seeds this" });
    const demo = rows.filter({ hasText: "TorreClou Demo" });

    // "/" goes to the search; it matches any part of the name, in any case.
    await page.getByRole("heading", { name: "Jobs", level: 1 }).click();
    await page.keyboard.press("/");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("job-search");
    await page.keyboard.type("NOBODY");
    await expect.poll(() => rows.count()).toBe(1);
    expect(await nobody.count()).toBe(1);
    expect(new URL(page.url()).searchParams.get("q")).toBe("NOBODY");
    await page.getByLabel("Search jobs by name").fill("");
    await expect.poll(() => rows.count()).toBe(2);

    // By destination: both jobs went to "Local S3", none to the dev stack's bucket.
    await page.getByLabel("Destination").selectOption({ label: "Local S3 (dev stack)" });
    await page.getByText("No jobs going to this destination.").waitFor();
    await page.getByLabel("Destination").selectOption({ label: "Local S3" });
    await expect.poll(() => rows.count()).toBe(2);
    await page.getByLabel("Destination").selectOption({ label: "All destinations" });
    await expect.poll(() => rows.count()).toBe(2);

    // j moves to the first job, x selects it, Esc clears.
    await page.getByRole("heading", { name: "Jobs", level: 1 }).click();
    await page.keyboard.press("j");
    await page.keyboard.press("x");
    await expect
      .poll(async () => (await page.getByTestId("selected-count").textContent())?.trim())
      .toBe("1 selected");
    await page.keyboard.press("Escape");
    await expect.poll(() => page.getByTestId("selected-count").count()).toBe(0);

    // Select all: retry applies to the cancelled job only, and asks first.
    await page.getByLabel("Select all").check();
    await page.getByRole("button", { name: "Retry 1 selected job" }).click();
    await page.getByRole("button", { name: "Retry 1 job" }).click();
    await expect
      .poll(async () => (await page.getByTestId("bulk-result").textContent())?.trim())
      .toBe("1 job queued again.");
    await expect
      .poll(async () => (await nobody.getByTestId("job-status").textContent())?.trim())
      .toMatch(/Queued|Finding metadata|Downloading/);
    await screenshots("jobs-selected", { phone: true });

    // Cancel applies to the running one.
    await page.getByRole("button", { name: "Cancel 1 selected job" }).click();
    await page.getByRole("button", { name: "Cancel 1 job" }).click();
    await expect
      .poll(async () => (await page.getByTestId("bulk-result").textContent())?.trim())
      .toBe("1 job cancelled.");
    await expect
      .poll(async () => (await nobody.getByTestId("job-status").textContent())?.trim())
      .toBe("Cancelled");
    expect(await demo.getByTestId("job-status").textContent()).toBe("Completed");

    // Delete both, after confirming.
    await page.getByRole("button", { name: "Delete 2 selected jobs" }).click();
    await page.getByRole("button", { name: "Delete 2 jobs" }).click();
    await page.getByText("No jobs yet").waitFor();
  });

  it("connects OneDrive and Dropbox through their consent round trips and stores the demo torrent in each", async () => {
    const providers = [
      // OneDrive's consent takes the signed-in email as its hint; Dropbox's double has one consenting account.
      { key: "onedrive", label: "OneDrive", port: ports.onedrive, account: "ada@example.com" },
      { key: "dropbox", label: "Dropbox", port: ports.dropbox, account: "dropbox-user@example.com" },
    ];
    const nav = page.getByRole("navigation", { name: "Main" });
    for (const provider of providers) {
      await nav.getByRole("link", { name: "Storage" }).click();
      await page.getByRole("button", { name: `Connect ${provider.label}` }).click();
      await page.getByTestId(`${provider.key}-connected`).waitFor();
      await expect.poll(() => new URL(page.url()).search).toBe("");
      const row = page.getByTestId("storage-profile").filter({ hasText: `${provider.label} ·` });
      await expect.poll(() => row.count()).toBe(1);
      expect(await row.textContent()).toContain(provider.account);

      await nav.getByRole("link", { name: "New job" }).click();
      await page.getByTestId("torrent-input").setInputFiles(demoTorrent);
      await page.getByTestId("torrent-name").waitFor();
      await page.locator("#destination").selectOption({ label: `${provider.label} (${provider.account})` });
      await page.getByLabel("Folder in the destination").fill(`demo-${provider.key}`);
      await page.getByRole("button", { name: /^Start job/ }).click();
      await expect
        .poll(() => new URL(page.url()).pathname, { timeout: 20_000 })
        .toMatch(/^\/jobs\/[0-9a-f-]{36}$/);
      await expect
        .poll(async () => (await page.getByTestId("job-status").textContent())?.trim(), {
          timeout: 150_000,
          interval: 1000,
        })
        .toBe("Completed");

      // Every file is in the account, under the job's folder, with the seeded sizes.
      const listed = await fetch(
        `http://127.0.0.1:${provider.port}/__files?email=${encodeURIComponent(provider.account)}`,
      );
      const { files } = (await listed.json()) as { files: { path: string; size: number }[] };
      const sizes = new Map(files.map((f) => [f.path.replace(/^\//, ""), f.size]));
      const paths = [...sizes.keys()];
      const a = paths.find((k) => k.startsWith(`demo-${provider.key}/`) && k.endsWith("video/sample-a.bin"));
      const b = paths.find((k) => k.startsWith(`demo-${provider.key}/`) && k.endsWith("audio/sample-b.bin"));
      expect(a, `files: ${paths.join(", ")}`).toBeDefined();
      expect(sizes.get(a!)).toBe(3 * 1024 * 1024 + 12_345);
      expect(sizes.get(b!)).toBe(2 * 1024 * 1024 - 777);

      // Disconnected again, the storage page is as before.
      await nav.getByRole("link", { name: "Storage" }).click();
      await row.getByRole("button", { name: /^Disconnect / }).click();
      await page.getByRole("button", { name: "Disconnect now" }).click();
      await expect.poll(() => row.count()).toBe(0);
    }
  });

  it("returns to the sign-in screen after signing out", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await expect.poll(() => new URL(page.url()).pathname).toBe("/signin");
    await page.goto(`${web}/jobs`);
    await expect.poll(() => new URL(page.url()).pathname).toBe("/signin");
  });

  it("takes a new person from sign-in to a stored file, as the README says", async () => {
    // 1. Sign in.
    await page.getByLabel("Email").fill("grace@example.com");
    const signedIn = page.waitForResponse((r) => new URL(r.url()).pathname === "/api/auth/dev");
    await page.getByRole("button", { name: "Sign in with email" }).click();
    const answer = (await (await signedIn).json()) as {
      storageCreated?: { name: string };
      storageError?: string;
    };
    expect(answer.storageCreated?.name, answer.storageError).toBe("Local S3 (dev stack)");
    await page.getByRole("heading", { name: "Jobs", level: 1 }).waitFor();
    // 2. Pick the demo torrent.
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "New job" }).click();
    await page.getByTestId("torrent-input").setInputFiles(demoTorrent);
    await page.getByTestId("torrent-name").waitFor();
    // The fleet asked the demo torrent's tracker: its seeder is there (with a worker still
    // seeding after an earlier job of the demo, maybe more: the answer is cached for minutes).
    await page
      .getByTestId("swarm-health")
      .getByText(/^[1-9]\d* seeders? and \d+ leechers? reported\.$/)
      .waitFor({ timeout: 60_000 });
    // The dev stack gave this account the local bucket: nothing to set up (once the destinations have loaded).
    await page
      .locator("#destination option:checked", { hasText: "Local S3 (dev stack)" })
      .waitFor({ state: "attached" });
    expect(await page.getByTestId("storage-setup").count()).toBe(0);
    // Asked to be told when jobs finish (and allowed it).
    await context.grantPermissions(["notifications"], { origin: web });
    await page.evaluate(() => {
      // Every title the tab shows (the page puts the old one back once the person is back in the tab).
      const titles: string[] = [];
      (window as unknown as { shownTitles: string[] }).shownTitles = titles;
      new MutationObserver(() => titles.push(document.title)).observe(document.head, {
        subtree: true,
        childList: true,
        characterData: true,
      });
      const shown: string[] = [];
      (window as unknown as { shownNotifications: string[] }).shownNotifications = shown;
      const Real = window.Notification;
      window.Notification = class extends Real {
        constructor(title: string, options?: NotificationOptions) {
          shown.push(title);
          super(title, options);
        }
      } as typeof Notification;
    });
    // 3. Choose files (all of them), 4. start.
    expect(await page.getByTestId("selected-total").textContent()).toMatch(/^3 of 3 files selected/);
    await page.getByRole("button", { name: /^Start job/ }).click();
    await expect.poll(() => new URL(page.url()).pathname).toMatch(/^\/jobs\/[0-9a-f-]{36}$/);
    await expect
      .poll(async () => (await page.getByTestId("job-status").textContent())?.trim(), {
        timeout: 150_000,
        interval: 1000,
      })
      .toBe("Completed");
    await badgeMatchesTimeline();
    // Told: the tab's title and a system notification.
    // The page says so once it has seen the ending (its next look at the job, not the badge's).
    await expect
      .poll(() => page.evaluate(() => (window as unknown as { shownTitles: string[] }).shownTitles), {
        timeout: 30_000,
      })
      .toContain("✓ Done: TorreClou Demo — TorreClou");
    await expect
      .poll(
        () => page.evaluate(() => (window as unknown as { shownNotifications: string[] }).shownNotifications),
        { timeout: 30_000 },
      )
      .toEqual(["✓ Done: TorreClou Demo"]);
    // 5. Open the stored file.
    const readme = page.getByTestId("file-link").filter({ hasText: "README.txt" });
    const href = (await readme.getAttribute("href")) ?? "";
    expect(decodeURIComponent(href)).toContain("/TorreClou Demo/");
    const stored = await fetch(href);
    expect(stored.status).toBe(200);
    expect(await stored.text()).toContain("TorreClou demo torrent");
  });

  it("runs the demo magnet with a choice of its files, made once the worker has the file list", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "New job" }).click();
    await page.getByLabel("Or a magnet link").fill(demoMagnet);
    await page.getByRole("button", { name: "Read link" }).click();
    await page.getByTestId("torrent-name").waitFor();
    await page.getByTestId("choose-files").check();
    expect(await page.getByTestId("magnet-note").textContent()).toMatch(/waits on its page for you to pick/);
    await page.getByRole("button", { name: /^Start job/ }).click();
    await expect.poll(() => new URL(page.url()).pathname).toMatch(/^\/jobs\/[0-9a-f-]{36}$/);

    // The worker fetches the file list and lets go; the page shows the same tree as for a .torrent.
    const chooser = page.getByTestId("choose-files-form");
    await chooser.waitFor({ timeout: 90_000 });
    expect((await page.getByTestId("job-status").textContent())?.trim()).toBe("Choose files");
    const total = chooser.getByTestId("selected-total");
    expect(await total.textContent()).toMatch(/^3 of 3 files selected/);
    await screenshots("job-choose-files", { phone: true });
    await chooser.getByRole("checkbox", { name: /^README\.txt,/ }).uncheck();
    expect(await total.textContent()).toMatch(/^2 of 3 files selected/);
    await chooser.getByLabel("Folder in the destination").fill("magnet-choice");
    await chooser.getByTestId("start-selection").click();

    await expect
      .poll(async () => (await page.getByTestId("job-status").textContent())?.trim(), {
        timeout: 150_000,
        interval: 1000,
      })
      .toBe("Completed");
    await badgeMatchesTimeline();
    const rows = page.getByTestId("job-file");
    expect(await rows.count()).toBe(2);
    const names = (await rows.allTextContents()).join("\n");
    expect(names).toContain("video/sample-a.bin");
    expect(names).toContain("audio/sample-b.bin");
    expect(names).not.toContain("README.txt");
    const timeline = (await page.getByTestId("timeline").textContent()) ?? "";
    expect(timeline).toContain("Choose files");
    expect(timeline).toContain("2 files chosen by the user");
    for (const link of await page.getByTestId("file-link").all()) {
      const href = (await link.getAttribute("href")) ?? "";
      expect(decodeURIComponent(href)).toContain("/magnet-choice/");
      expect((await fetch(href)).status).toBe(200);
    }
  });

  it("says an unknown job is not found instead of loading forever", async () => {
    for (const id of ["00000000-0000-4000-8000-000000000000", "not-a-job"]) {
      await page.goto(`${web}/jobs/${id}`);
      await page.getByTestId("job-not-found").waitFor();
      expect(await page.getByTestId("job-not-found").textContent()).toMatch(/Job not found/);
    }
  });

  it("lets a person without storage add a bucket on the new-job page, keeping the torrent", async () => {
    // Without storage (as on a real deployment): remove the one the dev stack gave.
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Storage" }).click();
    await page.getByRole("button", { name: "Delete storage Local S3 (dev stack)" }).click();
    await page.getByRole("button", { name: "Delete now" }).click();
    await page.getByText("No storage yet").waitFor();

    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "New job" }).click();
    await page.getByTestId("torrent-input").setInputFiles(demoTorrent);
    await page.getByTestId("torrent-name").waitFor();
    await page.getByRole("checkbox", { name: /^README\.txt,/ }).uncheck();
    const setup = page.getByTestId("storage-setup");
    await setup.waitFor();
    // Drive is offered beside S3; the job cannot start yet.
    await setup.getByRole("button", { name: "Connect Google Drive" }).waitFor();
    expect(await page.getByRole("button", { name: /^Start job/ }).isDisabled()).toBe(true);
    await screenshots("new-job-no-storage", { phone: true });

    await fillS3("My bucket", "torreclou-local-secret");
    await setup.getByRole("button", { name: "Check and save" }).click();
    await expect.poll(() => setup.count()).toBe(0);
    // The torrent and the choice of files are still there, and the new bucket is the destination.
    expect(await page.getByTestId("torrent-name").textContent()).toBe("TorreClou Demo");
    expect(await page.getByTestId("selected-total").textContent()).toMatch(/^2 of 3 files selected/);
    await expect.poll(() => page.locator("#destination option:checked").textContent()).toContain("My bucket");
    await expect.poll(() => page.getByRole("button", { name: /^Start job/ }).isDisabled()).toBe(false);
  });

  it("links the Operator page for operators only, showing the workers and each person's usage", async () => {
    const nav = page.getByRole("navigation", { name: "Main" });
    await nav.getByRole("link", { name: "Jobs" }).waitFor();
    // The person signed in so far is not an operator.
    expect(await nav.getByRole("link", { name: "Operator" }).count()).toBe(0);
    await page.getByRole("button", { name: "Sign out" }).click();
    await expect.poll(() => new URL(page.url()).pathname).toBe("/signin");
    await page.getByLabel("Email").fill(localOperatorEmail);
    await page.getByRole("button", { name: "Sign in with email" }).click();
    // Back on the page the last person was on, now with the Operator link.
    await nav.getByRole("link", { name: "Operator" }).click();
    await page.getByRole("heading", { name: "Operator", level: 1 }).waitFor();
    // The dev stack's worker wrote its heartbeat record when it started.
    const workers = page.getByTestId("ops-workers");
    await workers.waitFor();
    expect(await workers.textContent()).toMatch(/\d+ of \d+/);
    // The people of the earlier tests, with this month's bytes.
    await page.getByTestId("ops-users").getByText("grace@example.com").waitFor();
    await page.getByTestId("ops-queue").waitFor();
    await screenshots("operator");
  });
});
