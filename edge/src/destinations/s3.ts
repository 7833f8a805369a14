// S3-compatible destinations on the edge: the owner's view (the access key id
// masked) and presigned download links. Saving one (validation and the live
// check of endpoint, bucket and keys) is routes/storage.ts with storage/s3.ts.
import { CredentialsError, decryptS3Secret, type S3Config } from "@torreclou/contracts";
import { presignGet, type S3Target } from "../storage/s3.ts";
import { s3Transfer } from "./s3-transfer.ts";
import type { EdgeDestination } from "./types.ts";

/**
 * Enough of an access key id to tell keys apart, never the whole of it:
 * the first and last four characters of a long id, the last three of a
 * shorter one, nothing of a very short one.
 */
export function maskAccessKeyId(id: string): string {
  if (id.length >= 16) return `${id.slice(0, 4)}…${id.slice(-4)}`;
  if (id.length >= 8) return `…${id.slice(-3)}`;
  return "…";
}

export function s3TargetOf(config: S3Config): S3Target {
  return {
    endpoint: config.endpoint,
    region: config.region,
    bucket: config.bucket,
    prefix: config.prefix ?? "",
    forcePathStyle: config.forcePathStyle ?? false,
  };
}

export const s3: EdgeDestination<"s3"> = {
  kind: "s3",
  label: "S3",
  // A tab sends the parts itself, to presigned URLs (the bucket's CORS rule must let it).
  get transfer() {
    return s3Transfer;
  },
  async view(destination, keyring) {
    const { config } = destination;
    let accessKeyId: string | null = null;
    try {
      accessKeyId = maskAccessKeyId(
        (await decryptS3Secret(keyring, destination.sealed, destination.id)).accessKeyId,
      );
    } catch (error) {
      console.warn(
        JSON.stringify({
          level: "warn",
          msg: "storage profile secret unreadable",
          profileId: destination.id,
          keyId: destination.sealed.keyId,
          error: error instanceof Error ? error.message : String(error),
        }),
      );
    }
    return {
      endpoint: config.endpoint ?? null,
      region: config.region,
      bucket: config.bucket,
      prefix: config.prefix ?? "",
      forcePathStyle: config.forcePathStyle ?? false,
      accessKeyId,
    };
  },
  /** Presigned GETs (an hour), since buckets are private. */
  async links(destination, { CREDENTIALS_KEYS: keyring }, cloudIds) {
    const links = new Map<string, string>();
    let secret: Awaited<ReturnType<typeof decryptS3Secret>>;
    try {
      secret = await decryptS3Secret(keyring, destination.sealed, destination.id);
    } catch (error) {
      if (error instanceof CredentialsError) return links; // keys rotated away: no links rather than a failed page
      throw error;
    }
    const target = s3TargetOf(destination.config);
    for (const key of cloudIds) links.set(key, await presignGet(target, secret, key));
    return links;
  },
};
