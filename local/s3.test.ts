import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  type ListMultipartUploadsCommandInput,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, quietLog, type Service } from "./process.ts";
import {
  AwsChunkedDecoder,
  damageInTransit,
  paginateListMultipartUploads,
  s3ClientFor,
  startS3,
  startS3Process,
  unfinishedUploads,
} from "./s3.ts";

const MiB = 1024 * 1024;
const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

describe("local S3 (s3rver)", () => {
  let dataDir: string;
  let port: number;
  let s3: Service | undefined;
  let client: S3Client;
  const options = () => ({
    port,
    dataDir,
    bucket: "torreclou-test",
    accessKeyId: "local-key",
    secretAccessKey: "local-secret",
    log: quietLog,
  });
  const bucket = "torreclou-test";

  async function getBytes(key: string): Promise<Uint8Array> {
    const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return response.Body!.transformToByteArray();
  }

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "torreclou-s3-"));
    port = await freePort();
    s3 = await startS3(options());
    client = s3ClientFor(s3.env);
  });

  afterAll(async () => {
    client?.destroy();
    await s3?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("publishes the S3_* environment", () => {
    expect(s3!.env).toEqual({
      S3_ENDPOINT: `http://127.0.0.1:${port}`,
      S3_REGION: "us-east-1",
      S3_BUCKET: bucket,
      S3_ACCESS_KEY_ID: "local-key",
      S3_SECRET_ACCESS_KEY: "local-secret",
      S3_FORCE_PATH_STYLE: "true",
    });
  });

  it("stores and returns a binary object byte for byte", async () => {
    const body = randomBytes(1 * MiB + 123);
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: "bin/one.bin", Body: body }));
    const back = await getBytes("bin/one.bin");
    expect(back.length).toBe(body.length);
    expect(sha(back)).toBe(sha(body));
  });

  it("lists a page at a time with continuation tokens (no legacy cipher needed)", async () => {
    const keys = ["pages/a b.bin", "pages/b.bin", "pages/c/d.bin"];
    for (const Key of keys) await client.send(new PutObjectCommand({ Bucket: bucket, Key, Body: "x" }));
    const seen: string[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: "pages/", MaxKeys: 1, ContinuationToken: token }),
      );
      seen.push(...(page.Contents ?? []).map((o) => o.Key ?? ""));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    expect(seen).toEqual(keys);
    for (const Key of keys) await client.send(new DeleteObjectCommand({ Bucket: bucket, Key }));
  });

  it("decodes aws-chunked uploads from a default-configured SDK client", async () => {
    // The SDK's defaults stream this with a trailing checksum; S3 (and now the local server) stores only the data.
    const defaults = new S3Client({
      endpoint: s3!.env.S3_ENDPOINT,
      region: "us-east-1",
      forcePathStyle: true,
      credentials: { accessKeyId: "local-key", secretAccessKey: "local-secret" },
    });
    try {
      const body = randomBytes(3 * MiB + 5);
      await defaults.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: "bin/streamed.bin",
          Body: Readable.from([body.subarray(0, MiB), body.subarray(MiB)]),
          ContentLength: body.length,
        }),
      );
      const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: "bin/streamed.bin" }));
      expect(head.ContentLength).toBe(body.length);
      expect(head.ContentEncoding).toBeUndefined();
      expect(sha(await getBytes("bin/streamed.bin"))).toBe(sha(body));
    } finally {
      defaults.destroy();
    }
  });

  it("completes a multipart upload as S3 does: listed ETags checked, parts in order, ETag of the part MD5s", async () => {
    const body = randomBytes(10 * MiB + 777_777);
    const key = "multi/three-parts.bin";
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
    const pieces = [body.subarray(0, 5 * MiB), body.subarray(5 * MiB, 10 * MiB), body.subarray(10 * MiB)];
    const parts: { ETag: string | undefined; PartNumber: number }[] = [];
    const digests: Buffer[] = [];
    for (const [index, piece] of pieces.entries()) {
      const PartNumber = index + 1;
      const { ETag } = await client.send(
        new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber, Body: piece }),
      );
      const digest = createHash("md5").update(piece).digest();
      expect(ETag).toBe(`"${digest.toString("hex")}"`);
      parts.push({ ETag, PartNumber });
      digests.push(digest);
    }
    const complete = (Parts: typeof parts) =>
      client.send(
        new CompleteMultipartUploadCommand({
          Bucket: bucket,
          Key: key,
          UploadId,
          MultipartUpload: { Parts },
        }),
      );
    await expect(
      complete([parts[0]!, { ...parts[1]!, ETag: `"${"0".repeat(32)}"` }, parts[2]!]),
    ).rejects.toMatchObject({
      name: "InvalidPart",
      $metadata: { httpStatusCode: 400 },
    });
    await expect(complete([parts[1]!, parts[0]!, parts[2]!])).rejects.toMatchObject({
      name: "InvalidPartOrder",
      $metadata: { httpStatusCode: 400 },
    });
    const done = await complete(parts);
    const etag = `"${createHash("md5").update(Buffer.concat(digests)).digest("hex")}-3"`;
    expect(done.ETag).toBe(etag);
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    expect(head.ETag).toBe(etag);
    expect(head.ContentLength).toBe(body.length);
    const back = await getBytes(key);
    expect(back.length).toBe(body.length);
    expect(sha(back)).toBe(sha(body));
    // The upload is gone once completed.
    await expect(complete(parts)).rejects.toMatchObject({ $metadata: { httpStatusCode: 404 } });
  });

  it("assembles parts of uneven sizes, parts sent again and parts left out, byte for byte", async () => {
    // Each upload: parts in the order they are sent, then the ones listed to complete it.
    const upload = async (key: string, sent: [number, number][], listed: number[]) => {
      const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
      const last = new Map<number, { body: Buffer; ETag: string | undefined }>();
      for (const [PartNumber, size] of sent) {
        const body = randomBytes(size);
        const { ETag } = await client.send(
          new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber, Body: body }),
        );
        expect(ETag).toBe(`"${createHash("md5").update(body).digest("hex")}"`);
        last.set(PartNumber, { body, ETag });
      }
      const done = await client.send(
        new CompleteMultipartUploadCommand({
          Bucket: bucket,
          Key: key,
          UploadId,
          MultipartUpload: {
            Parts: listed.map((PartNumber) => ({ PartNumber, ETag: last.get(PartNumber)?.ETag })),
          },
        }),
      );
      expect(done.ETag).toMatch(new RegExp(`-${listed.length}"$`));
      const expected = Buffer.concat(listed.map((n) => last.get(n)?.body ?? Buffer.alloc(0)));
      const back = await getBytes(key);
      expect(back.length).toBe(expected.length);
      expect(sha(back)).toBe(sha(expected));
    };
    // Part 2 comes first, so part 1 is larger than the size the others are laid out at.
    await upload(
      "multi/uneven.bin",
      [
        [2, 5 * MiB],
        [1, 6 * MiB + 3],
        [4, 3 * MiB],
        [3, 2 * MiB + 5],
        [4, MiB],
      ],
      [1, 2, 4],
    );
    // All at one size, but part 2 left out and part 4 sent twice.
    await upload(
      "multi/gap.bin",
      [
        [1, 5 * MiB],
        [2, 5 * MiB],
        [4, 2 * MiB],
        [3, 5 * MiB],
        [4, MiB + 7],
      ],
      [1, 3, 4],
    );
  });

  it("lists the parts of an upload as S3 does, a page at a time, and none once it is aborted", async () => {
    const key = "multi/listed.bin";
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
    const sizes = new Map([
      [2, 5 * MiB],
      [1, 6 * MiB],
      [3, MiB + 1],
    ]);
    const etags = new Map<number, string | undefined>();
    for (const [PartNumber, size] of sizes) {
      const { ETag } = await client.send(
        new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber, Body: randomBytes(size) }),
      );
      etags.set(PartNumber, ETag);
    }
    const list = (extra: { MaxParts?: number; PartNumberMarker?: string } = {}, Key = key) =>
      client.send(new ListPartsCommand({ Bucket: bucket, Key, UploadId, ...extra }));
    const all = await list();
    expect(all.IsTruncated).toBe(false);
    expect(all.Parts?.map((p) => [p.PartNumber, p.Size, p.ETag])).toEqual(
      [1, 2, 3].map((n) => [n, sizes.get(n), etags.get(n)]),
    );
    const first = await list({ MaxParts: 2 });
    expect(first.Parts?.map((p) => p.PartNumber)).toEqual([1, 2]);
    expect(first.IsTruncated).toBe(true);
    const rest = await list({ MaxParts: 2, PartNumberMarker: first.NextPartNumberMarker });
    expect(rest.Parts?.map((p) => p.PartNumber)).toEqual([3]);
    expect(rest.IsTruncated).toBe(false);
    await expect(list({}, "multi/other.bin")).rejects.toMatchObject({ name: "NoSuchUpload" });
    await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId }));
    await expect(list()).rejects.toMatchObject({ name: "NoSuchUpload", $metadata: { httpStatusCode: 404 } });
    await expect(
      client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId })),
    ).rejects.toMatchObject({ name: "NoSuchUpload" });
    // A part that arrives after the abort is refused, not stored.
    await expect(
      client.send(
        new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: 4, Body: randomBytes(10) }),
      ),
    ).rejects.toMatchObject({ name: "NoSuchUpload", $metadata: { httpStatusCode: 404 } });
    await expect(list()).rejects.toMatchObject({ name: "NoSuchUpload" });
  });

  it("refuses a body that does not match its signed SHA-256 or its Content-MD5, storing nothing", async () => {
    const body = randomBytes(64 * 1024);
    const damaging = s3ClientFor(s3!.env);
    damageInTransit(damaging, () => true);
    try {
      await expect(
        damaging.send(new PutObjectCommand({ Bucket: bucket, Key: "bin/damaged.bin", Body: body })),
      ).rejects.toMatchObject({ name: "XAmzContentSHA256Mismatch", $metadata: { httpStatusCode: 400 } });
    } finally {
      damaging.destroy();
    }
    const md5 = createHash("md5").update(body).digest("base64");
    await expect(
      client.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: "bin/damaged.bin",
          Body: "not the body the MD5 was taken of",
          ContentMD5: md5,
        }),
      ),
    ).rejects.toMatchObject({ name: "BadDigest", $metadata: { httpStatusCode: 400 } });
    await expect(
      client.send(new HeadObjectCommand({ Bucket: bucket, Key: "bin/damaged.bin" })),
    ).rejects.toMatchObject({ name: "NotFound" });
    // The same body, undamaged and with its right MD5, is stored.
    await client.send(
      new PutObjectCommand({ Bucket: bucket, Key: "bin/damaged.bin", Body: body, ContentMD5: md5 }),
    );
    expect(sha(await getBytes("bin/damaged.bin"))).toBe(sha(body));
    await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: "bin/damaged.bin" }));
  });

  it("stores unsigned bodies (UNSIGNED-PAYLOAD, as clients send over HTTPS) in place, with their MD5 as ETag", async () => {
    // A client that leaves its bodies unhashed, as the worker's S3 sink does over TLS.
    const unsigned = s3ClientFor(s3!.env);
    unsigned.middlewareStack.add(
      (next) => async (args) => {
        const request = args.request as { headers?: Record<string, string> };
        if (request.headers) request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD";
        return next(args);
      },
      { step: "build", name: "unsignedPayload" },
    );
    try {
      const small = randomBytes(100_001);
      const put = await unsigned.send(
        new PutObjectCommand({ Bucket: bucket, Key: "unsigned/small.bin", Body: small }),
      );
      expect(put.ETag).toBe(`"${createHash("md5").update(small).digest("hex")}"`);
      expect(sha(await getBytes("unsigned/small.bin"))).toBe(sha(small));

      const body = randomBytes(7 * MiB + 12_345);
      const key = "unsigned/two-parts.bin";
      const { UploadId } = await unsigned.send(
        new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }),
      );
      const pieces = [body.subarray(0, 5 * MiB), body.subarray(5 * MiB)];
      const Parts: { ETag: string | undefined; PartNumber: number }[] = [];
      for (const [index, piece] of pieces.entries()) {
        const { ETag } = await unsigned.send(
          new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: index + 1, Body: piece }),
        );
        expect(ETag).toBe(`"${createHash("md5").update(piece).digest("hex")}"`);
        Parts.push({ ETag, PartNumber: index + 1 });
      }
      // Laid out in the upload's one data file at a fixed stride, as signed parts are,
      // so completing it renames that file instead of copying each part again.
      const uploadDir = join(dataDir, bucket, "._S3rver_uploads", UploadId!);
      expect((await readdir(uploadDir)).sort()).toEqual(expect.arrayContaining(["1.slot", "2.slot", "data"]));
      await unsigned.send(
        new CompleteMultipartUploadCommand({
          Bucket: bucket,
          Key: key,
          UploadId,
          MultipartUpload: { Parts },
        }),
      );
      expect(sha(await getBytes(key))).toBe(sha(body));
      for (const Key of ["unsigned/small.bin", key])
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key }));
    } finally {
      unsigned.destroy();
    }
  });

  it("lists objects by prefix", async () => {
    const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "bin/" }));
    expect(listed.Contents?.map((item) => item.Key).sort()).toEqual(["bin/one.bin", "bin/streamed.bin"]);
    expect(listed.Contents?.find((item) => item.Key === "bin/one.bin")?.Size).toBe(MiB + 123);
  });

  it("rejects an access key id it was not configured with", async () => {
    const stranger = s3ClientFor({ ...s3!.env, S3_ACCESS_KEY_ID: "someone-else" });
    try {
      await expect(
        stranger.send(new HeadObjectCommand({ Bucket: bucket, Key: "bin/one.bin" })),
      ).rejects.toThrow();
      await expect(
        stranger.send(new GetObjectCommand({ Bucket: bucket, Key: "bin/one.bin" })),
      ).rejects.toMatchObject({ name: "InvalidAccessKeyId" });
    } finally {
      stranger.destroy();
    }
  });

  it("rejects a wrong secret for a known key id, as real S3 does", async () => {
    const forger = s3ClientFor({ ...s3!.env, S3_SECRET_ACCESS_KEY: "not-the-secret" });
    try {
      await expect(
        forger.send(new GetObjectCommand({ Bucket: bucket, Key: "bin/one.bin" })),
      ).rejects.toMatchObject({ name: "SignatureDoesNotMatch" });
      await expect(
        forger.send(new PutObjectCommand({ Bucket: bucket, Key: "bin/forged.bin", Body: "x" })),
      ).rejects.toMatchObject({ name: "SignatureDoesNotMatch" });
    } finally {
      forger.destroy();
    }
    // The right secret still works, for odd keys and query strings too.
    const key = "odd names/ünïcode (1)+[x]*!.bin";
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: "odd" }));
    const listed = await client.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: "odd names/", MaxKeys: 5, Delimiter: "/" }),
    );
    expect(listed.Contents?.map((item) => item.Key)).toEqual([key]);
    await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
  });

  describe("ListMultipartUploads", () => {
    // A bucket of their own, so that a listing of all of it is exact.
    const Bucket = "torreclou-uploads";
    // Upload ids by name, and how many uploads were started.
    const ids: Record<string, string> = {};
    let started = 0;
    let initiatedFrom = 0;
    let initiatedTo = 0;
    const start = async (name: string, Key: string, on = Bucket, StorageClass?: "STANDARD_IA") => {
      const { UploadId } = await client.send(
        new CreateMultipartUploadCommand({ Bucket: on, Key, StorageClass }),
      );
      ids[name] = UploadId!;
      started++;
      return UploadId!;
    };
    const list = (input: Omit<ListMultipartUploadsCommandInput, "Bucket"> = {}) =>
      client.send(new ListMultipartUploadsCommand({ Bucket, ...input }));
    const idsOf = (uploads: { UploadId?: string }[] | undefined) =>
      (uploads ?? []).map((upload) => Object.keys(ids).find((name) => ids[name] === upload.UploadId));

    beforeAll(async () => {
      await client.send(new CreateBucketCommand({ Bucket }));
      initiatedFrom = Date.now();
      // Started out of key order; "one" twice, the first time before the other keys.
      await start("one-first", "a/one.bin");
      await start("top", "top.bin", Bucket, "STANDARD_IA");
      await start("two", "b/two.bin");
      await start("deeper", "a/deeper/x.bin");
      // Ids are random: keep a later upload of a/one.bin whose id sorts before the first's, so that
      // listing by id instead of by initiation would show.
      while ((await start("one-second", "a/one.bin")) > ids["one-first"]!) {
        await client.send(
          new AbortMultipartUploadCommand({ Bucket, Key: "a/one.bin", UploadId: ids["one-second"] }),
        );
      }
      initiatedTo = Date.now();
      // In the other bucket, under a key listed here too: never listed here.
      await start("elsewhere", "a/one.bin", bucket);
    });

    afterAll(async () => {
      await client.send(
        new AbortMultipartUploadCommand({ Bucket: bucket, Key: "a/one.bin", UploadId: ids.elsewhere }),
      );
    });

    it("lists every unfinished upload of the bucket by key, then by initiation, as S3 shows them", async () => {
      const all = await list();
      expect(all).toMatchObject({
        Bucket,
        KeyMarker: "",
        UploadIdMarker: "",
        MaxUploads: 1000,
        IsTruncated: false,
      });
      expect(all.Uploads?.map((upload) => [upload.Key, upload.UploadId])).toEqual([
        ["a/deeper/x.bin", ids.deeper],
        ["a/one.bin", ids["one-first"]],
        ["a/one.bin", ids["one-second"]],
        ["b/two.bin", ids.two],
        ["top.bin", ids.top],
      ]);
      expect(all.CommonPrefixes).toBeUndefined();
      expect(all.NextKeyMarker).toBe("top.bin");
      expect(all.NextUploadIdMarker).toBe(ids.top);
      const byName = (name: string) => all.Uploads?.find((upload) => upload.UploadId === ids[name]);
      for (const upload of all.Uploads ?? []) {
        expect(upload.Initiated).toBeInstanceOf(Date);
        expect(upload.Initiated!.getTime()).toBeGreaterThanOrEqual(initiatedFrom);
        // Uploads started within one millisecond are stamped a millisecond apart, in order.
        expect(upload.Initiated!.getTime()).toBeLessThanOrEqual(initiatedTo + started);
        expect(upload.Initiator?.ID).toBeTruthy();
        expect(upload.Owner?.ID).toBeTruthy();
        expect(upload.StorageClass).toBe(upload.Key === "top.bin" ? "STANDARD_IA" : "STANDARD");
      }
      // Two uploads of one key: both there, the earlier first.
      expect(byName("one-first")!.Initiated!.getTime()).toBeLessThan(
        byName("one-second")!.Initiated!.getTime(),
      );
      expect(await unfinishedUploads(client, Bucket)).toEqual(all.Uploads);
      expect(idsOf(await unfinishedUploads(client, bucket, "a/"))).toEqual(["elsewhere"]);
    });

    it("narrows to a prefix and rolls keys up to common prefixes at a delimiter", async () => {
      const underA = await list({ Prefix: "a/" });
      expect(underA.Prefix).toBe("a/");
      expect(idsOf(underA.Uploads)).toEqual(["deeper", "one-first", "one-second"]);
      const top = await list({ Delimiter: "/" });
      expect(top.Delimiter).toBe("/");
      expect(idsOf(top.Uploads)).toEqual(["top"]);
      expect(top.CommonPrefixes).toEqual([{ Prefix: "a/" }, { Prefix: "b/" }]);
      const inA = await list({ Prefix: "a/", Delimiter: "/" });
      expect(idsOf(inA.Uploads)).toEqual(["one-first", "one-second"]);
      expect(inA.CommonPrefixes).toEqual([{ Prefix: "a/deeper/" }]);
      const none = await list({ Prefix: "c/" });
      expect([none.IsTruncated, none.Uploads, none.CommonPrefixes]).toEqual([false, undefined, undefined]);
      // Keys and prefixes URL-encoded when asked.
      const encoded = await list({ Prefix: "a/d", Delimiter: "/", EncodingType: "url" });
      expect(encoded).toMatchObject({
        EncodingType: "url",
        Prefix: "a%2Fd",
        CommonPrefixes: [{ Prefix: "a%2Fdeeper%2F" }],
      });
    });

    it("pages with max-uploads and the markers, each upload and common prefix exactly once", async () => {
      const first = await list({ MaxUploads: 2 });
      expect(idsOf(first.Uploads)).toEqual(["deeper", "one-first"]);
      expect(first).toMatchObject({
        MaxUploads: 2,
        IsTruncated: true,
        NextKeyMarker: "a/one.bin",
        NextUploadIdMarker: ids["one-first"],
      });
      // The page ends between two uploads of one key: the next starts with the later one.
      const second = await list({
        MaxUploads: 2,
        KeyMarker: first.NextKeyMarker,
        UploadIdMarker: first.NextUploadIdMarker,
      });
      expect(idsOf(second.Uploads)).toEqual(["one-second", "two"]);
      // Without an upload id marker, every upload of the marker key is behind.
      expect(idsOf((await list({ KeyMarker: "a/one.bin" })).Uploads)).toEqual(["two", "top"]);

      const pages = [];
      for await (const page of paginateListMultipartUploads({ client, pageSize: 2 }, { Bucket }))
        pages.push(idsOf(page.Uploads));
      expect(pages).toEqual([["deeper", "one-first"], ["one-second", "two"], ["top"]]);
      const rolled = [];
      for await (const page of paginateListMultipartUploads(
        { client, pageSize: 1 },
        { Bucket, Delimiter: "/" },
      ))
        rolled.push([...(page.CommonPrefixes ?? []).map((p) => p.Prefix), ...idsOf(page.Uploads)]);
      expect(rolled).toEqual([["a/"], ["b/"], ["top"]]);

      // S3 answers at most 1000 a page, and refuses a count that is not one.
      expect((await list({ MaxUploads: 5000 })).MaxUploads).toBe(1000);
      await expect(list({ MaxUploads: -1 })).rejects.toMatchObject({
        name: "InvalidArgument",
        $metadata: { httpStatusCode: 400 },
      });
    });

    it("no longer lists an upload once it is completed or aborted, and answers NoSuchBucket for no bucket", async () => {
      const part = await client.send(
        new UploadPartCommand({ Bucket, Key: "b/two.bin", UploadId: ids.two, PartNumber: 1, Body: "two" }),
      );
      await client.send(
        new CompleteMultipartUploadCommand({
          Bucket,
          Key: "b/two.bin",
          UploadId: ids.two,
          MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] },
        }),
      );
      await client.send(
        new AbortMultipartUploadCommand({ Bucket, Key: "a/one.bin", UploadId: ids["one-first"] }),
      );
      expect(idsOf(await unfinishedUploads(client, Bucket))).toEqual(["deeper", "one-second", "top"]);
      for (const [name, Key] of [
        ["deeper", "a/deeper/x.bin"],
        ["one-second", "a/one.bin"],
        ["top", "top.bin"],
      ] as const)
        await client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId: ids[name] }));
      expect(await unfinishedUploads(client, Bucket)).toEqual([]);
      await expect(
        client.send(new ListMultipartUploadsCommand({ Bucket: "no-such-bucket" })),
      ).rejects.toMatchObject({ name: "NoSuchBucket", $metadata: { httpStatusCode: 404 } });
    });
  });

  it("keeps objects and unfinished multipart uploads across a restart, also as a process of its own", async () => {
    const before = sha(await getBytes("multi/three-parts.bin"));
    const key = "multi/across-restart.bin";
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
    const pieces = [randomBytes(5 * MiB), randomBytes(MiB + 1)];
    const send = async (PartNumber: number) => {
      const { ETag } = await client.send(
        new UploadPartCommand({
          Bucket: bucket,
          Key: key,
          UploadId,
          PartNumber,
          Body: pieces[PartNumber - 1],
        }),
      );
      return { ETag, PartNumber };
    };
    const first = await send(1);
    const unfinished = await unfinishedUploads(client, bucket);
    expect(unfinished.map((upload) => upload.UploadId)).toEqual([UploadId]);
    await s3!.stop();
    // Started again as a process of its own, the way the benchmark runs it.
    const restarted = await startS3Process(options());
    s3 = restarted;
    client.destroy();
    client = s3ClientFor(s3.env);
    expect(sha(await getBytes("multi/three-parts.bin"))).toBe(before);
    // Still listed, initiation time and all.
    expect(await unfinishedUploads(client, bucket)).toEqual(unfinished);
    const second = await send(2);
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: key,
        UploadId,
        MultipartUpload: { Parts: [first, second] },
      }),
    );
    expect(sha(await getBytes(key))).toBe(sha(Buffer.concat(pieces)));
    expect(await unfinishedUploads(client, bucket)).toEqual([]);
    const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
    expect(listed.Contents?.map((item) => item.Key).sort()).toEqual([
      "bin/one.bin",
      "bin/streamed.bin",
      key,
      "multi/gap.bin",
      "multi/three-parts.bin",
      "multi/uneven.bin",
    ]);
    await restarted.stop();
    expect(() => process.kill(restarted.pid, 0)).toThrow();
  });
});

