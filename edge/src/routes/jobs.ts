// Jobs: submit a torrent or magnet into a storage profile, list and inspect
// jobs, cancel, retry, delete, and read a job's live progress.
//
// Creating a job writes the row first (enqueued_at null), then the queue
// message, then enqueued_at (queue/enqueue.ts). If the queue write fails the
// answer is still 201: the job is saved and the reconciler enqueues it. Every
// state change goes through the contracts' transition table (transitionJob),
// scoped to the caller; an illegal change is a 409 saying why. Another user's
// job is a 404 everywhere, indistinguishable from a job that does not exist.
//
// Progress reads never touch Postgres on the common path: the owner check is
// the job's owner key in Redis, read before anything else of the job.
//
// A job's name, source kind and file list are its own (jobs, job_files): the
// torrents row shared by info hash is never shown, so nothing in a response
// depends on whether another user submitted the same hash. The submitted
// magnet or .torrent is stored encrypted and never sent back.
import { createRoute, z } from "@hono/zod-openapi";
import {
  boundSeed,
  type Destination,
  type DestinationKind,
  decryptJobSource,
  defaultFolder,
  describeNameClash,
  destinationKinds,
  destinationNameRules,
  destinationOf,
  findNameClash,
  type JobMessage,
  type JobRunner,
  JobState,
  jobRunners,
  jobStates,
  keys,
  MAX_TORRENT_FILES,
  ProgressEvent,
  parseMagnet,
  progressField,
  queue,
  SeedingProgress,
  SeedRequest,
  sealedSourceOf,
  seedStopFlag,
  terminalStates,
  webhookWakeKey,
} from "@torreclou/contracts";
import { jobFiles, jobs, jobTransitions, storageProfiles, torrents } from "@torreclou/db";
import {
  acceptMetadata,
  applySelection,
  type Db,
  insertJob,
  retryTransition,
  transitionJob,
} from "@torreclou/db/jobs";
import type { Redis } from "@upstash/redis/cloudflare";
import { and, asc, desc, eq, ilike, inArray, sql } from "drizzle-orm";
import { requireUser, requireUserInRoute, sessionEnded } from "../auth/index.ts";
import { type Config, seedPolicyOf } from "../config.ts";
import { destinations, downloadLinks } from "../destinations/index.ts";
import { ApiError } from "../errors/index.ts";
import { rateLimit } from "../limits/index.ts";
import { checkNewJob, checkRetry } from "../limits/quotas.ts";
import { fieldOf, ownsJobs, pollProgress, readEvent } from "../progress/read.ts";
import { admitAndEnqueue, enqueueJob, noteChange } from "../queue/enqueue.ts";
import { csrfRefused, errorResponses, registerAuthSchemes, signedIn } from "../security/openapi.ts";
import {
  acceptContentTypes,
  limitBody,
  parseJsonBody,
  readSource,
  TORRENT_BODY_LIMIT,
  type TorrentSource,
} from "../torrents/input.ts";
import { readInfoDictionary } from "../torrents/metadata.ts";
import { forJob, requestTraceContext } from "../tracing/index.ts";
import { router } from "./openapi.ts";

/** Jobs per page at most. */
export const MAX_PAGE = 100;
/** Progress events per poll at most. */
export const MAX_EVENTS = 200;
/** How long a cancel flag stays in Redis: far longer than any worker takes to notice it. */
const CANCEL_FLAG_SECONDS = 7 * 86_400;

// --- Schemas ---------------------------------------------------------------------

const MAX_FOLDER_CHARS = 1024;

/** A folder under the destination: `/` or `\` separated, no `..`, no control characters; "" means none. */
const TargetFolder = z
  .string()
  .max(MAX_FOLDER_CHARS, `must be at most ${MAX_FOLDER_CHARS} characters`)
  .transform((raw, ctx) => {
    const parts = raw
      .split(/[\\/]+/)
      .map((part) => part.trim())
      .filter((part) => part !== "" && part !== ".");
    for (const part of parts) {
      if (part === "..") ctx.addIssue({ code: "custom", message: 'must not contain ".."' });
      else if ([...part].some((ch) => ch.charCodeAt(0) < 0x20 || ch.charCodeAt(0) === 0x7f))
        ctx.addIssue({ code: "custom", message: "must not contain control characters" });
      else if (new TextEncoder().encode(part).length > 255)
        ctx.addIssue({ code: "custom", message: "each folder name must be at most 255 bytes" });
    }
    return parts.length > 0 ? parts.join("/") : undefined;
  })
  .openapi({
    example: "Music/2024",
    description:
      'Folder (S3 key prefix or cloud folder) the files go under. Left out: one named after the torrent — a multi-file torrent lands in its own top folder, a one-file torrent "name.ext" in "name/".',
  });

const CreateJobBody = z
  .object({
    torrent: z
      .string()
      .optional()
      .openapi({ description: "The .torrent file in base64 (or give `magnet`)." }),
    magnet: z
      .string()
      .optional()
      .openapi({ example: "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a" }),
    files: z
      .array(z.number().int().min(0))
      .max(MAX_TORRENT_FILES)
      .optional()
      .openapi({ description: "Indexes of the files to fetch (default: all). Only with `torrent`." }),
    storageProfileId: z
      .uuid()
      .optional()
      .openapi({ description: "Destination (default: your default profile)." }),
    targetFolder: TargetFolder.optional(),
    runner: z.enum(jobRunners).optional().openapi({
      description:
        "`browser`: the submitting browser tab transfers the job itself (POST /api/jobs/{id}/transfer and the calls under it), for swarms only WebRTC peers or web seeds reach; only into a destination a tab can upload to (S3, Google Drive). Default `fleet`: the worker fleet does.",
    }),
    chooseFiles: z.boolean().optional().openapi({
      description:
        "Only with `magnet`: once a worker has the metadata, the job waits in `awaiting_selection` for you to pick its files (POST /api/jobs/{id}/selection) instead of downloading everything (the default). A magnet's `so=` pre-selects files: without `chooseFiles` they are what is fetched, with it they are the default choice.",
    }),
    // Documented on the route: a contracts schema has no .openapi here.
    seed: SeedRequest.optional(),
  })
  .openapi("CreateJob");

const SelectionBody = z
  .object({
    files: z
      .array(z.number().int().min(0))
      .max(MAX_TORRENT_FILES)
      .openapi({ description: "Indexes of the files to fetch, from the job's `files`; at least one." }),
    targetFolder: TargetFolder.optional(),
  })
  .openapi("JobSelection");

const MetadataBody = z
  .object({
    infoDictionary: z.string().max(TORRENT_BODY_LIMIT).openapi({
      description:
        "The torrent's info dictionary, byte for byte as peers sent it (its SHA-1 is the magnet's info hash), in base64.",
    }),
  })
  .openapi("JobMetadata");

