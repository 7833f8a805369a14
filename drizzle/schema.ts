// The Postgres schema shared by the edge and the workers. Job and file states
// come from @torreclou/contracts so the lifecycle is defined in one place; the
// database enums below are generated from the same arrays.
import {
  type DestinationConfigs,
  type DestinationKind,
  type DriveConfig,
  destinationKinds,
  fileStates,
  jobRunners,
  jobSourceKinds,
  jobStates,
  type S3Config,
  transitionCauses,
  type WebhookEvent,
  type WebhookPayload,
  webhookDeliveryStates,
} from "@torreclou/contracts";
import { sql } from "drizzle-orm";
import {
  bigint,
  boolean,
  check,
  customType,
  doublePrecision,
  index,
  integer,
  jsonb,
  pgEnum,
  pgTable,
  primaryKey,
  text,
  timestamp,
  unique,
  uniqueIndex,
  uuid,
} from "drizzle-orm/pg-core";

export const jobStateEnum = pgEnum("job_state", jobStates);
export const fileStateEnum = pgEnum("file_state", fileStates);
export const transitionCauseEnum = pgEnum("transition_cause", transitionCauses);
export const jobSourceKindEnum = pgEnum("job_source_kind", jobSourceKinds);
export const jobRunnerEnum = pgEnum("job_runner", jobRunners);

export const storageKinds = destinationKinds;
export type StorageKind = DestinationKind;
export const storageKindEnum = pgEnum("storage_kind", storageKinds);

/** `needs_reconnect`: the credentials stopped working (e.g. a revoked Drive grant). */
export const storageProfileStatuses = ["active", "needs_reconnect"] as const;
export type StorageProfileStatus = (typeof storageProfileStatuses)[number];
export const storageProfileStatusEnum = pgEnum("storage_profile_status", storageProfileStatuses);

/** Non-secret settings per kind: checked by destinationOf (contracts/src/destinations.ts), never cast. */
export type S3ProfileConfig = S3Config;
export type DriveProfileConfig = DriveConfig;
export type StorageProfileConfig = DestinationConfigs[DestinationKind];

const createdAt = () => timestamp("created_at", { withTimezone: true }).notNull().defaultNow();
const updatedAt = () =>
  timestamp("updated_at", { withTimezone: true })
    .notNull()
    .defaultNow()
    .$onUpdate(() => new Date());

/** Byte counters: bigint in Postgres, a JS number in code (exact up to 8 PiB). */
const bytes = (name: string) => bigint(name, { mode: "number" }).notNull().default(0);

/**
 * Raw bytes. node-postgres (and Neon's fork of it) hand bytea back as a Buffer;
 * a driver that returns the text form (`\x0a1b...`) is decoded here too.
 * No Buffer: this module also runs in the Workers runtime.
 */
const bytea = customType<{ data: Uint8Array; driverData: Uint8Array | string }>({
  dataType: () => "bytea",
  fromDriver: (value) => (typeof value === "string" ? hexToBytes(value.replace(/^\\x/, "")) : value),
});

function hexToBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export const users = pgTable("users", {
  id: uuid("id").primaryKey().defaultRandom(),
  /** Google's stable account id (`sub` claim); emails can change, this cannot. */
  googleSub: text("google_sub").notNull().unique(),
  email: text("email").notNull(),
  name: text("name"),
  pictureUrl: text("picture_url"),
  createdAt: createdAt(),
  lastLoginAt: timestamp("last_login_at", { withTimezone: true }),
  /**
   * How many of this user's jobs may be let into the shared queue at once
   * (null: no limit): the edge's QUOTA_RUNNING_JOBS, written by the edge each
   * time it admits the user's jobs, so a worker admitting the next one when a
   * job ends applies the same limit without a setting of its own.
   */
  runningLimit: integer("running_limit"),
});