describe("AwsChunkedDecoder", () => {
  async function decode(encoded: Buffer, pieceSize: number): Promise<Buffer> {
    const pieces: Buffer[] = [];
    for (let at = 0; at < encoded.length; at += pieceSize) pieces.push(encoded.subarray(at, at + pieceSize));
    const out: Buffer[] = [];
    for await (const chunk of Readable.from(pieces).pipe(new AwsChunkedDecoder())) out.push(chunk as Buffer);
    return Buffer.concat(out);
  }

  const data = randomBytes(70_000);
  const signed = Buffer.concat([
    Buffer.from(`10000;chunk-signature=${"a".repeat(64)}\r\n`),
    data.subarray(0, 0x10000),
    Buffer.from(`\r\n${(data.length - 0x10000).toString(16)};chunk-signature=${"b".repeat(64)}\r\n`),
    data.subarray(0x10000),
    Buffer.from(`\r\n0;chunk-signature=${"c".repeat(64)}\r\n\r\n`),
  ]);
  const trailer = Buffer.concat([
    Buffer.from(`${data.length.toString(16)}\r\n`),
    data,
    Buffer.from("\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"),
  ]);

  it.each([1, 2, 7, 4096, 1 << 20])(
    "decodes signed and trailer bodies split every %i bytes",
    async (size) => {
      expect((await decode(signed, size)).equals(data)).toBe(true);
      expect((await decode(trailer, size)).equals(data)).toBe(true);
    },
  );

  it("fails on a truncated body", async () => {
    await expect(decode(signed.subarray(0, signed.length - 10), 1024)).rejects.toThrow(/ended early/);
  });
});
