// Seeding back through the API: what POST /api/jobs grants (validated, capped
// by the operator's limits, none by default), the job view's `seed` and
// `seeding`, and the owner's stop (a flag the worker reads as it renews),
// refused for another user's job or one that does not seed; deleting a
// seeding job flags it too.
import { keys, type SeedingProgress, seedStopFlag } from "@torreclou/contracts";
import { claimJob, transitionJob } from "@torreclou/db/jobs";
import { describe, expect, it } from "vitest";
import { redis, withDb } from "../../test/fixtures/db.ts";
import {
  type JobView,
  publishProgress,
  send,
  submitJob,
  type TestUser,
  userWithStorage,
} from "../../test/fixtures/jobs.ts";
import { makeTorrent, toBase64 } from "../../test/fixtures/torrents.ts";
import { call } from "../../test/helpers.ts";

type SeedView = JobView & {
  seed: { ratio: number; minutes: number } | null;
  seeding: SeedingProgress | null;
};

interface ErrorBody {
  error: { code: string; message: string };
}

const jobOf = async (response: Response) => ((await response.json()) as { job: SeedView }).job;
const errorOf = async (response: Response) => ((await response.json()) as ErrorBody).error;

async function create(user: TestUser, seed: unknown): Promise<Response> {
  const torrent = await makeTorrent();
  return send(user.cookie, "POST", "/api/jobs", { torrent: toBase64(torrent.bytes), seed });
}

/** Moves a job to completed as its worker does. */
async function complete(jobId: string): Promise<void> {
  await withDb(async (db) => {
    const claimed = await claimJob(db, jobId);
    for (const to of ["downloading", "uploading", "completed"] as const)
      await transitionJob(db, { jobId, to, cause: "worker", attempt: claimed!.attempt });
  });
}

const seeding = (over: Partial<SeedingProgress> = {}): SeedingProgress => ({
  source: "disk",
  uploaded: 120 * 1024 * 1024,
  ratio: 0.42,
  peers: 3,
  ratioLimit: 1,
  until: Date.now() + 3_600_000,
  since: Date.now(),
  ...over,
});

describe("POST /api/jobs with seed", () => {
  it("grants what is asked within the operator's limits (ratio 2, a day by default)", async () => {
    const user = await userWithStorage();
    const capped = await create(user, { ratio: 5, minutes: 10_000 });
    expect(capped.status).toBe(201);
    expect((await jobOf(capped)).seed).toEqual({ ratio: 2, minutes: 1440 });
    // A limit left out is the operator's cap.
    expect((await jobOf(await create(user, { ratio: 1 }))).seed).toEqual({ ratio: 1, minutes: 1440 });
    expect((await jobOf(await create(user, { minutes: 30 }))).seed).toEqual({ ratio: 2, minutes: 30 });
  });

  it("seeds nothing unless asked (the default), or when asked for 0", async () => {
    const user = await userWithStorage();
    expect((await submitJob(user)) as SeedView).toMatchObject({ seed: null });
    expect((await jobOf(await create(user, { ratio: 0 }))).seed).toBeNull();
  });

  it("refuses a seed that is not one, naming the field", async () => {
    const user = await userWithStorage();
    for (const bad of [{ ratio: -1 }, { ratio: "1" }, { minutes: 1.5 }, { ratio: 1, forever: true }, 3]) {
      const response = await create(user, bad);
      expect(response.status, JSON.stringify(bad)).toBe(400);
      expect((await errorOf(response)).message).toMatch(/seed/);
    }
  });
});

describe("POST /api/jobs/{id}/seeding/stop", () => {
  it("sets the stop flag for the owner's seeding job and shows its seeding", async () => {
    const user = await userWithStorage();
    const job = await jobOf(await create(user, { ratio: 1, minutes: 60 }));
    await complete(job.id);
    await publishProgress(job.id, { phase: "completed", seeding: seeding() });
    const view = await jobOf(await send(user.cookie, "GET", `/api/jobs/${job.id}`));
    expect(view.seeding).toMatchObject({ ratio: 0.42, peers: 3, source: "disk" });
    const stopped = await send(user.cookie, "POST", `/api/jobs/${job.id}/seeding/stop`);
    expect(stopped.status).toBe(200);
    expect((await jobOf(stopped)).state).toBe("completed");
    expect(Number(await redis().get(keys.seedStop(job.id)))).toBe(seedStopFlag.user);
  });

  it("is a 404 for another user's job", async () => {
    const owner = await userWithStorage();
    const other = await userWithStorage();
    const job = await jobOf(await create(owner, { ratio: 1 }));
    await complete(job.id);
    const response = await send(other.cookie, "POST", `/api/jobs/${job.id}/seeding/stop`);
    expect(response.status).toBe(404);
    expect(await redis().get(keys.seedStop(job.id))).toBeNull();
  });

  it("is a 409 for a job that does not seed, has not completed, or whose seeding ended", async () => {
    const user = await userWithStorage();
    const unasked = await submitJob(user);
    await complete(unasked.id);
    const running = await jobOf(await create(user, { ratio: 1 }));
    const ended = await jobOf(await create(user, { ratio: 1 }));
    await complete(ended.id);
    await publishProgress(ended.id, {
      phase: "completed",
      seeding: seeding({ ended: { reason: "ratio", message: "ratio reached", at: Date.now() } }),
    });
    for (const [job, why] of [
      [unasked, /not asked to seed/],
      [running, /queued/],
      [ended, /ratio reached/],
    ] as const) {
      const response = await send(user.cookie, "POST", `/api/jobs/${job.id}/seeding/stop`);
      expect(response.status).toBe(409);
      const error = await errorOf(response);
      expect(error.code).toBe("not_seeding");
      expect(error.message).toMatch(why);
    }
  });

  it("deleting a seeding job tells its worker to stop", async () => {
    const user = await userWithStorage();
    const job = await jobOf(await create(user, { ratio: 1 }));
    await complete(job.id);
    expect((await send(user.cookie, "DELETE", `/api/jobs/${job.id}`)).status).toBe(204);
    expect(Number(await redis().get(keys.seedStop(job.id)))).toBe(seedStopFlag.deleted);
  });
});

describe("the OpenAPI document", () => {
  it("lists the stop route and the seed field", async () => {
    const doc = (await (await call("/api/openapi.json")).json()) as {
      paths: Record<string, unknown>;
      components: { schemas: Record<string, { properties?: Record<string, unknown> }> };
    };
    expect(Object.keys(doc.paths)).toContain("/api/jobs/{id}/seeding/stop");
    expect(doc.components.schemas.CreateJob?.properties).toHaveProperty("seed");
    expect(JSON.stringify(doc.components.schemas.Job)).toContain(`"seeding"`);
  });
});