/** Personal API tokens (for workers and scripts). Only a hash is stored. */
export const apiTokens = pgTable(
  "api_tokens",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    /** Lowercase hex SHA-256 of the token; lookups hash the presented token. */
    tokenHash: text("token_hash").notNull().unique(),
    /** The token's first characters, so a user can tell tokens apart. */
    prefix: text("prefix").notNull(),
    createdAt: createdAt(),
    lastUsedAt: timestamp("last_used_at", { withTimezone: true }),
    revokedAt: timestamp("revoked_at", { withTimezone: true }),
  },
  (t) => [
    index("api_tokens_user_id_idx").on(t.userId),
    check("api_tokens_token_hash_sha256", sql`${t.tokenHash} ~ '^[0-9a-f]{64}$'`),
  ],
);

/**
 * Where a user's files go. Secrets (S3 keys, Drive refresh token) are stored
 * only as AES-GCM ciphertext; `secret_key_id` names the key that encrypted
 * them so keys can be rotated without re-entering credentials.
 */
export const storageProfiles = pgTable(
  "storage_profiles",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    kind: storageKindEnum("kind").notNull(),
    name: text("name").notNull(),
    isDefault: boolean("is_default").notNull().default(false),
    config: jsonb("config").$type<StorageProfileConfig>().notNull().default({}),
    /** Base64 AES-GCM ciphertext (with its auth tag) of the JSON secret. */
    secretCiphertext: text("secret_ciphertext").notNull(),
    /** Base64 GCM nonce; unique per encryption. */
    secretIv: text("secret_iv").notNull(),
    secretKeyId: text("secret_key_id").notNull(),
    status: storageProfileStatusEnum("status").notNull().default("active"),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    unique("storage_profiles_user_id_name_unique").on(t.userId, t.name),
    // At most one default per user; any number of non-default profiles.
    uniqueIndex("storage_profiles_one_default_per_user").on(t.userId).where(sql`is_default`),
  ],
);

/**
 * What the info dictionary of a torrent says, shared by every job for the same
 * info hash. Only facts that follow from the info dictionary itself live here
 * (the same whoever submits it), and nothing a job shows is read from it: no
 * magnet link, no .torrent with its announce URLs, no display name. A magnet
 * starts as the hash alone; the rest fills in once a .torrent or a worker's
 * resolved metadata supplies it.
 */
export const torrents = pgTable(
  "torrents",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    /**
     * Lowercase hex v1 info hash. For a v2-only torrent this is the truncated
     * v2 hash, which is what peers use on the wire.
     */
    infoHash: text("info_hash").notNull().unique(),
    /** Lowercase hex SHA-256 info hash of a v2 or hybrid torrent (from its info dictionary). */
    infoHashV2: text("info_hash_v2"),
    /** The info dictionary's name. */
    name: text("name"),
    totalSize: bigint("total_size", { mode: "number" }),
    pieceLength: integer("piece_length"),
    pieceCount: integer("piece_count"),
    fileCount: integer("file_count"),
    createdAt: createdAt(),
  },
  (t) => [
    check("torrents_info_hash_hex", sql`${t.infoHash} ~ '^[0-9a-f]{40}$'`),
    check("torrents_info_hash_v2_hex", sql`${t.infoHashV2} ~ '^[0-9a-f]{64}$'`),
  ],
);

