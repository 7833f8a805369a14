// What a destination is, for every side: its kind, its non-secret settings
// (the storage_profiles row's jsonb `config`, checked here instead of cast)
// and its sealed secret. `destinationOf(row)` is the one way from a row to a
// typed destination; each provider's edge and worker modules take it from
// there (edge/src/destinations/, node-worker/src/destinations/).
//
// Adding a provider: its kind in `destinationKinds`, its config schema and
// name rules below, a migration adding the kind to the `storage_kind` enum,
// and a folder per side registered in that side's registry.
import { z } from "zod";
import type { SealedSecret } from "./credentials.ts";
import { CredentialsError, decryptSecret, type Keyring, sealedOf } from "./credentials.ts";

export const destinationKinds = ["s3", "gdrive", "onedrive", "dropbox"] as const;
export type DestinationKind = (typeof destinationKinds)[number];

/** Kinds connected with an OAuth grant (a refresh token), as opposed to typed-in keys. */
export const oauthDestinationKinds = ["gdrive", "onedrive", "dropbox"] as const;
export type OAuthDestinationKind = (typeof oauthDestinationKinds)[number];

export function isOAuthKind(kind: DestinationKind): kind is OAuthDestinationKind {
  return (oauthDestinationKinds as readonly string[]).includes(kind);
}

/** Non-secret settings of an S3-compatible destination (AWS S3, R2, B2, MinIO, ...). */
export const S3Config = z.object({
  endpoint: z.string().optional(),
  region: z.string(),
  bucket: z.string(),
  /** Key prefix every upload goes under. */
  prefix: z.string().optional(),
  forcePathStyle: z.boolean().optional(),
});
export type S3Config = z.infer<typeof S3Config>;

/** Non-secret settings of a Google Drive destination. */
export const DriveConfig = z.object({
  rootFolderId: z.string().optional(),
  accountEmail: z.string().optional(),
});
export type DriveConfig = z.infer<typeof DriveConfig>;

/** Non-secret settings of a OneDrive destination (Microsoft Graph). */
export const OneDriveConfig = z.object({
  accountEmail: z.string().optional(),
  /** The Microsoft account's stable id (Graph `/me` id): reconnecting the same account renews its profile. */
  accountId: z.string().optional(),
});
export type OneDriveConfig = z.infer<typeof OneDriveConfig>;

/** Non-secret settings of a Dropbox destination. */
export const DropboxConfig = z.object({
  accountEmail: z.string().optional(),
  /** Dropbox's `account_id`: reconnecting the same account renews its profile. */
  accountId: z.string().optional(),
});
export type DropboxConfig = z.infer<typeof DropboxConfig>;

export const destinationConfigs = {
  s3: S3Config,
  gdrive: DriveConfig,
  onedrive: OneDriveConfig,
  dropbox: DropboxConfig,
} as const satisfies Record<DestinationKind, z.ZodType>;

export interface DestinationConfigs {
  s3: S3Config;
  gdrive: DriveConfig;
  onedrive: OneDriveConfig;
  dropbox: DropboxConfig;
}

/**
 * The plaintext secret of an OAuth destination: the refresh token of the
 * user's grant and, once refreshed, the current access token and when it
 * expires (ISO 8601), a cache the workers write back so others reuse it.
 */
export const OAuthSecret = z.object({
  refreshToken: z.string().min(1),
  accessToken: z.string().min(1).optional(),
  accessTokenExpiresAt: z.iso.datetime({ offset: true }).optional(),
});
export type OAuthSecret = z.infer<typeof OAuthSecret>;

interface DestinationBase {
  id: string;
  status: "active" | "needs_reconnect";
  sealed: SealedSecret;
}

/** One typed destination per kind. */
export type Destination = {
  [K in DestinationKind]: DestinationBase & { kind: K; config: DestinationConfigs[K] };
}[DestinationKind];

export type DestinationOf<K extends DestinationKind> = Extract<Destination, { kind: K }>;

/** A storage profile row, as much of it as a destination needs. */
export interface DestinationRow {
  id: string;
  kind: DestinationKind;
  status: "active" | "needs_reconnect";
  config: unknown;
  secretCiphertext: string;
  secretIv: string;
  secretKeyId: string;
}

/** A row whose settings do not have their kind's shape. */
export class DestinationConfigError extends Error {
  constructor(kind: string, detail: string) {
    super(`the stored ${kind} settings are malformed: ${detail}`);
    this.name = "DestinationConfigError";
  }
}

/** The typed destination of a storage profile row; throws DestinationConfigError for settings of another shape. */
export function destinationOf(row: DestinationRow): Destination {
  const schema = destinationConfigs[row.kind];
  if (!schema) throw new DestinationConfigError(String(row.kind), "unknown kind");
  const parsed = schema.safeParse(row.config ?? {});
  if (!parsed.success) throw new DestinationConfigError(row.kind, parsed.error.issues[0]?.message ?? "");
  return {
    id: row.id,
    kind: row.kind,
    status: row.status,
    config: parsed.data,
    sealed: sealedOf(row),
  } as Destination;
}

/** Decrypts an OAuth destination's grant and checks its shape. */
export async function decryptOAuthSecret(
  keyring: Keyring,
  sealed: SealedSecret,
  profileId: string,
): Promise<OAuthSecret> {
  const parsed = OAuthSecret.safeParse(await decryptSecret(keyring, sealed, profileId));
  if (!parsed.success) throw new CredentialsError("the stored grant lacks a refresh token");
  return parsed.data;
}
