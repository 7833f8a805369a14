import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { loadConfig, stackIdOf } from "./config.ts";
import { ownScratchJobs, prepareScratchDir, ScratchBudget } from "./scratch.ts";

const roots: string[] = [];
afterEach(async () => {
  for (const root of roots.splice(0)) await rm(root, { recursive: true, force: true });
});

describe("scratch folders of more than one stack", () => {
  it("lists only the folders a stack marked as its own", async () => {
    const root = await mkdtemp(join(tmpdir(), "torreclou-scratch-test-"));
    roots.push(root);
    await prepareScratchDir(join(root, "job-a"), "stack-a");
    await prepareScratchDir(join(root, "job-b"), "stack-b");
    await mkdir(join(root, "unmarked"));
    // Preparing again (a resumed attempt) keeps the mark.
    await prepareScratchDir(join(root, "job-a"), "stack-a");
    expect(await ownScratchJobs(root, "stack-a")).toEqual(["job-a"]);
    expect(await ownScratchJobs(root, "stack-b")).toEqual(["job-b"]);
    expect(await ownScratchJobs(join(root, "missing"), "stack-a")).toEqual([]);
  });

  it("gives each stack its own default folder, named without credentials", () => {
    const a = stackIdOf("postgres://u:one@db:5432/a", "redis://r:6379/0");
    expect(stackIdOf("postgres://other:two@db:5432/a", "redis://:x@r:6379/0")).toBe(a);
    expect(stackIdOf("postgres://u:one@db:5432/b", "redis://r:6379/0")).not.toBe(a);
    expect(stackIdOf("postgres://u:one@db:5432/a", "redis://r:6379/1")).not.toBe(a);
    const env = {
      DATABASE_URL: "postgres://u:secret@db:5432/a",
      REDIS_URL: "redis://r:6379/0",
      CREDENTIALS_KEYS: "k",
    };
    const config = loadConfig(env);
    expect(config.WORKER_SCRATCH_DIR).toBe(join(tmpdir(), "torreclou-scratch", a));
    expect(config.WORKER_SCRATCH_DIR).not.toContain("secret");
    expect(loadConfig({ ...env, WORKER_SCRATCH_DIR: "/srv/scratch" }).WORKER_SCRATCH_DIR).toBe(
      "/srv/scratch",
    );
  });

  it("turns LAN discovery and router port mapping off unless asked, and parses the egress exceptions", () => {
    const env = { DATABASE_URL: "postgres://db/a", REDIS_URL: "redis://r", CREDENTIALS_KEYS: "k" };
    const config = loadConfig(env);
    expect([config.WORKER_LSD, config.WORKER_NAT_UPNP, config.WORKER_NAT_PMP]).toEqual([false, false, false]);
    expect(config.WORKER_DHT).toBe(true);
    // The providers' endpoints (Drive, OneDrive, Dropbox) are the operator's own and allowed by themselves.
    expect(config.EGRESS_ALLOW).toEqual([
      { host: "www.googleapis.com", port: 443 },
      { host: "oauth2.googleapis.com", port: 443 },
      { host: "graph.microsoft.com", port: 443 },
      { host: "login.microsoftonline.com", port: 443 },
      { host: "api.dropboxapi.com", port: 443 },
      { host: "content.dropboxapi.com", port: 443 },
    ]);
    expect(
      loadConfig({ ...env, EGRESS_ALLOW: "minio:9000 [fd00::5]:9000" }).EGRESS_ALLOW.slice(0, 2),
    ).toEqual([
      { host: "minio", port: 9000 },
      { host: "fd00::5", port: 9000 },
    ]);
    expect(() => loadConfig({ ...env, EGRESS_ALLOW: "minio" })).toThrow(
      /EGRESS_ALLOW: "minio" is not host:port/,
    );
  });
});

describe("a scratch budget shared through its folder's ledger", () => {
  it("counts the processes holding it or waiting for it, so each can take its share", async () => {
    const root = await mkdtemp(join(tmpdir(), "torreclou-ledger-"));
    roots.push(root);
    const plenty = async () => 1024 ** 4;
    const a = new ScratchBudget({ total: 16, root, holder: "a", freeSpace: plenty });
    const b = new ScratchBudget({ total: 16, root, holder: "b", freeSpace: plenty });
    try {
      await a.acquire(12, new AbortController().signal);
      expect(a.sharers).toBe(1);
      // b waits for room; the ledger shows it waiting.
      const waits: string[] = [];
      const taken = b.acquire(8, new AbortController().signal, (w) => waits.push(w.reason));
      await expect
        .poll(async () => JSON.parse(await readFile(join(root, ".scratch-ledger.json"), "utf8")).b?.waiting, {
          timeout: 30_000,
        })
        .toBe(true);
      expect(waits).toEqual([expect.stringMatching(/in use by other jobs/)]);
      // a sees it at its next look at the ledger.
      expect(await a.tryAcquire(1)).toBe(true);
      expect(a.sharers).toBe(2);
      a.release(13);
      await taken;
      expect(b.used).toBe(8);
      // a holds nothing and waits for nothing: b has the budget to itself.
      expect(b.sharers).toBe(1);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
