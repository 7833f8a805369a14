// How a storage profile is shown to its owner: its non-secret settings and,
// for S3, the access key id masked. Secrets never leave this module in clear.
import { decryptS3Secret, type Keyring, sealedOf } from "@torreclou/contracts";
import type { DriveProfileConfig, S3ProfileConfig, StorageProfile } from "@torreclou/db";

export interface S3ProfileView {
  endpoint: string | null;
  region: string;
  bucket: string;
  prefix: string;
  forcePathStyle: boolean;
  /** Masked (e.g. `AKIA…WXYZ`); null when the stored secret cannot be read with the configured keys. */
  accessKeyId: string | null;
}

export interface DriveProfileView {
  accountEmail: string | null;
  rootFolderId: string | null;
}

export interface StorageProfileView {
  id: string;
  kind: StorageProfile["kind"];
  name: string;
  isDefault: boolean;
  status: StorageProfile["status"];
  createdAt: string;
  updatedAt: string;
  s3?: S3ProfileView;
  gdrive?: DriveProfileView;
}

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

type Row = Pick<
  StorageProfile,
  | "id"
  | "kind"
  | "name"
  | "isDefault"
  | "status"
  | "config"
  | "secretCiphertext"
  | "secretIv"
  | "secretKeyId"
  | "createdAt"
  | "updatedAt"
>;

async function maskedKeyOf(keyring: Keyring, row: Row): Promise<string | null> {
  try {
    return maskAccessKeyId((await decryptS3Secret(keyring, sealedOf(row), row.id)).accessKeyId);
  } catch (error) {
    console.warn(
      JSON.stringify({
        level: "warn",
        msg: "storage profile secret unreadable",
        profileId: row.id,
        keyId: row.secretKeyId,
        error: error instanceof Error ? error.message : String(error),
      }),
    );
    return null;
  }
}

/** The owner's view of a profile. `accessKeyId` may be passed when it is at hand in clear (just created). */
export async function viewOf(keyring: Keyring, row: Row, accessKeyId?: string): Promise<StorageProfileView> {
  const base = {
    id: row.id,
    kind: row.kind,
    name: row.name,
    isDefault: row.isDefault,
    status: row.status,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
  switch (row.kind) {
    case "s3": {
      const config = row.config as S3ProfileConfig;
      return {
        ...base,
        s3: {
          endpoint: config.endpoint ?? null,
          region: config.region,
          bucket: config.bucket,
          prefix: config.prefix ?? "",
          forcePathStyle: config.forcePathStyle ?? false,
          accessKeyId:
            accessKeyId !== undefined ? maskAccessKeyId(accessKeyId) : await maskedKeyOf(keyring, row),
        },
      };
    }
    case "gdrive": {
      const config = row.config as DriveProfileConfig;
      return {
        ...base,
        gdrive: { accountEmail: config.accountEmail ?? null, rootFolderId: config.rootFolderId ?? null },
      };
    }
  }
}
