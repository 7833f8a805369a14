// The S3 sink against the local S3 server (s3rver behind SigV4 and payload
// checks): real HTTP, bodies damaged in transit, resumed uploads, and HTTPS
// through a TLS front.

import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getCACertificates, setDefaultCACertificates } from "node:tls";
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  type S3Client,
  S3ServiceException,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { damageInTransit, s3ClientFor } from "../../../local/s3.ts";
import { tlsFront } from "../../../local/tls-front.ts";
import type { JournalPart } from "../jobs/store.ts";
import { Handoff } from "../torrent/handoff.ts";
import { PermanentJobError, type UploadHooks } from "./index.ts";
import { Outage, type OutageState } from "./outage.ts";
import { nextPart, overTls, PartSlots, partSizeFor, resumedPartSize, S3Sink } from "./s3.ts";

const MiB = 1024 * 1024;
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

describe("part sizes", () => {
  const GiB = 1024 * MiB;
  const TiB = 1024 * GiB;

  it("fits S3's limits for any size from 0 to 5 TiB", () => {
    for (const size of [0, 1, 5 * MiB, 8 * MiB + 1, 80 * GiB, 78 * GiB + 1, TiB, 5 * TiB - 1, 5 * TiB]) {
      const part = partSizeFor(size, 8 * MiB);
      const parts = Math.max(1, Math.ceil(size / part));
      expect(parts, `${size} bytes`).toBeLessThanOrEqual(10_000);
      expect(part % MiB, `${size} bytes`).toBe(0);
      expect(part, `${size} bytes`).toBeGreaterThanOrEqual(8 * MiB);
      expect(part, `${size} bytes`).toBeLessThanOrEqual(5 * GiB);
    }
    expect(partSizeFor(5 * TiB, 8 * MiB)).toBe(525 * MiB);
    // Never below S3's 5 MiB, whatever the operator asks.
    expect(partSizeFor(10 * MiB, MiB)).toBe(5 * MiB);
  });

  it("keeps a resumed upload's part size when the configured one changed", () => {
    const size = 23 * MiB;
    // Written with 8 MiB parts (8, 8, 7); the worker now says 6 MiB.
    const journal = [
      { partNumber: 1, size: 8 * MiB },
      { partNumber: 3, size: 7 * MiB },
    ];
    expect(resumedPartSize(journal, size, 6 * MiB)).toBe(8 * MiB);
    // A journal that fits the configured size keeps it; an empty one takes it.
    expect(resumedPartSize(journal, size, 8 * MiB)).toBe(8 * MiB);
    expect(resumedPartSize([], size, 6 * MiB)).toBe(6 * MiB);
  });
});

describe("which part a free slot takes", () => {
  // Parts of 10 bytes; the download has verified bytes [0, frontier).
  const endOf = (n: number) => Math.min(n * 10, 55);

  it("takes the part the download is filling while few claimed parts wait for it", () => {
    expect(nextPart([1, 2, 3, 4, 5, 6], endOf, 25, true)).toBe(2); // part 3: bytes 20-30
    expect(nextPart([4, 5, 6], endOf, 25, true)).toBe(0); // nothing left behind
  });

  it("takes the oldest part on disk when enough claimed parts wait, or once the download is done", () => {
    expect(nextPart([1, 2, 3, 4, 5, 6], endOf, 25, false)).toBe(0);
    expect(nextPart([2, 6], endOf, 55, true)).toBe(0);
    expect(nextPart([2, 6], endOf, 50, true)).toBe(1); // the last part ends at 55, past 50
  });
});

describe("a job's part slots", () => {
  it("gives a freed slot to an upload whose file is downloading before one reading parts from disk", async () => {
    const slots = new PartSlots(2);
    await slots.take(false);
    await slots.take(true);
    const order: string[] = [];
    const fromDisk = slots.take(false).then(() => order.push("from disk"));
    const following = slots.take(true).then(() => order.push("following"));
    slots.give();
    await following;
    expect(order).toEqual(["following"]);
    slots.give();
    await fromDisk;
    expect(order).toEqual(["following", "from disk"]);
    // Both slots are held again: a third taker waits until one is given back.
    let third = false;
    const later = slots.take(true).then(() => {
      third = true;
    });
    await Promise.resolve();
    expect(third).toBe(false);
    slots.give();
    await later;
    expect(third).toBe(true);
  });
});