export const jobs = pgTable(
  "jobs",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    torrentId: uuid("torrent_id")
      .notNull()
      .references(() => torrents.id, { onDelete: "restrict" }),
    /**
     * SET NULL, not RESTRICT: deleting a profile must really delete its
     * credentials without erasing job history, and a RESTRICT key would make
     * deleting a user fail whenever the cascade reaches storage_profiles
     * before jobs. A job without a profile cannot run; the worker fails it.
     */
    storageProfileId: uuid("storage_profile_id").references(() => storageProfiles.id, {
      onDelete: "set null",
    }),
    state: jobStateEnum("state").notNull().default("queued"),
    /**
     * Who moves the bytes: the worker fleet, or the submitter's browser tab
     * (edge/src/routes/transfer.ts). A browser job is never let into the
     * jobs stream; handing it to the fleet makes it a fleet job.
     */
    runner: jobRunnerEnum("runner").notNull().default("fleet"),
    /**
     * Fencing token. Bumped each time the job is (re)claimed; every worker
     * write says `WHERE attempt = <its attempt>`, so a worker whose lease
     * lapsed cannot overwrite the attempt that replaced it.
     */
    attempt: integer("attempt").notNull().default(0),
    /**
     * The name its submitter gave: the magnet's display name (dn) or the
     * .torrent's name. Null for a magnet without one until this job's worker
     * has the metadata; views show the info hash meanwhile.
     */
    name: text("name"),
    /**
     * What this job's submitter handed in, encrypted (contracts/src/credentials.ts,
     * bound to this row's id and kind): a private tracker's announce URLs carry a
     * per-user passkey, so each job downloads from its own source and nobody
     * else sees it.
     */
    sourceKind: jobSourceKindEnum("source_kind").notNull(),
    sourceCiphertext: text("source_ciphertext"),
    sourceIv: text("source_iv"),
    sourceKeyId: text("source_key_id"),
    /**
     * Legacy plaintext sources of jobs created before sources were encrypted.
     * Nothing writes them; `npm run migrate` with CREDENTIALS_KEYS encrypts
     * them into the columns above and clears them.
     */
    sourceTorrentFile: bytea("source_torrent_file"),
    sourceMagnet: text("source_magnet"),
    /** Folder (S3 key prefix or Drive folder) the files go under. */
    targetFolder: text("target_folder"),
    /**
     * A magnet job whose submitter picks its files once the metadata is known:
     * after resolving, it waits in `awaiting_selection` instead of downloading.
     */
    chooseFiles: boolean("choose_files").notNull().default(false),
    /**
     * The info dictionary this job's worker resolved from peers, byte for byte
     * (its SHA-1 is the info hash; it passed the same parser as an uploaded
     * .torrent). Any worker continues from it without fetching it again. It
     * holds no tracker or passkey: those stay in the sealed source.
     */
    infoDictionary: bytea("info_dictionary"),
    /**
     * When the job began to wait for its submitter's choice of files; null in
     * every other state. An unanswered wait is cancelled after the edge's
     * SELECTION_TIMEOUT_SECONDS.
     */
    selectionSince: timestamp("selection_since", { withTimezone: true }),
    /**
     * The W3C trace context (`traceparent`, `tracestate`) of the request that
     * created the job, while tracing is on: the queue entry written when the
     * job's turn comes (fair turns, maybe from a worker) carries it, so the job
     * stays one trace. Null when tracing is off.
     */
    traceParent: text("trace_parent"),
    traceState: text("trace_state"),
    /**
     * Seeding back once stored (contracts/src/seeding.ts): up to this ratio
     * or this many minutes, whichever comes first, already bounded by the
     * edge's limits when the job was created. Null: the job does not seed.
     */
    seedRatio: doublePrecision("seed_ratio"),
    seedMinutes: integer("seed_minutes"),
    /** A reason a person can read, set when the job fails. */
    failureReason: text("failure_reason"),
    bytesTotal: bytes("bytes_total"),
    bytesDownloaded: bytes("bytes_downloaded"),
    bytesUploaded: bytes("bytes_uploaded"),
    /**
     * Set once the queue message is known to be written. The job row and the
     * queue are two systems; a reconciler re-enqueues jobs still null here.
     */
    enqueuedAt: timestamp("enqueued_at", { withTimezone: true }),
    /**
     * Set when the job is let into the shared queue (its turn came: see
     * `admitNext` in jobs.ts). A queued job with this null waits its turn in
     * Postgres and has no stream entry. Cleared by a retry.
     */
    admittedAt: timestamp("admitted_at", { withTimezone: true }),
    /** Set by the first worker that claims the attempt; cleared by a retry. */
    claimedAt: timestamp("claimed_at", { withTimezone: true }),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
    startedAt: timestamp("started_at", { withTimezone: true }),
    finishedAt: timestamp("finished_at", { withTimezone: true }),
  },
  (t) => [
    // A user's job list: ORDER BY created_at DESC, id DESC with a (created_at, id)
    // cursor. NULLS FIRST is what plain DESC means; drizzle-kit would otherwise
    // write NULLS LAST and the planner could not use the index for that order.
    index("jobs_user_created_idx").on(t.userId, t.createdAt.desc().nullsFirst(), t.id.desc().nullsFirst()),
    index("jobs_state_idx").on(t.state),
    index("jobs_user_state_idx").on(t.userId, t.state),
    // Foreign keys the other way: deleting a profile (SET NULL) or a torrent
    // (RESTRICT) looks up its jobs.
    index("jobs_storage_profile_id_idx").on(t.storageProfileId),
    index("jobs_torrent_id_idx").on(t.torrentId),
    // The reconciler's scan stays small: only jobs whose queue write is unconfirmed.
    index("jobs_unenqueued_idx").on(t.createdAt).where(sql`enqueued_at IS NULL`),
    // A user's jobs waiting for their turn, oldest first (admitNext).
    index("jobs_user_held_idx")
      .on(t.userId, t.createdAt, t.id)
      .where(sql`admitted_at IS NULL AND state = 'queued'`),
    // The selection timeout's scan: only jobs waiting for their submitter.
    index("jobs_selection_since_idx").on(t.selectionSince).where(sql`selection_since IS NOT NULL`),
    check("jobs_attempt_nonnegative", sql`${t.attempt} >= 0`),
    check(
      "jobs_source_sealed_whole",
      sql`(${t.sourceCiphertext} IS NULL) = (${t.sourceIv} IS NULL) AND (${t.sourceCiphertext} IS NULL) = (${t.sourceKeyId} IS NULL)`,
    ),
    // A sealed source leaves no plaintext copy beside it.
    check(
      "jobs_source_plaintext_unsealed_only",
      sql`${t.sourceCiphertext} IS NULL OR (${t.sourceTorrentFile} IS NULL AND ${t.sourceMagnet} IS NULL)`,
    ),
    check(
      "jobs_has_source",
      sql`${t.sourceCiphertext} IS NOT NULL OR ${t.sourceTorrentFile} IS NOT NULL OR ${t.sourceMagnet} IS NOT NULL`,
    ),
  ],
);

