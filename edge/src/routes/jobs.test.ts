import { keys } from "@torreclou/contracts";
import { jobs } from "@torreclou/db";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { addStorageProfile, redis, withDb } from "../../test/fixtures/db.ts";
import { type JobView, messagesFor, send, submitJob, userWithStorage } from "../../test/fixtures/jobs.ts";
import { makeTorrent, randomMagnet, toBase64 } from "../../test/fixtures/torrents.ts";
import { call, fromWebApp, signIn } from "../../test/helpers.ts";

interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

const errorOf = async (response: Response) => ((await response.json()) as ErrorBody).error;
const jobOf = async (response: Response) => ((await response.json()) as { job: JobView }).job;

describe("POST /api/jobs", () => {
  it("creates a job from a .torrent into the default storage, queued and enqueued", async () => {
    const user = await userWithStorage();
    const torrent = await makeTorrent({ name: "Album" });
    const response = await send(user.cookie, "POST", "/api/jobs", { torrent: toBase64(torrent.bytes) });
    expect(response.status).toBe(201);
    const job = await jobOf(response);
    expect(job).toMatchObject({
      state: "queued",
      attempt: 0,
      name: "Album",
      infoHash: torrent.infoHash,
      source: "torrent",
      storageProfileId: user.profileId,
      // No folder given: the torrent's own top folder, "Album/", at the destination's top.
      targetFolder: "",
      bytes: { total: 68_000, downloaded: 0, uploaded: 0 },
      fileCount: 3,
    });
    expect(job.enqueuedAt).not.toBeNull();
    expect(job.files.map((f) => [f.index, f.path, f.selected, f.state])).toEqual([
      [0, "Album/disc 1/track 01.flac", true, "pending"],
      [1, "Album/disc 1/track 02.flac", true, "pending"],
      [2, "Album/cover.jpg", true, "pending"],
    ]);
    expect(job.transitions).toMatchObject([{ from: null, to: "queued", cause: "user" }]);
    expect(await messagesFor(job.id)).toHaveLength(1);
    expect(await redis().get(keys.owner(job.id))).toBe(user.userId);
  });

  it("fetches only the selected files", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user, { files: [2, 0, 0] });
    expect(job.files.map((f) => f.selected)).toEqual([true, false, true]);
    expect(job.files.map((f) => f.state)).toEqual(["pending", "skipped", "pending"]);
    expect(job.bytes.total).toBe(43_000);
  });

  it("creates a job from a magnet link; its files come later from a worker", async () => {
    const user = await userWithStorage();
    const magnet = randomMagnet("Show S01");
    const response = await send(user.cookie, "POST", "/api/jobs", { magnet: magnet.uri });
    expect(response.status).toBe(201);
    const job = await jobOf(response);
    expect(job).toMatchObject({
      source: "magnet",
      name: "Show S01",
      infoHash: magnet.infoHash,
      fileCount: null,
      // Named after its files by the worker once they are known.
      targetFolder: null,
    });
    expect(job.files).toEqual([]);

    const picked = await send(user.cookie, "POST", "/api/jobs", { magnet: magnet.uri, files: [0] });
    expect(picked.status).toBe(422);
    expect((await errorOf(picked)).code).toBe("selection_needs_metadata");
  });

  it("refuses a torrent two of whose files the chosen destination would store under one name", async () => {
    const user = await userWithStorage();
    const onedrive = await addStorageProfile(user.userId, { isDefault: false, kind: "onedrive" });
    const torrent = await makeTorrent({
      name: "Docs",
      files: [
        { path: "Readme.txt", size: 1000 },
        { path: "README.txt", size: 1000 },
      ],
    });
    // S3 tells the two apart; OneDrive compares names without case.
    const toS3 = await send(user.cookie, "POST", "/api/jobs", { torrent: toBase64(torrent.bytes) });
    expect(toS3.status).toBe(201);
    const toOneDrive = await send(user.cookie, "POST", "/api/jobs", {
      torrent: toBase64(torrent.bytes),
      storageProfileId: onedrive.id,
    });
    expect(toOneDrive.status).toBe(422);
    const error = await errorOf(toOneDrive);
    expect(error.details).toMatchObject({
      problem: "name_clash",
      paths: ["Docs/Readme.txt", "Docs/README.txt"],
      destination: "OneDrive",
    });
  });

  it("says which files a destination stores under another name", async () => {
    const user = await userWithStorage();
    const onedrive = await addStorageProfile(user.userId, { isDefault: false, kind: "onedrive" });
    const torrent = await makeTorrent({
      name: "Show",
      files: [
        { path: "what? <cut>.mkv", size: 1000 },
        { path: "plain.mkv", size: 1000 },
      ],
    });
    const response = await send(user.cookie, "POST", "/api/jobs", {
      torrent: toBase64(torrent.bytes),
      storageProfileId: onedrive.id,
    });
    expect(response.status).toBe(201);
    const job = (await response.json()) as { job: { files: { path: string; storedAs: string | null }[] } };
    expect(job.job.files.map((f) => [f.path, f.storedAs])).toEqual([
      ["Show/what? <cut>.mkv", "Show/what？ ＜cut＞.mkv"],
      ["Show/plain.mkv", null],
    ]);
  });

  it("uses the chosen storage profile and cleans the target folder", async () => {
    const user = await userWithStorage();
    const other = await addStorageProfile(user.userId, { isDefault: false });
    const job = await submitJob(user, {
      storageProfileId: other.id,
      targetFolder: "  /Music//2024\\live/./ ",
    });
    expect(job.storageProfileId).toBe(other.id);
    expect(job.targetFolder).toBe("Music/2024/live");
    const blank = await submitJob(user, { targetFolder: " / " });
    expect(blank.targetFolder).toBe("");
  });

  it("names the folder of a one-file torrent after it when none is given", async () => {
    const user = await userWithStorage();
    const torrent = await makeTorrent({
      name: "ubuntu-24.04.iso",
      files: [{ path: "ubuntu-24.04.iso", size: 20_000 }],
    });
    const response = await send(user.cookie, "POST", "/api/jobs", { torrent: toBase64(torrent.bytes) });
    expect(response.status).toBe(201);
    const job = await jobOf(response);
    expect(job.targetFolder).toBe("ubuntu-24.04");
    expect(job.files.map((f) => f.path)).toEqual(["ubuntu-24.04.iso"]);
  });

  it("refuses a target folder that climbs out or hides control characters", async () => {
    const user = await userWithStorage();
    const torrent = toBase64((await makeTorrent()).bytes);
    for (const targetFolder of ["a/../../b", "..", "bad\u0000name", "x".repeat(300)]) {
      const response = await send(user.cookie, "POST", "/api/jobs", { torrent, targetFolder });
      expect(response.status, targetFolder).toBe(400);
      expect((await errorOf(response)).message).toMatch(/^targetFolder:/);
    }
  });

  it("refuses file indexes the torrent does not have, and an empty selection", async () => {
    const user = await userWithStorage();
    const torrent = toBase64((await makeTorrent()).bytes);
    const outOfRange = await send(user.cookie, "POST", "/api/jobs", { torrent, files: [1, 3, 99] });
    expect(outOfRange.status).toBe(422);
    const error = await errorOf(outOfRange);
    expect(error).toMatchObject({ code: "unknown_files", details: { unknown: [3, 99] } });
    expect(error.message).toMatch(/no file with index 3, 99/);
    const none = await send(user.cookie, "POST", "/api/jobs", { torrent, files: [] });
    expect(none.status).toBe(422);
    const negative = await send(user.cookie, "POST", "/api/jobs", { torrent, files: [-1] });
    expect(negative.status).toBe(400);
  });

  it("tells a user without storage to add some (409), and hides other users' profiles (404)", async () => {
    const { cookie } = await signIn();
    const torrent = toBase64((await makeTorrent()).bytes);
    const none = await send(cookie, "POST", "/api/jobs", { torrent });
    expect(none.status).toBe(409);
    const error = await errorOf(none);
    expect(error.code).toBe("no_storage");
    expect(error.message).toMatch(/add an S3 bucket or Google Drive/);

    const stranger = await userWithStorage();
    const foreign = await send(cookie, "POST", "/api/jobs", {
      torrent,
      storageProfileId: stranger.profileId,
    });
    expect(foreign.status).toBe(404);
    expect((await errorOf(foreign)).code).toBe("storage_profile_not_found");
  });

  it("refuses a profile that needs reconnecting", async () => {
    const { cookie, userId } = await signIn();
    await addStorageProfile(userId, { status: "needs_reconnect" });
    const response = await send(cookie, "POST", "/api/jobs", {
      torrent: toBase64((await makeTorrent()).bytes),
    });
    expect(response.status).toBe(409);
    expect((await errorOf(response)).code).toBe("storage_needs_reconnect");
  });

  it("refuses malformed requests with the error shape", async () => {
    const user = await userWithStorage();
    const torrent = toBase64((await makeTorrent()).bytes);
    const both = await send(user.cookie, "POST", "/api/jobs", { torrent, magnet: randomMagnet().uri });
    expect(both.status).toBe(400);
    expect((await send(user.cookie, "POST", "/api/jobs", {})).status).toBe(400);
    const text = await call("/api/jobs", {
      method: "POST",
      headers: fromWebApp(user.cookie, { "content-type": "text/plain" }),
      body: "hi",
    });
    expect(text.status).toBe(415);
    const broken = await call("/api/jobs", {
      method: "POST",
      headers: fromWebApp(user.cookie, { "content-type": "application/json" }),
      body: "{",
    });
    expect(broken.status).toBe(400);
    expect(await broken.json()).toEqual({
      error: { code: "invalid_request", message: "The body is not valid JSON." },
    });
    const bad = await send(user.cookie, "POST", "/api/jobs", {
      torrent: toBase64(new TextEncoder().encode("nope")),
    });
    expect(bad.status).toBe(422);
    expect((await errorOf(bad)).code).toBe("invalid_torrent");
    const anonymous = await call("/api/jobs", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ torrent }),
    });
    expect(anonymous.status).toBe(401);
  });

  it("is rate limited", async () => {
    const user = await userWithStorage();
    const statuses: number[] = [];
    let refused: Response | undefined;
    // 30 a minute. The window slides: when a slow run crosses a minute's boundary, the
    // requests of the minute before weigh less and a few more get in, but never 30 more.
    while (!refused && statuses.length < 60) {
      const response = await send(user.cookie, "POST", "/api/jobs", { magnet: randomMagnet().uri });
      statuses.push(response.status);
      if (response.status === 429) refused = response;
    }
    expect(statuses.slice(0, 30).every((s) => s === 201)).toBe(true);
    expect(refused, `statuses: ${statuses.join(" ")}`).toBeDefined();
    expect(statuses.slice(0, -1).every((s) => s === 201)).toBe(true);
    expect((await errorOf(refused!)).code).toBe("rate_limited");
  });
});