const iso = z.iso.datetime();

const JobSummarySchema = z
  .object({
    id: z.uuid(),
    state: JobState,
    attempt: z.number().int(),
    name: z.string().openapi({
      description:
        "The name you submitted: the magnet link's display name (dn) or the .torrent's name. A magnet without one shows its info hash until its metadata is fetched.",
    }),
    infoHash: z.string(),
    source: z.enum(["torrent", "magnet"]).openapi({
      description: "What you submitted. The link or file itself is stored encrypted and never sent back.",
    }),
    storageProfileId: z.uuid().nullable(),
    runner: z.enum(jobRunners).openapi({
      description: "Who moves the bytes: the worker fleet, or the submitter's browser tab.",
    }),
    targetFolder: z.string().nullable().openapi({
      description:
        "The folder the files go under; \"\" is the destination's own folder (a multi-file torrent brings its own). Null: a magnet's, not settled until its files are known.",
    }),
    failureReason: z.string().nullable(),
    bytes: z.object({ total: z.number(), downloaded: z.number(), uploaded: z.number() }),
    fileCount: z
      .number()
      .int()
      .nullable()
      .openapi({ description: "Null for a magnet until its metadata is known." }),
    selectionDeadline: iso.nullable().openapi({
      description:
        "While the job is `awaiting_selection`: when it is cancelled unless its files are chosen (POST /api/jobs/{id}/selection).",
    }),
    seed: z.object({ ratio: z.number(), minutes: z.number().int() }).nullable().openapi({
      description:
        "Seeding back once stored, as granted (the request bounded by the operator's limits); null: the job does not seed.",
    }),
    enqueuedAt: iso.nullable(),
    createdAt: iso,
    updatedAt: iso,
    startedAt: iso.nullable(),
    finishedAt: iso.nullable(),
  })
  .openapi("JobSummary");

const JobFileSchema = z
  .object({
    index: z.number().int(),
    path: z.string(),
    size: z.number(),
    selected: z.boolean(),
    state: z.string(),
    bytesDownloaded: z.number(),
    bytesUploaded: z.number(),
    cloudUrl: z.string().nullable(),
    storedAs: z.string().nullable().openapi({
      description:
        "The path the destination stores the file under when it differs from `path` (characters the provider refuses replaced by look-alikes, e.g. `:` by `：` on OneDrive); null when it is the same.",
    }),
    error: z.string().nullable(),
  })
  .openapi("JobFile");

const TransitionSchema = z
  .object({
    from: JobState.nullable(),
    to: JobState,
    cause: z.string(),
    attempt: z.number().int(),
    reason: z.string().nullable(),
    at: iso,
  })
  .openapi("JobTransition");

const JobDetailSchema = JobSummarySchema.extend({
  files: z.array(JobFileSchema),
  transitions: z.array(TransitionSchema),
  // A completed job that seeds back: as in its progress events (null before it starts, or when it does not seed).
  seeding: SeedingProgress.nullable(),
}).openapi("Job");

export const JobResponse = z.object({ job: JobDetailSchema });

const JobParams = z.object({
  id: z.uuid("must be a job id (a UUID)").openapi({ param: { name: "id", in: "path" } }),
});

const ListQuery = z.object({
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(MAX_PAGE)
    .default(20)
    .openapi({ description: `At most ${MAX_PAGE}.` }),
  cursor: z.string().max(200).optional().openapi({ description: "`nextCursor` of the previous page." }),
  status: z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value === "") return undefined;
      const states = [...new Set(value.split(",").map((s) => s.trim()))];
      const bad = states.filter((s) => !(jobStates as readonly string[]).includes(s));
      if (bad.length > 0) {
        ctx.addIssue({
          code: "custom",
          message: `unknown state ${bad.join(", ")}; use ${jobStates.join(", ")}`,
        });
        return z.NEVER;
      }
      return states as JobState[];
    })
    .openapi({
      description: "Only jobs in these states, comma-separated.",
      example: "downloading,uploading",
    }),
  q: z
    .string()
    .trim()
    .max(200, "must be at most 200 characters")
    .optional()
    .transform((v) => v || undefined)
    .openapi({ description: "Only jobs whose name contains this text (any case).", example: "debian" }),
  storage: z
    .uuid("must be a storage profile id")
    .optional()
    .openapi({ description: "Only jobs going to this storage profile." }),
});