/** The files of a job's torrent, with the user's selection and per-file progress. */
export const jobFiles = pgTable(
  "job_files",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    jobId: uuid("job_id")
      .notNull()
      .references(() => jobs.id, { onDelete: "cascade" }),
    /** Index of the file in the torrent's file list. */
    fileIndex: integer("file_index").notNull(),
    path: text("path").notNull(),
    size: bigint("size", { mode: "number" }).notNull(),
    selected: boolean("selected").notNull().default(true),
    state: fileStateEnum("state").notNull().default("pending"),
    bytesDownloaded: bytes("bytes_downloaded"),
    bytesUploaded: bytes("bytes_uploaded"),
    /** S3 object key or Drive file id, once uploaded: a file is never uploaded twice. */
    cloudId: text("cloud_id"),
    cloudUrl: text("cloud_url"),
    /**
     * S3 multipart upload id or Drive resumable session URI, kept while the
     * upload runs so a worker that reclaims the job resumes instead of restarting.
     */
    uploadSession: text("upload_session"),
    /** Checksum as verified after upload, e.g. `md5:<hex>` or `sha256:<hex>`. */
    checksum: text("checksum"),
    error: text("error"),
    updatedAt: updatedAt(),
  },
  (t) => [unique("job_files_job_id_file_index_unique").on(t.jobId, t.fileIndex)],
);

/** Append-only history of a job's state changes: when, why and by whom. */
export const jobTransitions = pgTable(
  "job_transitions",
  {
    id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    jobId: uuid("job_id")
      .notNull()
      .references(() => jobs.id, { onDelete: "cascade" }),
    /** Null for the job's creation. */
    fromState: jobStateEnum("from_state"),
    toState: jobStateEnum("to_state").notNull(),
    cause: transitionCauseEnum("cause").notNull(),
    /** The job's attempt when the transition happened. */
    attempt: integer("attempt").notNull(),
    reason: text("reason"),
    at: timestamp("at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index("job_transitions_job_id_at_idx").on(t.jobId, t.at)],
);

/**
 * Journal of finished S3 multipart parts. Completing a multipart upload needs
 * every part's ETag, and not every S3-compatible server supports ListParts,
 * so a resuming worker reads them from here.
 */
export const uploadParts = pgTable(
  "upload_parts",
  {
    jobFileId: uuid("job_file_id")
      .notNull()
      .references(() => jobFiles.id, { onDelete: "cascade" }),
    partNumber: integer("part_number").notNull(),
    etag: text("etag").notNull(),
    size: bigint("size", { mode: "number" }).notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.jobFileId, t.partNumber] }),
    // S3 part numbers run from 1 to 10,000.
    check("upload_parts_part_number_range", sql`${t.partNumber} BETWEEN 1 AND 10000`),
  ],
);

