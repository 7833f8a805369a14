// A job a browser tab began and handed to the fleet: the tab's upload (opened
// and presigned by the edge's own functions, its first part PUT straight to
// S3 and journaled as the transfer routes journal it) is resumed by a real
// worker downloading from an aria2c seeder. The part the tab stored is never
// sent again, and the object is byte-identical. An S3 proxy counts requests.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import {
  type DestinationOf,
  destinationOf,
  jobFolder,
  parseKeyring,
  queue,
  storageKey,
} from "@torreclou/contracts";
import { storageProfiles } from "@torreclou/db";
import { recordPart, updateFile } from "@torreclou/db/files";
import { admitNext } from "@torreclou/db/jobs";
import { handToFleet, takeForBrowser } from "@torreclou/db/transfer";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Config } from "../../edge/src/config.ts";
import { s3Transfer } from "../../edge/src/destinations/s3-transfer.ts";
import type { TransferContext, TransferFile } from "../../edge/src/destinations/types.ts";
import type { Worker } from "../src/worker.ts";
import {
  createProfile,
  type Env,
  enqueue,
  expectStoredExactly,
  filesOf,
  MiB,
  makeFixture,
  s3Proxy,
  seedFixtures,
  setupEnv,
  startWorker,
  submitJob,
  transitionsOf,
  waitForState,
} from "./helpers.ts";

let env: Env;
let proxy: Awaited<ReturnType<typeof s3Proxy>>;
let worker: Worker | undefined;

beforeAll(async () => {
  env = await setupEnv(23);
  proxy = await s3Proxy();
});

afterAll(async () => {
  await worker?.shutdown(5000);
  await proxy?.close();
  await env?.cleanup();
});

/** The edge's transfer context for a job's S3 destination (only the key ring of its settings is read). */
async function contextFor(profileId: string, folder: string): Promise<TransferContext<"s3">> {
  const [row] = await env.db.select().from(storageProfiles).where(eq(storageProfiles.id, profileId));
  const config = { CREDENTIALS_KEYS: parseKeyring(env.credentialsKeys) } as Pick<Config, "CREDENTIALS_KEYS">;
  return {
    destination: destinationOf(row!) as DestinationOf<"s3">,
    config: config as Config,
    folder,
    journal: async () => [],
  };
}

describe("a browser job handed to the fleet", () => {
  it("is finished by a worker that resumes the tab's multipart upload without sending its parts again", async () => {
    const size = 12 * MiB + 12345;
    const made = await makeFixture(env, "handoff.bin", [{ path: "handoff.bin", size }]);
    await seedFixtures(env, [made]);
    const profileId = await createProfile(env, { endpoint: proxy.endpoint });
    const job = await submitJob(env, { made, profileId, runner: "browser", targetFolder: "handoff" });
    const inStream = async () =>
      (await env.redis.xrange(queue.stream, "-", "+")).filter(([, fields]) =>
        fields.join(" ").includes(job.id),
      );
    expect(await inStream()).toEqual([]);

    // The tab takes the job and opens the file's upload, as POST …/transfer and …/upload do.
    const taken = await takeForBrowser(env.db, { jobId: job.id, userId: env.userId, runningLimit: null });
    if ("refused" in taken) throw new Error(`not taken: ${taken.refused}`);
    const attempt = taken.job.attempt;
    const [row] = await filesOf(env, job.id);
    const file: TransferFile = { index: 0, path: row!.path, size, uploadSession: null };
    const ctx = await contextFor(profileId, jobFolder(taken.job));
    const opened = await s3Transfer.open(ctx, file);
    if (opened.upload.kind !== "s3" || !opened.session) throw new Error("no multipart upload");
    expect(opened.upload.partSize).toBe(8 * MiB);
    const fenced = { db: env.db, jobId: job.id, attempt };
    await updateFile(fenced, row!.id, { uploadSession: opened.session, state: "uploading" });

    // Part 1 straight from the "tab" to S3 through a presigned URL, then journaled.
    const bytes = await readFile(join(env.dataDir, "seed", "handoff.bin"));
    const url = await s3Transfer.parts!.url(ctx, { ...file, uploadSession: opened.session }, 1, new Date());
    const put = await fetch(url, { method: "PUT", body: bytes.subarray(0, 8 * MiB) });
    expect(put.status).toBe(200);
    await recordPart(fenced, row!.id, {
      partNumber: 1,
      etag: put.headers.get("etag")!.replaceAll('"', ""),
      size: 8 * MiB,
    });

    // Handed to the fleet, let in the normal way.
    const handed = await handToFleet(env.db, job.id, env.userId);
    if ("refused" in handed) throw new Error(`not handed over: ${handed.refused}`);
    expect(handed.job).toMatchObject({ runner: "fleet", state: "queued", attempt: attempt + 1 });
    const admitted = await admitNext(env.db, env.userId);
    expect(admitted?.id).toBe(job.id);
    await enqueue(env, job);

    ({ worker } = await startWorker(env));
    const done = await waitForState(env, job.id, ["completed", "failed"], 120_000);
    expect(done.failureReason).toBeNull();
    expect(done.state).toBe("completed");

    // Byte for byte the torrent's file, at the key the tab's upload was opened for.
    const key = storageKey("handoff", "handoff.bin");
    await expectStoredExactly(env, made, "handoff");
    // One upload (the tab's), part 1 sent once (by the tab), part 2 by the worker, no whole-file PUT.
    expect(proxy.count("create", key)).toBe(1);
    expect(proxy.requests.filter((r) => r.kind === "part" && r.key === key).map((r) => r.part)).toEqual([
      1, 2,
    ]);
    expect(proxy.count("put", key)).toBe(0);
    const moves = (await transitionsOf(env, job.id)).map((t) => [t.fromState, t.toState, t.cause]);
    expect(moves).toEqual([
      [null, "queued", "user"],
      ["queued", "downloading", "browser"],
      ["downloading", "queued", "user"],
      ["queued", "downloading", "worker"],
      ["downloading", "uploading", "worker"],
      ["uploading", "completed", "worker"],
    ]);
  });
});