/** `text` as a LIKE pattern matching itself anywhere (\\ escapes %, _ and \\). */
function containsPattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, (ch) => `\\${ch}`)}%`;
}

const STREAM_ID = /^(\d{1,20})-(\d{1,20})$/;
/** Both halves of a Redis stream id are unsigned 64-bit integers. */
const STREAM_ID_PART_MAX = 2n ** 64n - 1n;

/** A stream id Redis accepts: `<ms>-<seq>`, each part at most 2^64 - 1. */
function isStreamId(value: string): boolean {
  const match = STREAM_ID.exec(value);
  return match !== null && BigInt(match[1]!) <= STREAM_ID_PART_MAX && BigInt(match[2]!) <= STREAM_ID_PART_MAX;
}

/** The smallest stream id after `id` (a valid one), or undefined when no id can follow it. */
export function nextStreamId(id: string): string | undefined {
  const [ms, seq] = id.split("-").map(BigInt) as [bigint, bigint];
  if (seq < STREAM_ID_PART_MAX) return `${ms}-${seq + 1n}`;
  if (ms < STREAM_ID_PART_MAX) return `${ms + 1n}-0`;
  return undefined;
}

const ProgressQuery = z.object({
  after: z
    .string()
    .refine(isStreamId, "must be a cursor from an earlier response (a stream id like 1718000000000-0)")
    .optional(),
  limit: z.coerce.number().int().min(1).max(MAX_EVENTS).default(100),
});

const ProgressEventSchema = ProgressEvent;

const ProgressResponse = z.object({
  events: z.array(z.object({ id: z.string(), event: ProgressEventSchema })),
  cursor: z.string().openapi({ description: "Pass as `after` to get only newer events." }),
  more: z.boolean().openapi({ description: "More events are waiting; poll again at once." }),
  snapshot: ProgressEventSchema.nullable().openapi({
    description: "The latest event, or null before the first.",
  }),
});

// --- Queries ---------------------------------------------------------------------

const summaryColumns = {
  id: jobs.id,
  state: jobs.state,
  attempt: jobs.attempt,
  // Until a magnet without a dn is resolved by this job's worker, its hash names it.
  name: sql<string>`coalesce(${jobs.name}, ${torrents.infoHash})`,
  infoHash: torrents.infoHash,
  source: jobs.sourceKind,
  storageProfileId: jobs.storageProfileId,
  runner: jobs.runner,
  targetFolder: jobs.targetFolder,
  failureReason: jobs.failureReason,
  bytesTotal: jobs.bytesTotal,
  bytesDownloaded: jobs.bytesDownloaded,
  bytesUploaded: jobs.bytesUploaded,
  // The job's own file list: a magnet's stays empty until its own worker resolves it.
  fileCount: sql<
    number | null
  >`(select nullif(count(*), 0)::int from ${jobFiles} where ${jobFiles.jobId} = ${jobs.id})`,
  enqueuedAt: jobs.enqueuedAt,
  selectionSince: jobs.selectionSince,
  seedRatio: jobs.seedRatio,
  seedMinutes: jobs.seedMinutes,
  createdAt: jobs.createdAt,
  updatedAt: jobs.updatedAt,
  startedAt: jobs.startedAt,
  finishedAt: jobs.finishedAt,
};

interface SummaryRow {
  id: string;
  state: JobState;
  attempt: number;
  name: string;
  infoHash: string;
  source: "torrent" | "magnet";
  storageProfileId: string | null;
  runner: JobRunner;
  targetFolder: string | null;
  failureReason: string | null;
  bytesTotal: number;
  bytesDownloaded: number;
  bytesUploaded: number;
  fileCount: number | null;
  enqueuedAt: Date | null;
  selectionSince: Date | null;
  seedRatio: number | null;
  seedMinutes: number | null;
  createdAt: Date;
  updatedAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
}

const isoOrNull = (d: Date | null) => d?.toISOString() ?? null;

function presentSummary(row: SummaryRow, selectionTimeoutSeconds: number): z.infer<typeof JobSummarySchema> {
  return {
    id: row.id,
    state: row.state,
    attempt: row.attempt,
    name: row.name,
    infoHash: row.infoHash,
    source: row.source,
    storageProfileId: row.storageProfileId,
    runner: row.runner,
    targetFolder: row.targetFolder,
    failureReason: row.failureReason,
    bytes: { total: row.bytesTotal, downloaded: row.bytesDownloaded, uploaded: row.bytesUploaded },
    fileCount: row.fileCount,
    selectionDeadline:
      row.state === "awaiting_selection" && row.selectionSince
        ? new Date(row.selectionSince.getTime() + selectionTimeoutSeconds * 1000).toISOString()
        : null,
    seed:
      row.seedRatio !== null && row.seedMinutes !== null
        ? { ratio: row.seedRatio, minutes: row.seedMinutes }
        : null,
    enqueuedAt: isoOrNull(row.enqueuedAt),
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
    startedAt: isoOrNull(row.startedAt),
    finishedAt: isoOrNull(row.finishedAt),
  };
}

/** The job's destination, if it still exists and its settings read. */
async function destinationFor(
  db: Db,
  userId: string,
  profileId: string | null,
): Promise<Destination | undefined> {
  if (!profileId) return undefined;
  const [profile] = await db
    .select()
    .from(storageProfiles)
    .where(and(eq(storageProfiles.id, profileId), eq(storageProfiles.userId, userId)));
  if (!profile) return undefined;
  try {
    return destinationOf(profile);
  } catch {
    return undefined; // settings unreadable: no links rather than a failed page
  }
}

/**
 * Download links for stored files that carry none of their own (an S3
 * object's presigned GET, a Dropbox temporary link), from the destination's
 * module. Drive and OneDrive files carry their own web link (cloud_url).
 */
async function fileLinks(
  destination: Destination | undefined,
  config: Config,
  files: { fileIndex: number; cloudId: string | null; cloudUrl: string | null }[],
): Promise<Map<number, string>> {
  const links = new Map<number, string>();
  const wanted = files.filter((f) => f.cloudId && !f.cloudUrl);
  if (!destination || wanted.length === 0) return links;
  const byId = await downloadLinks(
    destination,
    config,
    wanted.map((f) => f.cloudId!),
  );
  for (const f of wanted) {
    const link = byId.get(f.cloudId!);
    if (link) links.set(f.fileIndex, link);
  }
  return links;
}

/** The path a destination stores a torrent path under, when its name rules change it. */
function storedAs(destination: Destination | undefined, path: string): string | null {
  if (!destination) return null;
  const rules = destinationNameRules[destination.kind];
  const stored = path
    .split("/")
    .map((name) => rules.name(name))
    .join("/");
  return stored === path ? null : stored;
}

export async function loadJob(
  db: Db,
  userId: string,
  jobId: string,
  config: Config,
): Promise<z.infer<typeof JobDetailSchema>> {
  const [row] = await db
    .select(summaryColumns)
    .from(jobs)
    .innerJoin(torrents, eq(jobs.torrentId, torrents.id))
    .where(and(eq(jobs.id, jobId), eq(jobs.userId, userId)));
  if (!row) throw jobNotFound();
  const [files, transitions] = await Promise.all([
    db.select().from(jobFiles).where(eq(jobFiles.jobId, jobId)).orderBy(asc(jobFiles.fileIndex)),
    db
      .select()
      .from(jobTransitions)
      .where(eq(jobTransitions.jobId, jobId))
      .orderBy(asc(jobTransitions.at), asc(jobTransitions.id)),
  ]);
  const destination = await destinationFor(db, userId, row.storageProfileId);
  const links = await fileLinks(destination, config, files);
  return {
    ...presentSummary(row, config.SELECTION_TIMEOUT_SECONDS),
    files: files.map((f) => ({
      index: f.fileIndex,
      path: f.path,
      size: f.size,
      selected: f.selected,
      state: f.state,
      bytesDownloaded: f.bytesDownloaded,
      bytesUploaded: f.bytesUploaded,
      cloudUrl: f.cloudUrl ?? links.get(f.fileIndex) ?? null,
      storedAs: storedAs(destination, f.path),
      error: f.error,
    })),
    transitions: transitions.map((t) => ({
      from: t.fromState,
      to: t.toState,
      cause: t.cause,
      attempt: t.attempt,
      reason: t.reason,
      at: t.at.toISOString(),
    })),
    seeding: null,
  };
}

/** A completed job's seeding, from its progress snapshot (one Redis read, only for a job that seeds). */
async function seedingOf(
  redis: Redis,
  job: { id: string; state: JobState; seed: unknown },
): Promise<SeedingProgress | null> {
  if (job.state !== "completed" || job.seed === null) return null;
  const event = readEvent(await redis.get<unknown>(keys.snapshot(job.id)));
  return event?.seeding ?? null;
}

/** 409 for a selection the job does not wait for, saying why in its words. */
function notAwaiting(state: JobState): ApiError {
  const why =
    state === "queued" || state === "resolving"
      ? "its metadata is not known yet (or its files were already chosen)"
      : state === "downloading" || state === "uploading" || state === "completed"
        ? "its files were already chosen"
        : `it is ${state}`;
  return new ApiError(
    409,
    "not_awaiting_selection",
    `This job is not waiting for a choice of files: ${why}.`,
    { state },
  );
}

/** A magnet job choosing its files whose metadata nobody has found yet. */
function wantsMetadata(job: { state: JobState; chooseFiles: boolean; known: boolean }): boolean {
  return job.chooseFiles && !job.known && (job.state === "queued" || job.state === "resolving");
}

/** 409 for metadata the job does not wait for, saying why. */
function metadataNotWanted(state: JobState): ApiError {
  const why =
    state === "awaiting_selection"
      ? "its metadata is known already and it waits for a choice of files"
      : state === "queued" || state === "resolving" || state === "downloading" || state === "uploading"
        ? "it is not a magnet job that waits to choose its files, or its metadata is known"
        : `it is ${state}`;
  return new ApiError(409, "metadata_not_needed", `This job does not need its metadata: ${why}.`, {
    state,
  });
}

/** Why applySelection changed nothing: the job is gone (404) or moved on meanwhile (409). */
async function refuseSelection(db: Db, userId: string, jobId: string): Promise<never> {
  const [row] = await db
    .select({ state: jobs.state })
    .from(jobs)
    .where(and(eq(jobs.id, jobId), eq(jobs.userId, userId)));
  if (!row) throw jobNotFound();
  throw notAwaiting(row.state);
}

/** Refuses (422 invalid_torrent) paths two of which the destination would store under one name. */
function checkNames(paths: string[], kind: DestinationKind): void {
  const rules = destinationNameRules[kind];
  const clash = findNameClash(paths, rules);
  if (clash) {
    throw new ApiError(422, "invalid_torrent", describeNameClash(clash, rules), {
      problem: "name_clash",
      paths: clash.paths,
      destination: rules.label,
    });
  }
}

function jobNotFound(): ApiError {
  return new ApiError(404, "job_not_found", "No job with this id belongs to you.");
}

/** Why a state change was refused: 404 if the job is not the caller's, else 409 naming its state. */
async function refuse(db: Db, userId: string, jobId: string, action: string): Promise<never> {
  const [row] = await db
    .select({ state: jobs.state })
    .from(jobs)
    .where(and(eq(jobs.id, jobId), eq(jobs.userId, userId)));
  if (!row) throw jobNotFound();
  const article = /^[aeiou]/.test(row.state) ? "an" : "a";
  throw new ApiError(
    409,
    "illegal_transition",
    `${article[0]!.toUpperCase()}${article.slice(1)} ${row.state} job cannot be ${action}.`,
    {
      state: row.state,
    },
  );
}

async function pickProfile(
  db: Db,
  userId: string,
  id: string | undefined,
): Promise<{ id: string; kind: DestinationKind }> {
  const [profile] = await db
    .select({
      id: storageProfiles.id,
      kind: storageProfiles.kind,
      name: storageProfiles.name,
      status: storageProfiles.status,
    })
    .from(storageProfiles)
    .where(
      and(
        eq(storageProfiles.userId, userId),
        id === undefined ? eq(storageProfiles.isDefault, true) : eq(storageProfiles.id, id),
      ),
    );
  if (!profile && id !== undefined) {
    throw new ApiError(404, "storage_profile_not_found", "No storage profile with this id belongs to you.");
  }
  if (!profile) {
    throw new ApiError(
      409,
      "no_storage",
      "You have no storage yet: add an S3 bucket or Google Drive, OneDrive or Dropbox under Storage, then submit the job again.",
    );
  }
  if (profile.status === "needs_reconnect") {
    throw new ApiError(
      409,
      "storage_needs_reconnect",
      `The storage "${profile.name}" needs to be reconnected before files can go there.`,
      { storageProfileId: profile.id },
    );
  }
  return { id: profile.id, kind: profile.kind };
}

/**
 * Refuses (422 name_clash) a torrent two of whose files the chosen
 * destination would store under one name (e.g. names differing only in case
 * on OneDrive or Dropbox), naming both. A magnet's files are checked by the
 * worker once its metadata is known.
 */
function checkDestinationNames(source: TorrentSource, kind: DestinationKind): void {
  if (source.kind !== "torrent") return;
  checkNames(
    source.info.files.map((f) => f.path),
    kind,
  );
}

/** Refuses (422) a browser transfer into a destination a tab cannot upload to. */
function checkBrowserDestination(kind: DestinationKind): void {
  if (destinations[kind].transfer) return;
  const able = destinationKinds.filter((k) => destinations[k].transfer).map((k) => destinations[k].label);
  throw new ApiError(
    422,
    "browser_transfer_unsupported",
    `A browser tab cannot upload into ${destinations[kind].label}: transfer in the browser works with ${able.join(" and ")}. Pick one of those, or let the worker fleet transfer the job.`,
    { destination: kind },
  );
}

/** A .torrent job: its name and facts from the info dictionary, its files at once. */
function torrentJob(source: Extract<TorrentSource, { kind: "torrent" }>) {
  const { info } = source;
  return {
    name: info.name,
    source: { kind: "torrent" as const, torrent: source.bytes },
    torrent: {
      infoHash: info.infoHash,
      facts: {
        infoHashV2: info.infoHashV2,
        name: info.name,
        totalSize: info.totalSize,
        pieceLength: info.pieceLength,
        pieceCount: info.pieceCount,
      },
      files: info.files,
    },
  };
}

/** A magnet job: named by its dn; its files come from its own worker's resolution. */
function magnetJob(source: Extract<TorrentSource, { kind: "magnet" }>) {
  return {
    name: source.info.name,
    source: { kind: "magnet" as const, magnet: source.uri },
    // A magnet's v2 hash is only the link's claim: nothing about it goes on the shared row.
    torrent: { infoHash: source.info.infoHash, files: null },
  };
}

/** Bytes the job will fetch: its selected files' (a magnet's are unknown until resolved: 0). */
function selectedBytes(source: TorrentSource, selected: number[] | undefined): number {
  if (source.kind === "magnet") return 0;
  const chosen = selected ? new Set(selected) : undefined;
  return source.info.files.filter((f) => !chosen || chosen.has(f.index)).reduce((sum, f) => sum + f.size, 0);
}

function checkSelection(
  source: TorrentSource,
  files: number[] | undefined,
  chooseFiles: boolean | undefined,
): number[] | undefined {
  if (chooseFiles && source.kind !== "magnet") {
    throw new ApiError(
      422,
      "choose_needs_magnet",
      "`chooseFiles` is for magnet links, whose file list is known only later; with a .torrent file, pick the files with `files`.",
    );
  }
  if (files === undefined) return undefined;
  if (source.kind === "magnet") {
    throw new ApiError(
      422,
      "selection_needs_metadata",
      "Files can only be picked from a .torrent file at once; a magnet link's file list is unknown until a worker fetches it. Send `chooseFiles: true` to pick them then, or leave out `files` to fetch everything.",
    );
  }
  const selected = [...new Set(files)];
  if (selected.length === 0) throw new ApiError(422, "no_files_selected", "Pick at least one file.");
  const known = new Set(source.info.files.map((f) => f.index));
  const unknown = selected.filter((i) => !known.has(i));
  if (unknown.length > 0) {
    throw new ApiError(
      422,
      "unknown_files",
      `The torrent has no file with index ${unknown.slice(0, 10).join(", ")}${unknown.length > 10 ? ", …" : ""}; it has ${source.info.files.length} files.`,
      { unknown: unknown.slice(0, 100) },
    );
  }
  return selected.sort((a, b) => a - b);
}

// --- Cursor ---------------------------------------------------------------------

interface Cursor {
  /** created_at to the microsecond, as Postgres wrote it (UTC). */
  ts: string;
  id: string;
}

const CURSOR_TS = /^(\d{4})-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

/** A timestamp in the cursor's shape that names a real instant Postgres accepts (no Feb 30, no year 0). */
function isCursorTimestamp(ts: string): boolean {
  const match = CURSOR_TS.exec(ts);
  if (!match || Number(match[1]) < 1) return false;
  const millis = `${ts.slice(0, 23)}Z`;
  const parsed = new Date(millis);
  return !Number.isNaN(parsed.getTime()) && parsed.toISOString() === millis;
}
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function encodeCursor(cursor: Cursor): string {
  return btoa(JSON.stringify([cursor.ts, cursor.id]))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");
}

function decodeCursor(text: string): Cursor {
  try {
    const value: unknown = JSON.parse(atob(text.replaceAll("-", "+").replaceAll("_", "/")));
    if (Array.isArray(value) && typeof value[0] === "string" && typeof value[1] === "string") {
      const [ts, id] = value as [string, string];
      if (isCursorTimestamp(ts) && UUID.test(id)) return { ts, id };
    }
  } catch {
    // falls through to the 400
  }
  throw new ApiError(400, "invalid_request", "cursor: must be the nextCursor of an earlier page.");
}

// --- Progress -------------------------------------------------------------------

// --- Routes ---------------------------------------------------------------------

const tags = ["Jobs"];

const createJob = createRoute({
  method: "post",
  path: "/",
  tags,
  summary: "Submit a job",
  description:
    "Creates a job from a .torrent (base64) or a magnet link into one of your storage profiles, and queues it. Answers 201 once the job is saved, even if queueing has to be retried in the background. `seed: { ratio, minutes }` keeps seeding the torrent back to its swarm once the files are stored, until the ratio (bytes uploaded ÷ selected bytes) or the minutes, whichever comes first, each capped by the operator (a limit left out is the cap; `{ ratio: 0 }` asks for none); left out, the operator's default applies (none unless set). Fleet jobs only. The job's `seed` shows what was granted, its `seeding` what was done.",
  security: signedIn,
  middleware: [
    requireUser,
    rateLimit("jobs-create", 30, "1 m"),
    acceptContentTypes("application/json"),
    limitBody(TORRENT_BODY_LIMIT),
    parseJsonBody,
  ] as const,
  request: { body: { required: true, content: { "application/json": { schema: CreateJobBody } } } },
  responses: {
    201: { description: "The job, queued.", content: { "application/json": { schema: JobResponse } } },
    ...errorResponses({
      400: "The body is not valid (e.g. both or neither of torrent and magnet, bad targetFolder).",
      401: "Not signed in.",
      403: `${csrfRefused} Or this job would go beyond your monthly transfer quota (\`quota_monthly_bytes\`, with Retry-After until it renews).`,
      404: "The storage profile does not exist or is not yours.",
      409: "You have no storage profile yet, or it needs reconnecting.",
      413: "The body or the .torrent is too large.",
      415: "The body is not JSON.",
      422: "The torrent or magnet is invalid, or the file selection does not fit it.",
      429: "Too many jobs submitted; wait a minute (`rate_limited`), or as many jobs are waiting to start as your quota allows (`quota_queued_jobs`).",
    }),
  },
});

