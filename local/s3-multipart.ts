// CompleteMultipartUpload for the local S3 as S3 does it. s3rver 3.7.1 ignores
// the part ETags the client lists and re-reads the whole object to give it the
// MD5 of its bytes as ETag; S3 checks each listed ETag (400 InvalidPart), wants
// parts in ascending order (400 InvalidPartOrder) and names the object
// "<MD5 of the parts' MD5s>-<part count>" without hashing the bytes again.
import { createHash } from "node:crypto";
import { mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import S3Error from "s3rver/lib/models/error.js";
import type FilesystemStore from "s3rver/lib/stores/filesystem.js";

interface ListedPart {
  number: number;
  etag: string;
}

/** Replaces the store's multipart completion with one that behaves as S3's. */
export function completeAsS3(store: FilesystemStore): void {
  store.putObjectMultipart = async (bucket: string, uploadId: string, parts: ListedPart[]) => {
    const uploadDir = join(store.getResourcePath(bucket, undefined, "uploads"), uploadId);
    const [key, metadata] = await Promise.all([
      readFile(join(uploadDir, "key"), "utf8"),
      readFile(join(uploadDir, "metadata"), "utf8").then(
        (text) => JSON.parse(text) as Record<string, string>,
      ),
    ]).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "ENOENT") throw error;
      throw new S3Error(
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
      );
    });
    for (let i = 1; i < parts.length; i++) {
      if ((parts[i]?.number ?? 0) <= (parts[i - 1]?.number ?? 0)) {
        throw new S3Error("InvalidPartOrder", "The list of parts was not in ascending order.");
      }
    }
    const digests: Buffer[] = [];
    for (const part of parts) {
      const md5 = await readFile(join(uploadDir, `${part.number}.md5`), "utf8").catch(() => undefined);
      if (md5 === undefined || md5 !== part.etag) {
        throw new S3Error(
          "InvalidPart",
          "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
        );
      }
      digests.push(Buffer.from(md5, "hex"));
    }
    const etag = `${createHash("md5").update(Buffer.concat(digests)).digest("hex")}-${parts.length}`;

    // Assembled beside the object, then renamed over it: readers see the old object or the new one.
    const objectPath = store.getResourcePath(bucket, key, "object");
    await mkdir(dirname(objectPath), { recursive: true });
    const assembling = `${objectPath}.${uploadId}.partial`;
    const first = parts[0];
    if (first) await rename(join(uploadDir, String(first.number)), assembling);
    await appendFiles(
      assembling,
      parts.slice(1).map((part) => join(uploadDir, String(part.number))),
    );
    await rename(assembling, objectPath);
    await store.putMetadata(bucket, key, metadata, etag);
    await rm(uploadDir, { recursive: true, force: true });
    return { md5: etag, size: (await stat(objectPath)).size };
  };
}

/**
 * Appends files to `target` through one small buffer: a step that stays in
 * the CPU cache copies several times faster than megabyte-sized ones.
 */
async function appendFiles(target: string, sources: string[]): Promise<void> {
  const out = await open(target, "a");
  const step = Buffer.allocUnsafe(256 * 1024);
  try {
    for (const source of sources) {
      const input = await open(source, "r");
      try {
        for (;;) {
          const { bytesRead } = await input.read(step, 0, step.length, null);
          if (bytesRead === 0) break;
          for (let at = 0; at < bytesRead; ) at += (await out.write(step, at, bytesRead - at)).bytesWritten;
        }
      } finally {
        await input.close();
      }
    }
  } finally {
    await out.close();
  }
}
