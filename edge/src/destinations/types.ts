// What the edge knows of each kind of destination. One module per provider
// (s3.ts, gdrive.ts, onedrive.ts, dropbox.ts) implements it; index.ts is the
// registry. Routes ask the registry and never branch on the provider.
import type {
  DestinationKind,
  DestinationOf,
  FileUpload,
  Keyring,
  OAuthDestinationKind,
  OAuthSecret,
} from "@torreclou/contracts";
import type { Config } from "../config.ts";

/** The owner's view of each kind of destination's settings (never a secret). */
export interface DestinationViews {
  s3: {
    endpoint: string | null;
    region: string;
    bucket: string;
    prefix: string;
    forcePathStyle: boolean;
    /** Masked (e.g. `AKIA…WXYZ`); null when the stored secret cannot be read with the configured keys. */
    accessKeyId: string | null;
  };
  gdrive: { accountEmail: string | null; rootFolderId: string | null };
  onedrive: { accountEmail: string | null };
  dropbox: { accountEmail: string | null };
}
export type DestinationSettingsView = DestinationViews[DestinationKind];

export interface EdgeDestination<K extends DestinationKind = DestinationKind> {
  kind: K;
  /** For people: "Google Drive". */
  label: string;
  /** The settings shown to the owner. */
  view(destination: DestinationOf<K>, keyring: Keyring): Promise<DestinationViews[K]>;
  /**
   * Download links for stored files that carry none of their own (cloudId →
   * URL). Providers whose files have a web link of their own leave it out.
   */
  links?(destination: DestinationOf<K>, config: Config, cloudIds: string[]): Promise<Map<string, string>>;
  /** Connected with an OAuth grant: the flow (destinations/connect.ts) and its provider's endpoints. */
  oauth?: OAuthProvider<K & OAuthDestinationKind>;
  /** A browser tab can upload into it itself (routes/transfer.ts); kinds without it cannot be transferred so. */
  transfer?: BrowserTransfer<K>;
}

/** A job file as a browser transfer sees it. */
export interface TransferFile {
  index: number;
  /** Path inside the torrent. */
  path: string;
  size: number;
  /** The upload already opened for it (an S3 upload id or a Drive session URI), by a tab or a worker. */
  uploadSession: string | null;
}

/** A journaled part of an S3 multipart upload (upload_parts). */
export interface JournaledPart {
  partNumber: number;
  etag: string;
  size: number;
}

export interface TransferContext<K extends DestinationKind> {
  destination: DestinationOf<K>;
  config: Config;
  /** The job's folder (contracts' jobFolder). */
  folder: string;
  /** The file's journaled parts (read only when asked). */
  journal(): Promise<JournaledPart[]>;
}

/** A file stored at the destination, recorded as the worker records it. */
export interface StoredObject {
  /** S3 object key or Drive file id. */
  cloudId: string;
  cloudUrl?: string | undefined;
  checksum: string;
}

export interface OpenedUpload {
  upload: FileUpload;
  /** What job_files.upload_session holds from now on (null: nothing to resume). */
  session: string | null;
  /** Set when the file is stored already (a zero-byte file, or a session found complete). */
  stored?: StoredObject | undefined;
}

/**
 * A destination a browser tab uploads into directly, the edge opening each
 * upload and (for multipart uploads) presigning each part. The same uploads a
 * worker makes and resumes: the same names, part layout and session column.
 */
export interface BrowserTransfer<K extends DestinationKind> {
  /** Opens the file's upload, or reports the one it has; throws ApiError for what the user must fix. */
  open(ctx: TransferContext<K>, file: TransferFile): Promise<OpenedUpload>;
  /** Multipart uploads (S3): the file's part size, and a presigned URL for one part. */
  parts?: {
    partSize(ctx: TransferContext<K>, file: TransferFile): Promise<number>;
    url(
      ctx: TransferContext<K>,
      file: TransferFile & { uploadSession: string },
      partNumber: number,
      now: Date,
    ): Promise<string>;
  };
  /** Finishes the file's upload (the tab sent every byte); throws ApiError when it is not whole. */
  complete(
    ctx: TransferContext<K>,
    file: TransferFile & { uploadSession: string },
    driveFileId: string | undefined,
  ): Promise<StoredObject>;
}

/** The account a grant belongs to. */
export interface GrantAccount {
  /** The provider's stable id of the account, if it tells. */
  id?: string | undefined;
  email?: string | undefined;
}

export interface OAuthClientSettings {
  clientId: string;
  clientSecret: string;
  redirectUri: string;
  authUrl: string;
  tokenUrl: string;
}

/** An OAuth destination's provider, as the connect flow needs it. */
export interface OAuthProvider<K extends OAuthDestinationKind> {
  /** Where the flow's routes are mounted, e.g. `/api/drive` (`/connect`, `/callback`, `/{id}/disconnect`). */
  basePath: string;
  /** Query parameter the flow's end sets on the web app's storage page: `?<key>=connected` or `?<key>_error=<code>`. */
  queryKey: string;
  /** Prefix of the flow's cookies, e.g. `tc_drive`. */
  cookiePrefix: string;
  /** Who runs the accounts, for messages: "Google". */
  company: string;
  /** Error codes' prefix for the provider's answers (`<prefix>_denied`, `<prefix>_unavailable`, ...). */
  codePrefix: string;
  /** Scopes asked for. */
  scopes: string[];
  /** Scopes that must be granted (default: every scope asked for). */
  required?: string[];
  /** The OAuth client, or a 503 ApiError when the operator configured none. */
  client(config: Config, requestUrl: string): OAuthClientSettings;
  /** Sets the provider's own parameters on the consent URL (offline access, prompts, hints). */
  authorize(url: URL, loginHint: string | undefined): void;
  /** Scopes the token answer says were granted; undefined when it does not say. */
  granted(data: Record<string, unknown>): string[] | undefined;
  /** The account of a fresh access token; empty when it cannot be read. */
  account(config: Config, accessToken: string): Promise<GrantAccount>;
  /**
   * Ends the grant at the provider. True when it no longer works (revoked now,
   * already, or the provider keeps nothing to revoke); false when the provider
   * could not be asked.
   */
  revoke(config: Config, secret: OAuthSecret, client: () => OAuthClientSettings): Promise<boolean>;
  /** The settings a new or renewed profile of this account gets. */
  configOf(account: GrantAccount): DestinationOf<K>["config"];
  /** Whether a stored profile's settings name this account (reconnecting renews it). */
  sameAccount(config: DestinationOf<K>["config"], account: GrantAccount): boolean;
}