const listJobs = createRoute({
  method: "get",
  path: "/",
  tags,
  summary: "List your jobs",
  description: "Newest first, a page at a time: pass `nextCursor` back as `cursor` for the next page.",
  security: signedIn,
  middleware: [requireUser] as const,
  request: { query: ListQuery },
  responses: {
    200: {
      description: "A page of jobs.",
      content: {
        "application/json": {
          schema: z.object({ jobs: z.array(JobSummarySchema), nextCursor: z.string().nullable() }),
        },
      },
    },
    ...errorResponses({ 400: "Bad limit, cursor, status, q or storage.", 401: "Not signed in." }),
  },
});

const getJob = createRoute({
  method: "get",
  path: "/{id}",
  tags,
  summary: "A job with its files and history",
  security: signedIn,
  middleware: [requireUser] as const,
  request: { params: JobParams },
  responses: {
    200: { description: "The job.", content: { "application/json": { schema: JobResponse } } },
    ...errorResponses({ 400: "The id is not a UUID.", 401: "Not signed in.", 404: "No such job of yours." }),
  },
});

const cancelJob = createRoute({
  method: "post",
  path: "/{id}/cancel",
  tags,
  summary: "Cancel a job",
  description: "Stops a queued or running job; a worker running it stops at its next lease renewal.",
  security: signedIn,
  middleware: [requireUser] as const,
  request: { params: JobParams },
  responses: {
    200: { description: "The cancelled job.", content: { "application/json": { schema: JobResponse } } },
    ...errorResponses({
      400: "The id is not a UUID.",
      401: "Not signed in.",
      403: csrfRefused,
      404: "No such job of yours.",
      409: "The job has already finished.",
    }),
  },
});

