// S3 uploads from a browser tab: the edge opens the multipart upload at the
// key the worker would use, presigns one part at a time and completes the
// upload from the journal; the tab PUTs the parts to the presigned URLs. The
// part layout is the worker's (contracts/src/parts.ts), so either resumes
// the other's upload.
import {
  contentTypeFor,
  DEFAULT_PART_SIZE,
  decryptS3Secret,
  partCount,
  partLength,
  partSizeFor,
  partUrlSeconds,
  resumedPartSize,
  s3ObjectKey,
} from "@torreclou/contracts";
import { ApiError } from "../errors/index.ts";
import {
  completeMultipartUpload,
  createMultipartUpload,
  objectSize,
  presignUploadPart,
  putEmptyObject,
  S3CallError,
} from "../storage/multipart.ts";
import { checkEndpoint, type S3Credentials, type S3Target } from "../storage/s3.ts";
import { s3TargetOf } from "./s3.ts";
import type { BrowserTransfer, JournaledPart, TransferContext, TransferFile } from "./types.ts";

type Ctx = TransferContext<"s3">;

async function credentialsOf(ctx: Ctx): Promise<S3Credentials> {
  return decryptS3Secret(ctx.config.CREDENTIALS_KEYS, ctx.destination.sealed, ctx.destination.id);
}

/**
 * The bucket to call, its endpoint checked again against the egress policy:
 * the operator's allowances may have changed since the profile was saved.
 */
function targetOf(ctx: Ctx): S3Target {
  const { endpoint } = ctx.destination.config;
  if (endpoint) {
    const checked = checkEndpoint(endpoint, ctx.config.EGRESS_ALLOW);
    if (!checked.ok) {
      throw new ApiError(422, "endpoint_refused", `This storage profile's endpoint ${checked.reason}.`);
    }
  }
  return s3TargetOf(ctx.destination.config);
}

function keyOf(ctx: Ctx, file: TransferFile): string {
  return s3ObjectKey(ctx.destination.config.prefix, ctx.folder, file.path);
}

/** The part size of the file's upload: the journal's, else the worker's default rule. */
function partSizeOf(parts: readonly JournaledPart[], size: number): number {
  return resumedPartSize(parts, size, partSizeFor(size, DEFAULT_PART_SIZE));
}

/** Journaled parts that fit the layout (a part of the wrong size is sent again). */
function storedParts(parts: readonly JournaledPart[], size: number, partSize: number): JournaledPart[] {
  return parts.filter((p) => p.size === partLength(size, partSize, p.partNumber));
}

/** A provider refusal, for the person: 502, since the fault is at the storage, not in the request. */
function providerError(error: unknown): never {
  if (error instanceof S3CallError) {
    if (error.code === "NoSuchUpload") {
      throw new ApiError(
        409,
        "upload_gone",
        "The storage provider no longer has this file's multipart upload (aborted, or expired by a bucket lifecycle rule).",
      );
    }
    throw new ApiError(
      502,
      "storage_refused",
      `The storage provider refused the request (${error.code || error.status}).`,
      {
        status: error.status,
        code: error.code,
      },
    );
  }
  throw error;
}

export const s3Transfer: BrowserTransfer<"s3"> = {
  async open(ctx, file) {
    const parts = file.uploadSession ? await ctx.journal() : [];
    const partSize = partSizeOf(parts, file.size);
    const key = keyOf(ctx, file);
    const credentials = await credentialsOf(ctx);
    const target = targetOf(ctx);
    try {
      if (file.size === 0) {
        // No parts to send: the edge stores the empty object itself.
        const etag = await putEmptyObject(target, credentials, key, contentTypeFor(file.path));
        return {
          upload: { kind: "s3", partSize, stored: [] },
          session: null,
          stored: { cloudId: key, checksum: `etag:${etag}` },
        };
      }
      const session =
        file.uploadSession ??
        (await createMultipartUpload(target, credentials, key, contentTypeFor(file.path)));
      const stored = storedParts(parts, file.size, partSize).map((p) => ({
        partNumber: p.partNumber,
        size: p.size,
      }));
      return { upload: { kind: "s3", partSize, stored }, session };
    } catch (error) {
      providerError(error);
    }
  },
  parts: {
    async partSize(ctx, file) {
      return partSizeOf(await ctx.journal(), file.size);
    },
    async url(ctx, file, partNumber, now) {
      const target = targetOf(ctx);
      return presignUploadPart(
        target,
        await credentialsOf(ctx),
        keyOf(ctx, file),
        file.uploadSession,
        partNumber,
        {
          expiresSeconds: partUrlSeconds,
          now,
        },
      );
    },
  },
  async complete(ctx, file) {
    const journal = await ctx.journal();
    const partSize = partSizeOf(journal, file.size);
    const stored = new Map(storedParts(journal, file.size, partSize).map((p) => [p.partNumber, p]));
    const count = partCount(file.size, partSize);
    const missing: number[] = [];
    for (let n = 1; n <= count; n++) if (!stored.has(n)) missing.push(n);
    if (missing.length > 0) {
      throw new ApiError(
        409,
        "parts_missing",
        `Part${missing.length === 1 ? "" : "s"} ${missing.slice(0, 20).join(", ")}${missing.length > 20 ? ", …" : ""} of ${count} ${missing.length === 1 ? "is" : "are"} not stored yet.`,
        { missing: missing.slice(0, 1000), parts: count },
      );
    }
    const key = keyOf(ctx, file);
    const target = targetOf(ctx);
    const credentials = await credentialsOf(ctx);
    try {
      const parts = [...stored.values()].sort((a, b) => a.partNumber - b.partNumber);
      const etag = await completeMultipartUpload(target, credentials, key, file.uploadSession, parts);
      const size = await objectSize(target, credentials, key);
      if (size !== file.size) {
        throw new ApiError(
          409,
          "size_mismatch",
          `The storage provider stored ${size} bytes for this file instead of ${file.size}.`,
        );
      }
      return { cloudId: key, checksum: `etag:${etag}` };
    } catch (error) {
      providerError(error);
    }
  },
};