describe("GET /api/jobs", () => {
  it("pages newest first with a cursor, and filters by state", async () => {
    const user = await userWithStorage();
    const created: string[] = [];
    for (let i = 0; i < 5; i++) created.push((await submitJob(user)).id);
    await send(user.cookie, "POST", `/api/jobs/${created[1]}/cancel`);

    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const query: string = cursor ? `?limit=2&cursor=${cursor}` : "?limit=2";
      const response = await send(user.cookie, "GET", `/api/jobs${query}`);
      expect(response.status).toBe(200);
      const page = (await response.json()) as { jobs: JobView[]; nextCursor: string | null };
      expect(page.jobs.length).toBeLessThanOrEqual(2);
      seen.push(...page.jobs.map((j) => j.id));
      cursor = page.nextCursor;
      pages++;
    } while (cursor && pages < 10);
    expect(pages).toBe(3);
    expect(seen).toEqual([...created].reverse());

    const cancelled = (await (await send(user.cookie, "GET", "/api/jobs?status=cancelled")).json()) as {
      jobs: JobView[];
    };
    expect(cancelled.jobs.map((j) => j.id)).toEqual([created[1]]);
    const live = (await (await send(user.cookie, "GET", "/api/jobs?status=queued,downloading")).json()) as {
      jobs: JobView[];
    };
    expect(live.jobs).toHaveLength(4);
  });

  it("finds jobs by a part of their name, in any case, and by destination", async () => {
    const user = await userWithStorage();
    const other = await addStorageProfile(user.userId, { isDefault: false });
    const names = ["Debian 13 netinst", "debian-live", "Ubuntu 100%_done", "Arch"];
    const ids: Record<string, string> = {};
    for (const [i, name] of names.entries()) {
      const response = await send(user.cookie, "POST", "/api/jobs", {
        magnet: randomMagnet(name).uri,
        ...(i === 3 ? { storageProfileId: other.id } : {}),
      });
      ids[name] = (await jobOf(response)).id;
    }
    const list = async (query: string) =>
      ((await (await send(user.cookie, "GET", `/api/jobs?${query}`)).json()) as { jobs: JobView[] }).jobs
        .map((j) => j.name)
        .sort();
    expect(await list("q=DEBIAN")).toEqual(["Debian 13 netinst", "debian-live"]);
    // % and _ are text here, not wildcards.
    expect(await list(`q=${encodeURIComponent("0%_")}`)).toEqual(["Ubuntu 100%_done"]);
    expect(await list("q=_")).toEqual(["Ubuntu 100%_done"]);
    expect(await list(`storage=${other.id}`)).toEqual(["Arch"]);
    expect(await list(`storage=${user.profileId}&q=live`)).toEqual(["debian-live"]);
    const bad = await send(user.cookie, "GET", "/api/jobs?storage=nope");
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).message).toMatch(/storage/);
  });

  it("shows a user only their own jobs", async () => {
    const owner = await userWithStorage();
    await submitJob(owner);
    const { cookie } = await signIn();
    const response = await send(cookie, "GET", "/api/jobs");
    expect(await response.json()).toEqual({ jobs: [], nextCursor: null });
  });

  it("refuses a bad cursor, limit or state", async () => {
    const { cookie } = await signIn();
    const cursor = (ts: string) =>
      btoa(JSON.stringify([ts, crypto.randomUUID()]))
        .replaceAll("+", "-")
        .replaceAll("/", "_")
        .replace(/=+$/, "");
    for (const query of [
      "cursor=nonsense",
      `cursor=${btoa('["x","y"]')}`,
      // The cursor's shape, but no instant Postgres can read.
      `cursor=${cursor("2024-13-45T99:99:99.000000Z")}`,
      `cursor=${cursor("2023-02-29T00:00:00.000000Z")}`,
      `cursor=${cursor("2024-01-01T24:00:00.000000Z")}`,
      `cursor=${cursor("0000-01-01T00:00:00.000000Z")}`,
      "limit=101",
      "status=done",
    ]) {
      const response = await send(cookie, "GET", `/api/jobs?${query}`);
      expect(response.status, query).toBe(400);
      expect((await errorOf(response)).code).toBe("invalid_request");
    }
    // A leap day and the last microsecond of a day are real instants.
    for (const ts of ["2024-02-29T23:59:59.999999Z", "2024-12-31T00:00:00.000000Z"]) {
      expect((await send(cookie, "GET", `/api/jobs?cursor=${cursor(ts)}`)).status, ts).toBe(200);
    }
  });
});