const retryJob = createRoute({
  method: "post",
  path: "/{id}/retry",
  tags,
  summary: "Retry a failed or cancelled job",
  description: "Queues the job again; files already stored are not uploaded twice.",
  security: signedIn,
  middleware: [requireUser, rateLimit("jobs-create", 30, "1 m")] as const,
  request: { params: JobParams },
  responses: {
    200: { description: "The job, queued again.", content: { "application/json": { schema: JobResponse } } },
    ...errorResponses({
      400: "The id is not a UUID.",
      401: "Not signed in.",
      403: csrfRefused,
      404: "No such job of yours.",
      409: "Only failed or cancelled jobs can be retried.",
      429: "Too many jobs submitted; wait a minute (`rate_limited`), or as many jobs are waiting to start as your quota allows (`quota_queued_jobs`).",
    }),
  },
});

const deleteJob = createRoute({
  method: "delete",
  path: "/{id}",
  tags,
  summary: "Delete a finished job",
  description: "Removes a completed, failed or cancelled job and its progress history. Stored files stay.",
  security: signedIn,
  middleware: [requireUser] as const,
  request: { params: JobParams },
  responses: {
    204: { description: "Deleted." },
    ...errorResponses({
      400: "The id is not a UUID.",
      401: "Not signed in.",
      403: csrfRefused,
      404: "No such job of yours.",
      409: "The job is still live; cancel it first.",
    }),
  },
});