describe("S3Sink against the local S3 server", () => {
  let admin: S3Client;
  let bucket: string;
  let work: string;

  beforeAll(async () => {
    admin = s3ClientFor(process.env);
    bucket = `sink-${randomUUID().slice(0, 8)}`;
    await admin.send(new CreateBucketCommand({ Bucket: bucket }));
    work = await mkdtemp(join(tmpdir(), "torreclou-s3-sink-"));
  });

  afterAll(async () => {
    admin?.destroy();
    if (work) await rm(work, { recursive: true, force: true });
  });

  function sinkFor(
    folder: string,
    concurrency = 3,
    options: { endpoint?: string; outage?: Outage } = {},
  ): S3Sink {
    return new S3Sink({
      outage: options.outage,
      config: {
        endpoint: options.endpoint ?? process.env.S3_ENDPOINT,
        region: "us-east-1",
        bucket,
        forcePathStyle: true,
      },
      secret: {
        accessKeyId: process.env.S3_ACCESS_KEY_ID ?? "",
        secretAccessKey: process.env.S3_SECRET_ACCESS_KEY ?? "",
      },
      folder,
      partSize: 5 * MiB,
      concurrency,
      log: pino({ enabled: false }),
    });
  }

  /** Hooks that record what the sink asked for and reported. */
  function recording(journal: JournalPart[] = []) {
    const seen = {
      ready: [] as [number, number][],
      parts: [] as JournalPart[],
      bytes: 0,
      stored: [] as [number, number][],
    };
    const hooks: UploadHooks = {
      signal: new AbortController().signal,
      ready: async (start, end) => {
        seen.ready.push([start, end]);
      },
      onSession: async () => {},
      onPart: async (part) => {
        seen.parts.push(part);
      },
      journal: async () => journal,
      clearSession: async () => {},
      onBytes: (bytes) => {
        seen.bytes += bytes;
      },
      onStored: async (start, end) => {
        seen.stored.push([start, end]);
      },
    };
    return { hooks, seen };
  }

  /** A file of `size` random bytes in the scratch folder, to upload. */
  async function localFile(name: string, size: number): Promise<{ bytes: Buffer; localPath: string }> {
    const bytes = randomBytes(size);
    const localPath = join(work, name);
    await writeFile(localPath, bytes);
    return { bytes, localPath };
  }

  async function stored(key: string): Promise<Buffer> {
    const object = await admin.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return Buffer.from(await object.Body!.transformToByteArray());
  }

  /** Request outcomes of a sink's client: [command input's PartNumber or "put", error name or "ok"]. */
  function outcomes(client: S3Client): string[] {
    const log: string[] = [];
    client.middlewareStack.add(
      (next) => async (args) => {
        const input = args.input as { PartNumber?: number; UploadId?: string; Body?: unknown };
        const what = input.PartNumber !== undefined ? `part ${input.PartNumber}` : input.Body ? "put" : "";
        try {
          const result = await next(args);
          if (what) log.push(`${what} ok`);
          return result;
        } catch (error) {
          if (what) log.push(`${what} ${(error as Error).name}`);
          throw error;
        }
      },
      { step: "initialize", name: "outcomes" },
    );
    return log;
  }

  it("resends a part the provider refused as damaged in transit, and stores the file intact", async () => {
    const { bytes, localPath } = await localFile("damaged-part.bin", 12 * MiB + 7);
    const sink = sinkFor("damage");
    const log = outcomes(sink.client);
    let damaged = 0;
    damageInTransit(sink.client, (input) => input.PartNumber === 2 && damaged++ === 0);
    const { hooks, seen } = recording();
    try {
      const result = await sink.upload(
        { path: "a/file.bin", size: bytes.length, localPath, uploadSession: null },
        hooks,
      );
      expect(result.cloudId).toBe("damage/a/file.bin");
      expect(log.filter((line) => line.startsWith("part 2"))).toEqual([
        "part 2 XAmzContentSHA256Mismatch",
        "part 2 ok",
      ]);
      expect(seen.parts.map((p) => [p.partNumber, p.size]).sort()).toEqual([
        [1, 5 * MiB],
        [2, 5 * MiB],
        [3, 2 * MiB + 7],
      ]);
      expect(seen.bytes).toBe(bytes.length);
      expect(sha256(await stored(result.cloudId))).toBe(sha256(bytes));
      const head = await admin.send(new HeadObjectCommand({ Bucket: bucket, Key: result.cloudId }));
      expect(result.checksum).toBe(`etag:${head.ETag?.replace(/"/g, "")}`);
    } finally {
      sink.close();
    }
  });

  it("resends a small file whose single PUT was damaged in transit", async () => {
    const { bytes, localPath } = await localFile("damaged-put.txt", 300 * 1024);
    const sink = sinkFor("damage");
    const log = outcomes(sink.client);
    let damaged = 0;
    damageInTransit(sink.client, () => damaged++ === 0);
    try {
      const result = await sink.upload(
        { path: "notes.txt", size: bytes.length, localPath, uploadSession: null },
        recording().hooks,
      );
      expect(log).toEqual(["put XAmzContentSHA256Mismatch", "put ok"]);
      expect(sha256(await stored(result.cloudId))).toBe(sha256(bytes));
      const head = await admin.send(new HeadObjectCommand({ Bucket: bucket, Key: result.cloudId }));
      expect(head.ContentType).toBe("text/plain; charset=utf-8");
    } finally {
      sink.close();
    }
  });

  // Providers with ListParts (S3, MinIO, R2, the local one) and without it, where the journal is trusted.
  const resumeSources = ["ListParts", "journal"] as const;

  /** Makes `client` meet a provider without ListParts: 405, as such servers answer. */
  function withoutListParts(client: S3Client): void {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        if ((context as { commandName?: string }).commandName === "ListPartsCommand") {
          // What the SDK throws for such a server's 405 answer.
          throw new S3ServiceException({
            name: "MethodNotAllowed",
            $fault: "client",
            $metadata: { httpStatusCode: 405 },
            message: "The specified method is not allowed against this resource.",
          });
        }
        return next(args);
      },
      { step: "initialize", name: "withoutListParts" },
    );
  }

  it.each(resumeSources)(
    "resumes an upload from the parts the provider already has, found through %s, without reading them again",
    async (source) => {
      const { bytes, localPath } = await localFile(`resumed-${source}.bin`, 11 * MiB);
      const key = `resume/${source}.bin`;
      // An earlier attempt stored part 1 and journaled it, then died.
      const created = await admin.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
      const first = await admin.send(
        new UploadPartCommand({
          Bucket: bucket,
          Key: key,
          UploadId: created.UploadId,
          PartNumber: 1,
          Body: bytes.subarray(0, 5 * MiB),
        }),
      );
      const sink = sinkFor("resume");
      if (source === "journal") withoutListParts(sink.client);
      const log = outcomes(sink.client);
      // Through ListParts the journal is not even read: an empty one proves it.
      const journal =
        source === "journal"
          ? [{ partNumber: 1, etag: first.ETag?.replace(/"/g, "") ?? "", size: 5 * MiB }]
          : [];
      const { hooks, seen } = recording(journal);
      try {
        const result = await sink.upload(
          { path: `${source}.bin`, size: bytes.length, localPath, uploadSession: created.UploadId ?? null },
          hooks,
        );
        expect(log.sort()).toEqual(["part 2 ok", "part 3 ok"]);
        // Only the missing parts' bytes were waited for and read.
        expect(seen.ready).toEqual([
          [5 * MiB, 10 * MiB],
          [10 * MiB, 11 * MiB],
        ]);
        expect(seen.bytes).toBe(bytes.length);
        expect(sha256(await stored(result.cloudId))).toBe(sha256(bytes));
      } finally {
        sink.close();
      }
    },
  );

  it.each(resumeSources)(
    "finds a file an attempt completed just before it died (upload looked up through %s) and sends none of it again",
    async (source) => {
      const { bytes, localPath } = await localFile(`completed-${source}.bin`, 11 * MiB);
      const file = { path: `${source}.bin`, size: bytes.length, localPath };
      const key = `completed/${source}.bin`;
      // The earlier attempt: every part journaled, the upload completed, and then the worker died.
      let session: string | null = null;
      const first = sinkFor("completed");
      const earlier = recording();
      earlier.hooks.onSession = async (id) => {
        session = id;
      };
      try {
        await first.upload({ ...file, uploadSession: null }, earlier.hooks);
      } finally {
        first.close();
      }
      expect(session).not.toBeNull();
      const journal = earlier.seen.parts;
      expect(journal).toHaveLength(3);

      // ListParts finds no upload; without it, the journal leads to a
      // CompleteMultipartUpload that finds none. Either way the object is
      // recognised by its size and multipart ETag.
      const retry = async () => {
        const sink = sinkFor("completed");
        if (source === "journal") withoutListParts(sink.client);
        const log = outcomes(sink.client);
        const { hooks, seen } = recording(journal);
        try {
          const result = await sink.upload({ ...file, uploadSession: session }, hooks);
          expect(result.cloudId).toBe(key);
          expect(seen.bytes).toBe(bytes.length);
          expect(sha256(await stored(key))).toBe(sha256(bytes));
          return { log: log.sort(), ready: seen.ready };
        } finally {
          sink.close();
        }
      };
      expect(await retry()).toEqual({ log: [], ready: [] });

      // Another object under the key (other bytes, so another ETag) is not taken for it: the file is sent again.
      await admin.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: randomBytes(11 * MiB) }));
      expect((await retry()).log).toEqual(["part 1 ok", "part 2 ok", "part 3 ok"]);
    },
  );
  it.each([
    ["parts", 11 * MiB],
    ["one request", 3 * MiB],
  ])(
    "sends what the pieces handed over in memory, reading from disk only what reached it (%s)",
    async (_, size) => {
      const bytes = randomBytes(size);
      const piece = 256 * 1024;
      // On disk: only the first piece of each part (it arrived before the part was claimed).
      const onDisk = Buffer.alloc(size);
      for (let at = 0; at < size; at += 5 * MiB) bytes.copy(onDisk, at, at, at + piece);
      const localPath = join(work, `handed-${size}.bin`);
      await writeFile(localPath, onDisk);
      const handoff = new Handoff();
      const { hooks, seen } = recording();
      hooks.claim = (start, into) => handoff.claim(0, start, into);
      // The rest of each part's pieces are verified while the sink waits for them.
      hooks.ready = async (start, end) => {
        seen.ready.push([start, end]);
        for (let at = start + piece; at < end; at += piece)
          expect(handoff.take(0, at, bytes.subarray(at, Math.min(end, at + piece)))).toBe(true);
      };
      const sink = sinkFor(`handed-${size}`);
      try {
        const result = await sink.upload({ path: "handed.bin", size, localPath, uploadSession: null }, hooks);
        expect(sha256(await stored(result.cloudId))).toBe(sha256(bytes));
        expect(seen.bytes).toBe(size);
      } finally {
        sink.close();
      }
    },
  );

  it("claims the parts the download is filling first, and sends the ones already on disk after", async () => {
    const part = 5 * MiB;
    const piece = 256 * 1024;
    const size = 6 * part - 12_345;
    const bytes = randomBytes(size);
    // On disk: the first three parts, downloaded before the upload began. The
    // rest never reaches it: those pieces are verified while their part is claimed.
    const localPath = join(work, "ahead.bin");
    await writeFile(localPath, Buffer.concat([bytes.subarray(0, 3 * part), Buffer.alloc(size - 3 * part)]));
    const handoff = new Handoff();
    const { hooks, seen } = recording();
    const claimed: number[] = [];
    hooks.claim = (start, into) => {
      claimed.push(start / part + 1);
      return handoff.claim(0, start, into);
    };
    let frontier = 3 * part;
    hooks.frontier = () => frontier;
    // The download reaches a claimed part when the sink waits for it.
    hooks.ready = async (start, end) => {
      seen.ready.push([start, end]);
      for (; frontier < end; frontier = Math.min(end, frontier + piece))
        expect(handoff.take(0, frontier, bytes.subarray(frontier, Math.min(end, frontier + piece)))).toBe(
          true,
        );
    };
    const sink = sinkFor("ahead", 4);
    try {
      const result = await sink.upload({ path: "ahead.bin", size, localPath, uploadSession: null }, hooks);
      expect(sha256(await stored(result.cloudId))).toBe(sha256(bytes));
      expect(seen.bytes).toBe(size);
      // Three claims wait for the download at most; the fourth slot is left for parts on disk.
      expect(claimed).toEqual([4, 5, 6, 1, 2, 3]);
      expect(seen.parts.map((p) => p.partNumber).sort()).toEqual([1, 2, 3, 4, 5, 6]);
    } finally {
      sink.close();
    }
  });

  it("sends files already on disk a part at a time, all told, while another upload of the job follows the download", async () => {
    const part = 5 * MiB;
    const piece = 256 * 1024;
    // Downloaded whole before their uploads began.
    const done = [await localFile("done-1.bin", 6 * part), await localFile("done-2.bin", 6 * part)];
    // Downloading: the download is in its first part, and goes on once let.
    const size = 4 * part - 4321;
    const bytes = randomBytes(size);
    const localPath = join(work, "downloading.bin");
    await writeFile(localPath, Buffer.concat([bytes.subarray(0, part), Buffer.alloc(size - part)]));
    const handoff = new Handoff();
    let frontier = part;
    let letGo = () => {};
    const gate = new Promise<void>((resolve) => (letGo = resolve));
    const downloading = recording();
    downloading.hooks.claim = (start, into) => handoff.claim(0, start, into);
    downloading.hooks.frontier = () => frontier;
    let waitedOnce = () => {};
    const waited = new Promise<void>((resolve) => (waitedOnce = resolve));
    downloading.hooks.ready = async (_start, end) => {
      waitedOnce();
      await gate;
      for (; frontier < end; frontier = Math.min(end, frontier + piece))
        handoff.take(0, frontier, bytes.subarray(frontier, Math.min(end, frontier + piece)));
    };
    // The other uploads' parts in flight together: from when one asks for a
    // part's bytes until the part is stored.
    let inFlight = 0;
    let storedParts = 0;
    const most = { whileFollowed: 0, after: 0 };
    const fromDisk = done.map((file) => {
      const { hooks } = recording();
      hooks.frontier = () => file.bytes.length;
      hooks.ready = async () => {
        inFlight++;
        const phase = frontier < size ? "whileFollowed" : "after";
        most[phase] = Math.max(most[phase], inFlight);
      };
      hooks.onPart = async () => {
        inFlight--;
        // Four parts went up one at a time: now the download may go on.
        if (++storedParts === 4) letGo();
      };
      return hooks;
    });
    const sink = sinkFor("followed", 2);
    try {
      const following = sink.upload(
        { path: "downloading.bin", size, localPath, uploadSession: null },
        downloading.hooks,
      );
      await waited;
      const others = done.map((file, i) =>
        sink.upload(
          {
            path: `done-${i + 1}.bin`,
            size: file.bytes.length,
            localPath: file.localPath,
            uploadSession: null,
          },
          fromDisk[i]!,
        ),
      );
      const [a, ...rest] = await Promise.all([following, ...others]);
      expect(sha256(await stored(a!.cloudId))).toBe(sha256(bytes));
      for (const [i, result] of rest.entries()) {
        expect(sha256(await stored(result.cloudId))).toBe(sha256(done[i]!.bytes));
      }
      expect(most.whileFollowed).toBe(1);
      // Once the other file is downloaded, they have their parts in flight again.
      expect(most.after).toBeGreaterThanOrEqual(2);
    } finally {
      sink.close();
    }
  });

  it("leaves a slot to files on disk when the download stalls with claims waiting in the job's others", async () => {
    const part = 5 * MiB;
    const [stalled, next, done] = await Promise.all([
      localFile("stalled.bin", 4 * part),
      localFile("next.bin", 2 * part),
      localFile("on-disk.bin", 3 * part),
    ]);
    // The download is stalled a piece into `stalled.bin` and has not reached `next.bin`.
    let moving = false;
    let resume = () => {};
    const resumed = new Promise<void>((resolve) => (resume = resolve));
    const waiting = (file: typeof stalled, at: number) => {
      const { hooks } = recording();
      hooks.frontier = () => (moving ? file.bytes.length : at);
      hooks.ready = () => resumed;
      return hooks;
    };
    const onDisk = recording();
    onDisk.hooks.frontier = () => done.bytes.length;
    const sink = sinkFor("stalled", 2);
    const upload = (name: string, file: typeof stalled, hooks: UploadHooks) =>
      sink.upload(
        { path: name, size: file.bytes.length, localPath: file.localPath, uploadSession: null },
        hooks,
      );
    try {
      const stalledUpload = upload("stalled.bin", stalled, waiting(stalled, 256 * 1024));
      const nextUpload = upload("next.bin", next, waiting(next, 0));
      // Its three parts go up while the others' claims wait for the download.
      const result = await upload("on-disk.bin", done, onDisk.hooks);
      expect(sha256(await stored(result.cloudId))).toBe(sha256(done.bytes));
      moving = true;
      resume();
      for (const [result, file] of [
        [await stalledUpload, stalled],
        [await nextUpload, next],
      ] as const) {
        expect(sha256(await stored(result.cloudId))).toBe(sha256(file.bytes));
      }
    } finally {
      sink.close();
    }
  });

  it("sends a file again in a new upload when the provider drops the one under way", async () => {
    const { bytes, localPath } = await localFile("dropped.bin", 11 * MiB);
    // One part at a time, so the drop falls between part 1 and part 2.
    const sink = sinkFor("dropped", 1);
    const log = outcomes(sink.client);
    const { hooks, seen } = recording();
    const sessions: string[] = [];
    hooks.onSession = async (id) => {
      sessions.push(id);
    };
    // Once part 1 is stored, the upload is aborted behind the sink's back (as a lifecycle rule would).
    hooks.onPart = async (part) => {
      seen.parts.push(part);
      if (sessions.length === 1 && part.partNumber === 1) {
        await admin.send(
          new AbortMultipartUploadCommand({
            Bucket: bucket,
            Key: "dropped/dropped.bin",
            UploadId: sessions[0],
          }),
        );
      }
    };
    try {
      const result = await sink.upload(
        { path: "dropped.bin", size: bytes.length, localPath, uploadSession: null },
        hooks,
      );
      expect(sessions).toHaveLength(2);
      expect(log).toEqual(["part 1 ok", "part 2 NoSuchUpload", "part 1 ok", "part 2 ok", "part 3 ok"]);
      // Progress counts every byte once, however many times it was sent.
      expect(seen.bytes).toBe(bytes.length);
      expect(sha256(await stored(result.cloudId))).toBe(sha256(bytes));
    } finally {
      sink.close();
    }
  });

  it("journals parts the provider holds but the journal lacks, so a crash right after completing is recognised", async () => {
    const { bytes, localPath } = await localFile("unjournaled.bin", 11 * MiB);
    const key = "unjournaled/file.bin";
    // An earlier attempt stored part 1 and died before journaling it.
    const created = await admin.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
    await admin.send(
      new UploadPartCommand({
        Bucket: bucket,
        Key: key,
        UploadId: created.UploadId,
        PartNumber: 1,
        Body: bytes.subarray(0, 5 * MiB),
      }),
    );
    const file = { path: "file.bin", size: bytes.length, localPath, uploadSession: created.UploadId ?? null };
    const resumed = recording([]);
    const sink = sinkFor("unjournaled");
    try {
      await sink.upload(file, resumed.hooks);
    } finally {
      sink.close();
    }
    expect(resumed.seen.parts.map((p) => p.partNumber).sort()).toEqual([1, 2, 3]);
    // The job's disk window hears that part 1 is stored, though the journal it read lacked it.
    expect(resumed.seen.stored.sort((a, b) => a[0] - b[0])).toEqual([
      [0, 5 * MiB],
      [5 * MiB, 10 * MiB],
      [10 * MiB, 11 * MiB],
    ]);
    // That attempt dies right after CompleteMultipartUpload; the next finds the object by the journal.
    const next = sinkFor("unjournaled");
    const log = outcomes(next.client);
    try {
      const result = await next.upload(file, recording(resumed.seen.parts).hooks);
      expect(log).toEqual([]);
      expect(sha256(await stored(result.cloudId))).toBe(sha256(bytes));
    } finally {
      next.close();
    }
  });

  it("recognises an upload its own CompleteMultipartUpload completed when the answer was lost", async () => {
    const { bytes, localPath } = await localFile("lost-complete.bin", 11 * MiB);
    const sink = sinkFor("lost-complete");
    const log = outcomes(sink.client);
    let lost = 0;
    sink.client.middlewareStack.add(
      (next, context) => async (args) => {
        const result = await next(args);
        if (
          (context as { commandName?: string }).commandName === "CompleteMultipartUploadCommand" &&
          lost++ === 0
        ) {
          // Completed on the server; the connection drops before the answer arrives.
          throw Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
        }
        return result;
      },
      { step: "finalizeRequest", name: "loseCompleteAnswer" },
    );
    const { hooks, seen } = recording();
    try {
      const result = await sink.upload(
        { path: "file.bin", size: bytes.length, localPath, uploadSession: null },
        hooks,
      );
      expect(lost).toBe(1);
      expect(log.sort()).toEqual(["part 1 ok", "part 2 ok", "part 3 ok"]);
      expect(seen.bytes).toBe(bytes.length);
      expect(sha256(await stored(result.cloudId))).toBe(sha256(bytes));
    } finally {
      sink.close();
    }
  });

  it("waits out a storage outage, shows it, and carries on where it was once the provider answers", async () => {
    const { bytes, localPath } = await localFile("outage.bin", 11 * MiB);
    const gate = await tcpGate(new URL(process.env.S3_ENDPOINT!));
    const states: (OutageState | undefined)[] = [];
    let waiting: () => void = () => {};
    const refused = new Promise<void>((resolve) => {
      waiting = resolve;
    });
    const outage = new Outage(30 * 60_000, (state) => {
      states.push(state);
      if (state) waiting();
    });
    const sink = sinkFor("outage", 3, { endpoint: gate.url, outage });
    try {
      await gate.close();
      const upload = sink.upload(
        { path: "file.bin", size: bytes.length, localPath, uploadSession: null },
        recording().hooks,
      );
      // The provider is down: the job says so instead of failing...
      await refused;
      expect(states[0]).toMatchObject({ reason: "connection refused" });
      // ...and goes on once it is back.
      await gate.open();
      const result = await upload;
      expect(sha256(await stored(result.cloudId))).toBe(sha256(bytes));
      expect(states.at(-1)).toBeUndefined();
    } finally {
      sink.close();
      await gate.close();
    }
  });

  it("fails the job once an outage outlasts the operator's limit", async () => {
    const { bytes, localPath } = await localFile("outage-limit.bin", 1024);
    const gate = await tcpGate(new URL(process.env.S3_ENDPOINT!));
    await gate.close();
    // An injected clock: each failure is a minute after the one before.
    let now = 0;
    const outage = new Outage(
      5 * 60_000,
      () => {},
      () => (now += 60_000),
    );
    const sink = sinkFor("outage", 3, { endpoint: gate.url, outage });
    try {
      await expect(
        sink.upload(
          { path: "small.bin", size: bytes.length, localPath, uploadSession: null },
          recording().hooks,
        ),
      ).rejects.toThrow(/did not answer for 5 min \(connection refused\)/);
    } finally {
      sink.close();
    }
  });

  it("stores look-alike names under keys of their own, exactly as the torrent spells them", async () => {
    const names = [
      "T/what.bin",
      "T/what?.bin",
      "T/x.bin",
      "T/x.bin ",
      "T/ lead/y.bin",
      "T/ok/ .. /x.txt",
      "T/ok/x.txt",
      "T/100% #1 + más.bin",
      "T/日本語/🎬 big.bin",
    ];
    const sink = sinkFor("names/it's here");
    const expected = new Map<string, string>();
    try {
      for (const [i, path] of names.entries()) {
        // The last one is multipart: the key goes through Create, UploadPart and Complete too.
        const { bytes, localPath } = await localFile(
          `names-${i}.bin`,
          i === names.length - 1 ? 6 * MiB : 1000 + i,
        );
        const result = await sink.upload(
          { path, size: bytes.length, localPath, uploadSession: null },
          recording().hooks,
        );
        expect(result.cloudId).toBe(`names/it's here/${path}`);
        expected.set(result.cloudId, sha256(bytes));
      }
      for (const [key, hash] of expected) expect(sha256(await stored(key)), key).toBe(hash);
    } finally {
      sink.close();
    }
  });

  it("fails for good, sending nothing, on a path no torrent that passed the parser has", async () => {
    const { bytes, localPath } = await localFile("unsafe.bin", 10);
    const sink = sinkFor("unsafe");
    const log = outcomes(sink.client);
    try {
      for (const path of ["T/../x.bin", "T//x.bin", "T/a\u0000b"]) {
        const failure = sink.upload(
          { path, size: bytes.length, localPath, uploadSession: null },
          recording().hooks,
        );
        await expect(failure).rejects.toBeInstanceOf(PermanentJobError);
      }
      expect(log).toEqual([]);
    } finally {
      sink.close();
    }
  });

  it("sends bodies unhashed over HTTPS, where TLS guards them, and stores them intact", async () => {
    const front = await tlsFront(new URL(process.env.S3_ENDPOINT!), work);
    const defaults = getCACertificates("default");
    setDefaultCACertificates([...defaults, front.cert]);
    const sink = sinkFor("tls", 3, { endpoint: front.url });
    try {
      const big = await localFile("tls-big.bin", 11 * MiB + 3);
      const small = await localFile("tls-small.bin", 1000);
      for (const [path, file] of [
        ["big.bin", big],
        ["small.bin", small],
      ] as const) {
        const result = await sink.upload(
          { path, size: file.bytes.length, localPath: file.localPath, uploadSession: null },
          recording().hooks,
        );
        expect(sha256(await stored(result.cloudId))).toBe(sha256(file.bytes));
      }
    } finally {
      sink.close();
      setDefaultCACertificates(defaults);
      await front.close();
    }
    // Three parts and one PutObject went unhashed, signed as such (the server checks the signature).
    const puts = front.heads.filter((head) => head.startsWith("PUT "));
    expect(puts).toHaveLength(4);
    for (const head of puts) expect(head).toMatch(/^x-amz-content-sha256: UNSIGNED-PAYLOAD\r$/im);
    // Over plain HTTP the same sink hashes them (the damaged-part test above relies on it).
    expect(overTls(process.env.S3_ENDPOINT)).toBe(false);
    expect(overTls(undefined)).toBe(true);
  });

  it("sends a part again, sliced afresh, when the TLS connection drops in the middle of its body", async () => {
    const front = await tlsFront(new URL(process.env.S3_ENDPOINT!), work, true, 2 * MiB);
    const defaults = getCACertificates("default");
    setDefaultCACertificates([...defaults, front.cert]);
    const sink = sinkFor("tls-cut", 1, { endpoint: front.url });
    try {
      const file = await localFile("tls-cut.bin", 11 * MiB + 5);
      const result = await sink.upload(
        { path: "cut.bin", size: file.bytes.length, localPath: file.localPath, uploadSession: null },
        recording().hooks,
      );
      expect(front.cuts()).toBe(1);
      expect(sha256(await stored(result.cloudId))).toBe(sha256(file.bytes));
    } finally {
      sink.close();
      setDefaultCACertificates(defaults);
      await front.close();
    }
  });
});

/** A TCP forwarder to `target` that can refuse connections (closed) and take them again (open), on one port. */
async function tcpGate(target: URL): Promise<{ url: string; open(): Promise<void>; close(): Promise<void> }> {
  const { createServer, connect } = await import("node:net");
  const sockets = new Set<import("node:net").Socket>();
  let server: import("node:net").Server | undefined;
  let port = 0;
  const open = () =>
    new Promise<void>((resolve) => {
      server = createServer((client) => {
        const upstream = connect(Number(target.port), target.hostname);
        for (const s of [client, upstream]) {
          sockets.add(s);
          s.on("close", () => sockets.delete(s));
          s.on("error", () => {});
        }
        client.pipe(upstream).pipe(client);
      });
      server.listen(port, "127.0.0.1", () => {
        port = (server!.address() as import("node:net").AddressInfo).port;
        resolve();
      });
    });
  await open();
  return {
    url: `http://127.0.0.1:${port}`,
    open,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        if (!server?.listening) return resolve();
        server.close(() => resolve());
      }),
  };
}
