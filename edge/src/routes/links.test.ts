// Stored files of an S3 job link to their objects: presigned GETs against the
// real local S3, since buckets are private.
import { env } from "cloudflare:workers";
import { decryptOAuthSecret, parseKeyring, sealedOf } from "@torreclou/contracts";
import { jobFiles, storageProfiles } from "@torreclou/db";
import { AwsClient } from "aws4fetch";
import { and, eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { withDb } from "../../test/fixtures/db.ts";
import { send, submitJob } from "../../test/fixtures/jobs.ts";
import { call, signIn } from "../../test/helpers.ts";

interface FileView {
  index: number;
  cloudUrl: string | null;
}

describe("links to stored objects", () => {
  it("gives an uploaded file a presigned link that downloads it, and none to files not stored", async () => {
    const { cookie, userId } = await signIn();
    const profile = await send(cookie, "POST", "/api/storage", {
      kind: "s3",
      name: "local",
      endpoint: env.S3_ENDPOINT,
      region: env.S3_REGION,
      bucket: env.S3_BUCKET,
      forcePathStyle: true,
      accessKeyId: env.S3_ACCESS_KEY_ID,
      secretAccessKey: env.S3_SECRET_ACCESS_KEY,
    });
    expect(profile.status).toBe(201);
    const job = await submitJob({ cookie, userId, profileId: "" });

    // What a worker leaves behind after uploading file 0: the object and its key.
    const key = `links/${crypto.randomUUID()}/a.bin`;
    const s3 = new AwsClient({
      accessKeyId: env.S3_ACCESS_KEY_ID,
      secretAccessKey: env.S3_SECRET_ACCESS_KEY,
      service: "s3",
      region: env.S3_REGION,
    });
    const put = await s3.fetch(`${env.S3_ENDPOINT}/${env.S3_BUCKET}/${key}`, {
      method: "PUT",
      body: "stored bytes",
    });
    expect(put.status).toBe(200);
    await withDb((db) =>
      db
        .update(jobFiles)
        .set({ state: "uploaded", cloudId: key })
        .where(and(eq(jobFiles.jobId, job.id), eq(jobFiles.fileIndex, 0)))
        .then(() => undefined),
    );

    const detail = await send(cookie, "GET", `/api/jobs/${job.id}`);
    const { files } = ((await detail.json()) as { job: { files: FileView[] } }).job;
    const first = files.find((f) => f.index === 0)!;
    expect(first.cloudUrl).toMatch(/X-Amz-Signature=/);
    expect(first.cloudUrl).toContain(`/${env.S3_BUCKET}/${key}`);
    expect(files.filter((f) => f.index !== 0).every((f) => f.cloudUrl === null)).toBe(true);
    const download = await fetch(first.cloudUrl!);
    expect(download.status).toBe(200);
    expect(await download.text()).toBe("stored bytes");
  });

  it("gives a file stored in Dropbox a temporary link that downloads it", async () => {
    const { cookie, userId } = await signIn();
    // Connect Dropbox (the test stack's double approves at once).
    const start = await call("/api/dropbox/connect", { headers: { cookie } });
    const consent = await fetch(start.headers.get("location")!, { redirect: "manual" });
    const back = new URL(consent.headers.get("location")!);
    const flow = start.headers
      .getSetCookie()
      .map((line) => line.split(";")[0]!)
      .join("; ");
    const done = await call(`/api/dropbox/callback?${back.searchParams}`, {
      headers: { cookie: `${cookie}; ${flow}` },
    });
    expect(done.status).toBe(302);
    const [profile] = await withDb((db) =>
      db.select().from(storageProfiles).where(eq(storageProfiles.userId, userId)),
    );
    const job = await submitJob(
      { cookie, userId, profileId: profile!.id },
      { storageProfileId: profile!.id },
    );

    // What a worker leaves behind: the file in the app folder and its id.
    const { accessToken } = await decryptOAuthSecret(
      parseKeyring(env.CREDENTIALS_KEYS),
      sealedOf(profile!),
      profile!.id,
    );
    const content = (path: string, arg: unknown, body: string) =>
      fetch(`${env.DROPBOX_API_BASE_URL}${path}`, {
        method: "POST",
        headers: {
          Authorization: `Bearer ${accessToken}`,
          "Content-Type": "application/octet-stream",
          "Dropbox-API-Arg": JSON.stringify(arg),
        },
        body,
      });
    const started = (await (await content("/2/files/upload_session/start", { close: false }, "")).json()) as {
      session_id: string;
    };
    const finished = await content(
      "/2/files/upload_session/finish",
      {
        cursor: { session_id: started.session_id, offset: 0 },
        commit: { path: `/links/${crypto.randomUUID()}/a.bin`, mode: "add" },
      },
      "stored in dropbox",
    );
    expect(finished.status).toBe(200);
    const { id } = (await finished.json()) as { id: string };
    await withDb((db) =>
      db
        .update(jobFiles)
        .set({ state: "uploaded", cloudId: id })
        .where(and(eq(jobFiles.jobId, job.id), eq(jobFiles.fileIndex, 0)))
        .then(() => undefined),
    );

    const detail = await send(cookie, "GET", `/api/jobs/${job.id}`);
    const { files } = ((await detail.json()) as { job: { files: FileView[] } }).job;
    const first = files.find((f) => f.index === 0)!;
    expect(first.cloudUrl).toMatch(/^https?:\/\//);
    expect(files.filter((f) => f.index !== 0).every((f) => f.cloudUrl === null)).toBe(true);
    const download = await fetch(first.cloudUrl!);
    expect(download.status).toBe(200);
    expect(await download.text()).toBe("stored in dropbox");
  });
});