const chooseFiles = createRoute({
  method: "post",
  path: "/{id}/selection",
  tags,
  summary: "Choose the files of a magnet job",
  description:
    "For a job in `awaiting_selection` (a magnet submitted with `chooseFiles`, whose metadata a worker has fetched): fetches the given files (the others are skipped), optionally under another folder, and queues the job again. No worker fetches the metadata again: it was kept. A job left waiting longer than the operator's SELECTION_TIMEOUT_SECONDS (default 24 h) is cancelled.",
  security: signedIn,
  middleware: [requireUser, acceptContentTypes("application/json"), parseJsonBody] as const,
  request: {
    params: JobParams,
    body: { required: true, content: { "application/json": { schema: SelectionBody } } },
  },
  responses: {
    200: { description: "The job, queued again.", content: { "application/json": { schema: JobResponse } } },
    ...errorResponses({
      400: "The id is not a UUID, the selection is empty or names a file the job does not have, or the folder is bad.",
      401: "Not signed in.",
      403: csrfRefused,
      404: "No such job of yours.",
      409: "The job is not waiting for a choice of files (not asked for, already chosen, cancelled, or still resolving).",
      415: "The body is not JSON.",
      422: "Two of the chosen files would be stored under one name at the job's destination.",
    }),
  },
});

const submitMetadata = createRoute({
  method: "post",
  path: "/{id}/metadata",
  tags,
  summary: "Hand in a magnet job's metadata",
  description:
    "For a magnet job submitted with `chooseFiles` whose metadata is not known yet (`queued`, or `resolving` on a worker): the info dictionary, found by the submitter's browser in the swarm, so the job waits in `awaiting_selection` without waiting for the fleet. Whichever finds it first wins; a worker still looking is stopped. Accepted only if its SHA-1 is the job's info hash and the parser accepts it with the limits of an uploaded .torrent.",
  security: signedIn,
  middleware: [
    requireUser,
    // Each request hashes up to a .torrent's worth of bytes, as an analysis does.
    rateLimit("jobs-metadata", 60, "1 m"),
    limitBody(TORRENT_BODY_LIMIT),
    acceptContentTypes("application/json"),
    parseJsonBody,
  ] as const,
  request: {
    params: JobParams,
    body: { required: true, content: { "application/json": { schema: MetadataBody } } },
  },
  responses: {
    200: {
      description: "The job, now waiting for a choice of files.",
      content: { "application/json": { schema: JobResponse } },
    },
    ...errorResponses({
      400: "The id is not a UUID, or the body is not an info dictionary in base64.",
      401: "Not signed in.",
      403: csrfRefused,
      404: "No such job of yours.",
      409: "The job does not wait for metadata (not a magnet job choosing its files, or its metadata is known).",
      413: "The info dictionary is over the .torrent size limit.",
      415: "The body is not JSON.",
      429: "Too many hand-ins this minute.",
      422: "The info dictionary is not the magnet's (its SHA-1 differs) or the parser refuses it.",
    }),
  },
});

const stopSeeding = createRoute({
  method: "post",
  path: "/{id}/seeding/stop",
  tags,
  summary: "Stop a job's seeding",
  description:
    "For a completed job that seeds back: its worker stops seeding at its next lease renewal (within seconds); the job's `seeding` then ends with reason `user`. The job itself stays completed.",
  security: signedIn,
  middleware: [requireUser] as const,
  request: { params: JobParams },
  responses: {
    200: {
      description: "The job; its seeding stops shortly.",
      content: { "application/json": { schema: JobResponse } },
    },
    ...errorResponses({
      400: "The id is not a UUID.",
      401: "Not signed in.",
      403: csrfRefused,
      404: "No such job of yours.",
      409: "The job does not seed (not completed, not asked for, or its seeding already ended).",
    }),
  },
});

const jobProgress = createRoute({
  method: "get",
  path: "/{id}/progress",
  tags,
  summary: "A job's progress events",
  description:
    "Events newer than `after` (oldest first, at most `limit`) and the latest snapshot. Poll with the returned `cursor` as `after`.",
  security: signedIn,
  middleware: [requireUserInRoute] as const,
  request: { params: JobParams, query: ProgressQuery },
  responses: {
    200: { description: "New events.", content: { "application/json": { schema: ProgressResponse } } },
    ...errorResponses({
      400: "The id is not a UUID or `after` is not a cursor.",
      401: "Not signed in.",
      404: "No such job of yours.",
    }),
  },
});

const api = router();
registerAuthSchemes(api);