export const webhookDeliveryStateEnum = pgEnum("webhook_delivery_state", webhookDeliveryStates);

/**
 * A user's webhook endpoint. The signing secret is stored as AES-GCM
 * ciphertext like storage credentials; the user sees it once, at creation.
 */
export const webhookEndpoints = pgTable(
  "webhook_endpoints",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    url: text("url").notNull(),
    /** The events it is sent (contracts/src/webhooks.ts). */
    events: text("events").array().$type<WebhookEvent[]>().notNull(),
    secretCiphertext: text("secret_ciphertext").notNull(),
    secretIv: text("secret_iv").notNull(),
    secretKeyId: text("secret_key_id").notNull(),
    createdAt: createdAt(),
  },
  (t) => [index("webhook_endpoints_user_id_idx").on(t.userId)],
);

/**
 * One event for one endpoint: written in the transaction that moved the job
 * (an outbox, so no event is lost to a crash), sent and retried by workers.
 */
export const webhookDeliveries = pgTable(
  "webhook_deliveries",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    endpointId: uuid("endpoint_id")
      .notNull()
      .references(() => webhookEndpoints.id, { onDelete: "cascade" }),
    /** The job it is about; kept (as null) when the job is deleted. */
    jobId: uuid("job_id").references(() => jobs.id, { onDelete: "set null" }),
    event: text("event").$type<WebhookEvent>().notNull(),
    payload: jsonb("payload").$type<WebhookPayload>().notNull(),
    state: webhookDeliveryStateEnum("state").notNull().default("pending"),
    /** Tries so far. */
    attempts: integer("attempts").notNull().default(0),
    nextAttemptAt: timestamp("next_attempt_at", { withTimezone: true }).notNull().defaultNow(),
    /** The endpoint's last answer: its status and the start of its body; or why there was none. */
    lastStatus: integer("last_status"),
    lastResponse: text("last_response"),
    lastError: text("last_error"),
    lastAttemptAt: timestamp("last_attempt_at", { withTimezone: true }),
    createdAt: createdAt(),
  },
  (t) => [
    index("webhook_deliveries_endpoint_created_idx").on(t.endpointId, t.createdAt),
    // What workers look for: pending deliveries by when they are due.
    index("webhook_deliveries_due_idx").on(t.nextAttemptAt).where(sql`state = 'pending'`),
  ],
);

export type User = typeof users.$inferSelect;
export type NewUser = typeof users.$inferInsert;
export type ApiToken = typeof apiTokens.$inferSelect;
export type NewApiToken = typeof apiTokens.$inferInsert;
export type StorageProfile = typeof storageProfiles.$inferSelect;
export type NewStorageProfile = typeof storageProfiles.$inferInsert;
export type Torrent = typeof torrents.$inferSelect;
export type NewTorrent = typeof torrents.$inferInsert;
export type Job = typeof jobs.$inferSelect;
export type NewJob = typeof jobs.$inferInsert;
export type JobFile = typeof jobFiles.$inferSelect;
export type NewJobFile = typeof jobFiles.$inferInsert;
export type JobTransition = typeof jobTransitions.$inferSelect;
export type NewJobTransition = typeof jobTransitions.$inferInsert;
export type UploadPart = typeof uploadParts.$inferSelect;
export type NewUploadPart = typeof uploadParts.$inferInsert;
export type WebhookEndpoint = typeof webhookEndpoints.$inferSelect;
export type WebhookDelivery = typeof webhookDeliveries.$inferSelect;
