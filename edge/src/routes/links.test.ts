// Stored files of an S3 job link to their objects: presigned GETs against the
// real local S3, since buckets are private.
import { env } from "cloudflare:workers";
import { jobFiles } from "@torreclou/db";
import { AwsClient } from "aws4fetch";
import { and, eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { withDb } from "../../test/fixtures/db.ts";
import { send, submitJob } from "../../test/fixtures/jobs.ts";
import { signIn } from "../../test/helpers.ts";

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
});