export const jobsApi = api
  .openapi(createJob, async (c) => {
    const body = c.req.valid("json");
    const userId = c.var.user.id;
    const source = await readSource({ torrent: body.torrent, magnet: body.magnet });
    const selected = checkSelection(source, body.files, body.chooseFiles);
    const db = c.var.db();
    const { id: storageProfileId, kind } = await pickProfile(db, userId, body.storageProfileId);
    checkDestinationNames(source, kind);
    const runner = body.runner ?? "fleet";
    if (runner === "browser") checkBrowserDestination(kind);
    if (runner === "browser" && body.seed && boundSeed(body.seed, seedPolicyOf(c.var.config)))
      throw new ApiError(
        400,
        "invalid_request",
        "seed: seeding back is done by the worker fleet; a job your browser transfers cannot seed.",
      );
    const job = source.kind === "torrent" ? torrentJob(source) : magnetJob(source);
    const config = c.var.config;
    const bytes = selectedBytes(source, selected);
    // Marked before the row is written: a request that dies after it leaves the reconcile a reason to look.
    await noteChange(c.var.redis);
    const { job: created } = await insertJob(db, config.CREDENTIALS_KEYS, {
      ...job,
      userId,
      selected,
      storageProfileId,
      // No folder given: one named after the torrent (a magnet's is settled by the worker once its files are known).
      targetFolder:
        body.targetFolder ?? (source.kind === "torrent" ? defaultFolder(source.info.files) : undefined),
      // Over a quota nothing is written: the check runs in the insert's transaction.
      guard: (tx) =>
        checkNewJob(tx, config, userId, bytes, new Date(), (name, value) => c.header(name, value)),
      chooseFiles: source.kind === "magnet" && body.chooseFiles === true,
      // Its queue entry carries this request's trace, also when its turn comes later.
      trace: requestTraceContext(),
      runner,
      seed: runner === "fleet" ? boundSeed(body.seed, seedPolicyOf(config)) : null,
    });
    // A browser job waits for its tab (POST /{id}/transfer), never for the fleet.
    if (runner === "browser") return c.json({ job: await loadJob(db, userId, created.id, config) }, 201);
    // Its turn may come at once, or after the user's jobs ahead of it (fair turns): then
    // whoever lets it in writes its entry, and its trace starts at the worker.
    await forJob(created.id, () => admitAndEnqueue(db, c.var.redis, userId, config.QUOTA_RUNNING_JOBS));
    return c.json({ job: await loadJob(db, userId, created.id, config) }, 201);
  })
  .openapi(listJobs, async (c) => {
    const { limit, cursor, status, q, storage } = c.req.valid("query");
    const after = cursor === undefined ? undefined : decodeCursor(cursor);
    const rows = await c.var
      .db()
      .select({
        ...summaryColumns,
        cursorTs: sql<string>`to_char(${jobs.createdAt} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`,
      })
      .from(jobs)
      .innerJoin(torrents, eq(jobs.torrentId, torrents.id))
      .where(
        and(
          eq(jobs.userId, c.var.user.id),
          status ? inArray(jobs.state, status) : undefined,
          q ? ilike(jobs.name, containsPattern(q)) : undefined,
          storage ? eq(jobs.storageProfileId, storage) : undefined,
          after
            ? sql`(${jobs.createdAt}, ${jobs.id}) < (${after.ts}::timestamptz, ${after.id}::uuid)`
            : undefined,
        ),
      )
      // Matches jobs_user_created_idx (user_id, created_at DESC, id DESC).
      .orderBy(desc(jobs.createdAt), desc(jobs.id))
      .limit(limit + 1);
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    return c.json(
      {
        jobs: page.map((row) => presentSummary(row, c.var.config.SELECTION_TIMEOUT_SECONDS)),
        nextCursor: rows.length > limit && last ? encodeCursor({ ts: last.cursorTs, id: last.id }) : null,
      },
      200,
    );
  })
  .openapi(getJob, async (c) => {
    const { id } = c.req.valid("param");
    const job = await loadJob(c.var.db(), c.var.user.id, id, c.var.config);
    return c.json({ job: { ...job, seeding: await seedingOf(c.var.redis, job) } }, 200);
  })
  .openapi(stopSeeding, async (c) => {
    const { id } = c.req.valid("param");
    const job = await loadJob(c.var.db(), c.var.user.id, id, c.var.config);
    const seeding = await seedingOf(c.var.redis, job);
    const why =
      job.state !== "completed"
        ? `it is ${job.state}; a job seeds only once it is completed`
        : job.seed === null
          ? "it was not asked to seed"
          : seeding?.ended
            ? `its seeding already ended (${seeding.ended.message})`
            : undefined;
    if (why) throw new ApiError(409, "not_seeding", `This job is not seeding: ${why}.`, { state: job.state });
    // The worker seeing it renews its leases in the same command that reads this flag.
    await c.var.redis.set(keys.seedStop(id), String(seedStopFlag.user), { ex: CANCEL_FLAG_SECONDS });
    return c.json({ job: { ...job, seeding } }, 200);
  })
  .openapi(cancelJob, async (c) => {
    const { id } = c.req.valid("param");
    const userId = c.var.user.id;
    const db = c.var.db();
    const job = await transitionJob(db, {
      jobId: id,
      to: "cancelled",
      cause: "user",
      reason: "cancelled by the user",
      userId,
    });
    if (!job) await refuse(db, userId, id, "cancelled");
    try {
      // A worker running the job checks this flag as it renews its lease. It names the
      // attempt being cancelled, so a retry (a later attempt) is never stopped by it.
      // The clean-up entry has a worker abort whatever uploads the job left, also when no
      // attempt is running to see the flag.
      const cleanup: JobMessage = { jobId: id, cleanup: true };
      const tx = c.var.redis
        .multi()
        .set(keys.cancel(id), String(job!.attempt), { ex: CANCEL_FLAG_SECONDS })
        .xadd(queue.stream, "*", { job: JSON.stringify(cleanup) })
        .zrem(keys.awaitingSelection, id)
        // A browser tab still transferring it finds its progress refused.
        .del(keys.transfer(id))
        .incr(keys.reconcileChanges);
      // The user's webhooks hear of it at once (an idle worker is blocked on this list).
      if (job!.webhookDeliveries > 0) tx.lpush(webhookWakeKey, "1");
      await tx.exec();
    } catch (err) {
      // The row says cancelled: the worker's next fenced write is refused and it stops then.
      console.warn(
        JSON.stringify({ level: "warn", msg: "cancel flag not written", jobId: id, error: String(err) }),
      );
    }
    // A running job ended, or a waiting one left the line: the user's next may go in.
    await admitAndEnqueue(db, c.var.redis, userId, c.var.config.QUOTA_RUNNING_JOBS);
    return c.json({ job: await loadJob(db, userId, id, c.var.config) }, 200);
  })
  .openapi(retryJob, async (c) => {
    const { id } = c.req.valid("param");
    const userId = c.var.user.id;
    const db = c.var.db();
    await checkRetry(db, c.var.config, userId, new Date());
    await noteChange(c.var.redis);
    // Unconfirmed first, so the reconciler covers a queue write that fails below.
    await db
      .update(jobs)
      .set({ enqueuedAt: null })
      .where(and(eq(jobs.id, id), eq(jobs.userId, userId), inArray(jobs.state, ["failed", "cancelled"])));
    const job = await retryTransition(db, id, userId);
    if (!job) await refuse(db, userId, id, "retried");
    // Back in line like a new job: in the queue when it is the user's turn.
    await forJob(id, () => admitAndEnqueue(db, c.var.redis, userId, c.var.config.QUOTA_RUNNING_JOBS));
    return c.json({ job: await loadJob(db, userId, id, c.var.config) }, 200);
  })
  .openapi(deleteJob, async (c) => {
    const { id } = c.req.valid("param");
    const userId = c.var.user.id;
    const db = c.var.db();
    const [gone] = await db
      .delete(jobs)
      .where(and(eq(jobs.id, id), eq(jobs.userId, userId), inArray(jobs.state, [...terminalStates])))
      .returning({ id: jobs.id, seedRatio: jobs.seedRatio });
    if (!gone) await refuse(db, userId, id, "deleted; cancel it first");
    try {
      await c.var.redis.del(
        keys.owner(id),
        keys.progress(id),
        keys.snapshot(id),
        keys.cancel(id),
        keys.lease(id),
      );
      // A worker still seeding it stops (and writes no progress back for it).
      if (gone?.seedRatio != null)
        await c.var.redis.set(keys.seedStop(id), String(seedStopFlag.deleted), { ex: CANCEL_FLAG_SECONDS });
    } catch (err) {
      // Progress keys expire by themselves; only the owner key would linger, naming a deleted job.
      console.warn(
        JSON.stringify({ level: "warn", msg: "job keys not deleted", jobId: id, error: String(err) }),
      );
    }
    return c.body(null, 204);
  })
  .openapi(chooseFiles, async (c) => {
    const { id } = c.req.valid("param");
    const body = c.req.valid("json");
    const userId = c.var.user.id;
    const db = c.var.db();
    const [job] = await db
      .select({ state: jobs.state, storageProfileId: jobs.storageProfileId })
      .from(jobs)
      .where(and(eq(jobs.id, id), eq(jobs.userId, userId)));
    if (!job) throw jobNotFound();
    if (job.state !== "awaiting_selection") throw notAwaiting(job.state);
    const files = await db
      .select({ index: jobFiles.fileIndex, path: jobFiles.path })
      .from(jobFiles)
      .where(eq(jobFiles.jobId, id))
      .orderBy(asc(jobFiles.fileIndex));
    const selected = [...new Set(body.files)].sort((a, b) => a - b);
    if (selected.length === 0) throw new ApiError(400, "no_files_selected", "Pick at least one file.");
    const known = new Set(files.map((f) => f.index));
    const unknown = selected.filter((i) => !known.has(i));
    if (unknown.length > 0) {
      throw new ApiError(
        400,
        "unknown_files",
        `The job has no file with index ${unknown.slice(0, 10).join(", ")}${unknown.length > 10 ? ", …" : ""}; it has ${files.length} file${files.length === 1 ? "" : "s"}.`,
        { unknown: unknown.slice(0, 100) },
      );
    }
    // The destination's name rules, as at creation for a .torrent: two chosen files never meet under one name.
    const destination = await destinationFor(db, userId, job.storageProfileId);
    if (destination) {
      const chosen = new Set(selected);
      checkNames(
        files.filter((f) => chosen.has(f.index)).map((f) => f.path),
        destination.kind,
      );
    }
    await noteChange(c.var.redis);
    const moved = await applySelection(db, { jobId: id, userId, selected, targetFolder: body.targetFolder });
    if (!moved) await refuseSelection(db, userId, id);
    // A browser job waits for its tab again; a fleet job goes back into the stream.
    if (moved?.runner !== "browser") await forJob(id, () => enqueueJob(db, c.var.redis, id, userId));
    // The wait is over: the reconcile has nothing to look for (best effort; a stale entry costs one query).
    await c.var.redis.zrem(keys.awaitingSelection, id).catch(() => undefined);
    return c.json({ job: await loadJob(db, userId, id, c.var.config) }, 200);
  })
  .openapi(submitMetadata, async (c) => {
    const { id } = c.req.valid("param");
    const { infoDictionary } = c.req.valid("json");
    const userId = c.var.user.id;
    const db = c.var.db();
    const config = c.var.config;
    const [row] = await db
      .select({
        job: {
          id: jobs.id,
          state: jobs.state,
          chooseFiles: jobs.chooseFiles,
          known: sql<boolean>`${jobs.infoDictionary} is not null`,
          sourceKind: jobs.sourceKind,
          sourceCiphertext: jobs.sourceCiphertext,
          sourceIv: jobs.sourceIv,
          sourceKeyId: jobs.sourceKeyId,
        },
        torrent: { id: torrents.id, infoHash: torrents.infoHash },
      })
      .from(jobs)
      .innerJoin(torrents, eq(torrents.id, jobs.torrentId))
      .where(and(eq(jobs.id, id), eq(jobs.userId, userId)));
    if (!row) throw jobNotFound();
    if (!wantsMetadata(row.job)) throw metadataNotWanted(row.job.state);
    // The magnet's so= (it is sealed with the job) pre-selects files, as when a worker resolves it.
    const sealed = sealedSourceOf(row.job);
    const source = sealed ? await decryptJobSource(config.CREDENTIALS_KEYS, sealed, id) : undefined;
    const selectOnly = source?.kind === "magnet" ? parseMagnet(source.magnet).selectOnly : undefined;
    const meta = await readInfoDictionary(infoDictionary, row.torrent.infoHash, selectOnly);
    await noteChange(c.var.redis);
    const accepted = await acceptMetadata(db, { jobId: id, userId, torrentId: row.torrent.id, meta });
    if (!accepted) {
      const [now] = await db.select({ state: jobs.state }).from(jobs).where(eq(jobs.id, id));
      throw metadataNotWanted(now?.state ?? row.job.state);
    }
    try {
      const tx = c.var.redis.multi().zadd(keys.awaitingSelection, { score: Date.now(), member: id });
      // A worker still resolving it stops as it renews its lease, as for a cancel of its attempt.
      if (accepted.wasResolving) {
        tx.set(keys.cancel(id), String(accepted.stoppedAttempt), { ex: CANCEL_FLAG_SECONDS });
      }
      if (accepted.job.webhookDeliveries > 0) tx.lpush(webhookWakeKey, "1");
      await tx.exec();
    } catch (err) {
      // The row says awaiting_selection: a resolving worker's next fenced write is refused,
      // and the reconcile's daily pass still finds a wait that runs out.
      console.warn(
        JSON.stringify({ level: "warn", msg: "metadata wait not noted", jobId: id, error: String(err) }),
      );
    }
    // It left the line waiting for its owner: their next job may go in.
    await admitAndEnqueue(db, c.var.redis, userId, config.QUOTA_RUNNING_JOBS);
    return c.json({ job: await loadJob(db, userId, id, config) }, 200);
  })
  .openapi(jobProgress, async (c) => {
    const { id } = c.req.valid("param");
    const { after, limit } = c.req.valid("query");
    const user = c.var.user;
    const start = after === undefined ? "-" : nextStreamId(after);
    // One command: the session, the owner (nothing of a job is read before it is known to
    // be the caller's), the watched mark, the snapshot and the events.
    const poll = () =>
      pollProgress(c.var.redis, {
        jobId: id,
        userId: user.id,
        sessionKey: user.unconfirmedSession,
        start,
        limit,
      });
    let result = await poll();
    if (result.status === "unknown") {
      // Redis lost the owner key: Postgres says, and the key is written back.
      const owned = await ownsJobs(c.var.db, c.var.redis, user.id, new Map([[id, null]]));
      if (owned.has(id)) result = await poll();
    }
    if (result.status === "session") throw sessionEnded();
    if (result.status !== "ok") throw jobNotFound();
    const events: { id: string; event: ProgressEvent }[] = [];
    for (const [entryId, fields] of result.entries) {
      const event = readEvent(fieldOf(fields, progressField));
      if (event) events.push({ id: entryId, event });
    }
    return c.json(
      {
        events,
        cursor: result.entries.at(-1)?.[0] ?? after ?? "0-0",
        more: result.entries.length >= limit,
        snapshot: result.snapshot === null ? null : (readEvent(result.snapshot) ?? null),
      },
      200,
    );
  });