describe("GET /api/jobs/:id", () => {
  it("returns the job with files and timeline; 404 for anyone else; 400 for a non-id", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    const response = await send(user.cookie, "GET", `/api/jobs/${job.id}`);
    expect(response.status).toBe(200);
    expect(await jobOf(response)).toMatchObject({
      id: job.id,
      files: expect.any(Array),
      transitions: [{ to: "queued" }],
    });

    const other = await signIn();
    const hidden = await send(other.cookie, "GET", `/api/jobs/${job.id}`);
    expect(hidden.status).toBe(404);
    expect((await errorOf(hidden)).code).toBe("job_not_found");
    expect((await send(user.cookie, "GET", `/api/jobs/${crypto.randomUUID()}`)).status).toBe(404);
    expect((await send(user.cookie, "GET", "/api/jobs/not-a-uuid")).status).toBe(400);
  });
});

describe("cancel, retry, delete", () => {
  it("cancels a live job, raising the flag a running worker watches", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    const other = await signIn();
    expect((await send(other.cookie, "POST", `/api/jobs/${job.id}/cancel`)).status).toBe(404);

    const response = await send(user.cookie, "POST", `/api/jobs/${job.id}/cancel`);
    expect(response.status).toBe(200);
    const cancelled = await jobOf(response);
    expect(cancelled.state).toBe("cancelled");
    expect(cancelled.transitions.at(-1)).toMatchObject({ from: "queued", to: "cancelled", cause: "user" });
    expect(await redis().exists(keys.cancel(job.id))).toBe(1);

    const again = await send(user.cookie, "POST", `/api/jobs/${job.id}/cancel`);
    expect(again.status).toBe(409);
    expect(await errorOf(again)).toMatchObject({
      code: "illegal_transition",
      message: "A cancelled job cannot be cancelled.",
    });
  });

  it("retries a cancelled job: queued again as a later attempt than the cancel names, enqueued again", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    expect((await send(user.cookie, "POST", `/api/jobs/${job.id}/retry`)).status).toBe(409);
    await send(user.cookie, "POST", `/api/jobs/${job.id}/cancel`);
    const other = await signIn();
    expect((await send(other.cookie, "POST", `/api/jobs/${job.id}/retry`)).status).toBe(404);

    const response = await send(user.cookie, "POST", `/api/jobs/${job.id}/retry`);
    expect(response.status).toBe(200);
    const retried = await jobOf(response);
    expect(retried.state).toBe("queued");
    expect(retried.enqueuedAt).not.toBeNull();
    expect(retried.transitions.map((t) => t.to)).toEqual(["queued", "cancelled", "queued"]);
    // The flag stays for the attempt it stopped; the retry is a later one, which it does not stop.
    const [row] = await withDb((db) =>
      db.select({ attempt: jobs.attempt }).from(jobs).where(eq(jobs.id, job.id)),
    );
    expect(Number(await redis().get(keys.cancel(job.id)))).toBe(row!.attempt - 1);
    expect(await messagesFor(job.id)).toHaveLength(2);
    // The cancel asked a worker to abort whatever uploads the job left, whether or not one ran it.
    expect(await messagesFor(job.id, "cleanup")).toHaveLength(1);
  });

  it("retries a failed job", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    await withDb((db) =>
      db.update(jobs).set({ state: "failed", failureReason: "tracker said no" }).where(eq(jobs.id, job.id)),
    );
    const retried = await jobOf(await send(user.cookie, "POST", `/api/jobs/${job.id}/retry`));
    expect(retried).toMatchObject({ state: "queued", failureReason: null });
  });

  it("deletes only finished jobs, with their progress keys", async () => {
    const user = await userWithStorage();
    const job = await submitJob(user);
    const live = await send(user.cookie, "DELETE", `/api/jobs/${job.id}`);
    expect(live.status).toBe(409);
    expect((await errorOf(live)).message).toMatch(/queued job cannot be deleted; cancel it first/);

    await send(user.cookie, "POST", `/api/jobs/${job.id}/cancel`);
    const other = await signIn();
    expect((await send(other.cookie, "DELETE", `/api/jobs/${job.id}`)).status).toBe(404);

    const r = redis();
    await r.set(keys.snapshot(job.id), "{}");
    const response = await send(user.cookie, "DELETE", `/api/jobs/${job.id}`);
    expect(response.status).toBe(204);
    expect((await send(user.cookie, "GET", `/api/jobs/${job.id}`)).status).toBe(404);
    expect(await r.exists(keys.owner(job.id), keys.snapshot(job.id), keys.cancel(job.id))).toBe(0);
    expect((await send(user.cookie, "DELETE", `/api/jobs/${job.id}`)).status).toBe(404);
  });
});
