// Transfers in the browser (contracts/src/transfer.ts): the submitter's tab
// downloads the torrent itself and uploads the files straight into the
// destination; the edge never sees the bytes. It hands the tab an attempt
// (the fencing token a worker holds), opens each file's upload where a worker
// would (same names, part layout and upload_session column), presigns one S3
// part at a time, records what the tab reports, and moves the job through the
// same transition table as a worker, with cause `browser`.
//
// Every call is owner-only (another user's job is a 404), every body is the
// contract's schema, every refusal a 4xx that changes nothing, and every write
// names the tab's attempt: an older one gets 409 `stale_attempt`. Progress
// posts cost two Redis commands and no SQL unless the phase changes.
import { createRoute, z } from "@hono/zod-openapi";
import {
  CompleteFile,
  type DestinationKind,
  type DestinationOf,
  decryptJobSource,
  destinationOf,
  type FileState,
  FileUpload,
  type JobState,
  jobFolder,
  keys,
  PartUrl,
  type ProgressEvent,
  partLength,
  partUrlSeconds,
  progressField,
  progressPublishScript,
  progressRetentionSeconds,
  queue,
  StoredPart,
  sealedSourceOf,
  TransferAttempt,
  TransferFailure,
  TransferPlan,
  TransferProgress,
  transferProgressEveryMs,
  webhookWakeKey,
} from "@torreclou/contracts";
import { type Job, type JobFile, jobFiles, jobs, storageProfiles } from "@torreclou/db";
import { journalOf, recordPart, updateFile } from "@torreclou/db/files";
import { type Db, StaleAttemptError, type TransitionedJob, transitionJob } from "@torreclou/db/jobs";
import { handToFleet, type Refusal, takeForBrowser } from "@torreclou/db/transfer";
import type { Redis } from "@upstash/redis/cloudflare";
import { and, asc, eq } from "drizzle-orm";
import type { Context } from "hono";
import { requireUser } from "../auth/index.ts";
import { destinations } from "../destinations/index.ts";
import type {
  BrowserTransfer,
  EdgeDestination,
  TransferContext,
  TransferFile,
} from "../destinations/types.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors/index.ts";
import { rateLimit } from "../limits/index.ts";
import { admitAndEnqueue, noteChange } from "../queue/enqueue.ts";
import { csrfRefused, errorResponses, registerAuthSchemes, signedIn } from "../security/openapi.ts";
import { acceptContentTypes, parseJsonBody } from "../torrents/input.ts";
import { forJob } from "../tracing/index.ts";
import { JobResponse, loadJob } from "./jobs.ts";
import { router } from "./openapi.ts";

type C = Context<AppEnv>;

/** What the tab is told when the job is closed: the reason a person reads. */
export const pausedReason = "Paused: the browser tab transferring it was closed";
/** Prefix of a tab's own failure reason. */
export const browserFailurePrefix = "The transfer in the browser failed: ";

// --- Errors ------------------------------------------------------------------

function jobNotFound(): ApiError {
  return new ApiError(404, "job_not_found", "No job with this id belongs to you.");
}

function staleAttempt(attempt: number): ApiError {
  return new ApiError(
    409,
    "stale_attempt",
    `Attempt ${attempt} no longer holds this job: another tab (or the worker fleet) has it now.`,
    { attempt },
  );
}

function refusal(r: Refusal): ApiError {
  switch (r.refused) {
    case "not_found":
      return jobNotFound();
    case "not_browser":
      return notBrowser();
    case "state":
      return new ApiError(409, "not_transferable", `A ${r.state} job cannot be transferred in the browser.`, {
        state: r.state,
      });
    case "running_limit":
      return new ApiError(
        429,
        "quota_running_jobs",
        `You already run ${r.used} job${r.used === 1 ? "" : "s"}, the most allowed at once (${r.limit}). Start this one when one of them has ended.`,
        { quota: "runningJobs", limit: r.limit, used: r.used },
      );
  }
}

function notBrowser(): ApiError {
  return new ApiError(
    409,
    "not_browser_job",
    "The worker fleet transfers this job, not a browser tab (it was submitted for the fleet, or handed to it).",
  );
}

/** Runs a fenced write; a newer attempt's job answers 409 stale_attempt. */
async function fenced<T>(attempt: number, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (error) {
    if (error instanceof StaleAttemptError) throw staleAttempt(attempt);
    throw error;
  }
}

// --- Loading -------------------------------------------------------------------

interface Held {
  job: Job;
  destination: DestinationOf<DestinationKind>;
  transfer: BrowserTransfer<DestinationKind>;
}

/** The job's destination and its browser upload, or a 4xx saying why there is none. */
async function destinationOfJob(db: Db, job: Job): Promise<Omit<Held, "job">> {
  const [profile] = job.storageProfileId
    ? await db
        .select()
        .from(storageProfiles)
        .where(and(eq(storageProfiles.id, job.storageProfileId), eq(storageProfiles.userId, job.userId)))
    : [];
  if (!profile) {
    throw new ApiError(
      409,
      "storage_missing",
      "The storage profile for this job was deleted. Choose another destination and retry.",
    );
  }
  const destination = destinationOf(profile);
  const module = destinations[destination.kind] as EdgeDestination<DestinationKind>;
  if (!module.transfer) {
    throw new ApiError(
      422,
      "browser_transfer_unsupported",
      `A browser tab cannot upload into ${module.label}.`,
    );
  }
  return { destination, transfer: module.transfer };
}

/**
 * The caller's browser job, held by `attempt` and transferring (downloading or
 * uploading), with its destination; else the 4xx that says why not.
 */
async function loadHeld(c: C, jobId: string, attempt: number): Promise<Held> {
  const db = c.var.db();
  const [job] = await db
    .select()
    .from(jobs)
    .where(and(eq(jobs.id, jobId), eq(jobs.userId, c.var.user.id)));
  if (!job) throw jobNotFound();
  if (job.runner !== "browser") throw notBrowser();
  if (job.attempt !== attempt) throw staleAttempt(attempt);
  if (job.state !== "downloading" && job.state !== "uploading") {
    throw new ApiError(409, "not_transferring", `The job is ${job.state}: take it again to transfer it.`, {
      state: job.state,
    });
  }
  return { job, ...(await destinationOfJob(db, job)) };
}

/** One of the job's files; 404 for an index it does not have, 409 for a file not chosen. */
async function loadFile(db: Db, jobId: string, index: number): Promise<JobFile> {
  const [file] = await db
    .select()
    .from(jobFiles)
    .where(and(eq(jobFiles.jobId, jobId), eq(jobFiles.fileIndex, index)));
  if (!file) throw new ApiError(404, "file_not_found", `The job has no file with index ${index}.`);
  if (!file.selected)
    throw new ApiError(409, "file_not_selected", `File ${index} is not one the job fetches.`);
  return file;
}

function contextOf(c: C, held: Held, file: JobFile): TransferContext<DestinationKind> {
  const db = c.var.db();
  return {
    destination: held.destination,
    config: c.var.config,
    folder: jobFolder(held.job),
    journal: () => journalOf(db, file.id),
  };
}

const transferFile = (file: JobFile): TransferFile => ({
  index: file.fileIndex,
  path: file.path,
  size: file.size,
  uploadSession: file.uploadSession,
});

function openUpload(file: JobFile): TransferFile & { uploadSession: string } {
  if (!file.uploadSession) {
    throw new ApiError(
      409,
      "upload_not_open",
      `File ${file.fileIndex}'s upload is not open: POST …/files/${file.fileIndex}/upload first.`,
    );
  }
  return { ...transferFile(file), uploadSession: file.uploadSession };
}

function notStoredYet(file: JobFile): void {
  if (file.state === "uploaded") {
    throw new ApiError(409, "file_stored", `File ${file.fileIndex} is stored already.`);
  }
}

// --- Progress ------------------------------------------------------------------

/** What the edge keeps in Redis while a tab holds the job (keys.transfer). */
interface TransferState {
  attempt: number;
  phase: "downloading" | "uploading";
  total: number;
  /** [index, size] of each selected file. */
  sizes: [number, number][];
}

function transferStateOf(job: Job, files: JobFile[]): TransferState {
  return {
    attempt: job.attempt,
    phase: job.state === "uploading" ? "uploading" : "downloading",
    total: job.bytesTotal,
    sizes: files.filter((f) => f.selected).map((f) => [f.fileIndex, f.size]),
  };
}

async function saveTransferState(redis: Redis, jobId: string, state: TransferState): Promise<void> {
  await redis.set(keys.transfer(jobId), JSON.stringify(state), { ex: progressRetentionSeconds });
}

/**
 * The gate of a tab's progress post, one command: the owner key says whose
 * job it is, the transfer state its attempt and phase, and the gate key
 * whether an event was written less than `transferProgressEveryMs` ago (then
 * the post is dropped). Returns 'other', 'unknown' (Redis has no state: the
 * database must say), 'stale', 'phase' (downloading → uploading: a move to
 * record first), 'dropped' or 'ok', with the state.
 * KEYS: owner, transfer, gate. ARGV: user id, attempt, phase, gate ms.
 */
const GATE = `
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return {'other'} end
local raw = redis.call('GET', KEYS[2])
if not owner or not raw then return {'unknown'} end
local ok, state = pcall(cjson.decode, raw)
if not ok or type(state) ~= 'table' then return {'unknown'} end
if tonumber(state.attempt) ~= tonumber(ARGV[2]) then return {'stale'} end
if ARGV[3] == 'uploading' and state.phase == 'downloading' then return {'phase', raw} end
if redis.call('SET', KEYS[3], '1', 'PX', ARGV[4], 'NX') then return {'ok', raw} end
return {'dropped'}
`;

type Gate =
  | { status: "other" | "unknown" | "stale" | "dropped" }
  | { status: "phase" | "ok"; state: TransferState };

async function gate(redis: Redis, jobId: string, userId: string, body: TransferProgress): Promise<Gate> {
  const reply = (await redis.eval(
    GATE,
    [keys.owner(jobId), keys.transfer(jobId), keys.transferGate(jobId)],
    [userId, String(body.attempt), body.phase, String(transferProgressEveryMs)],
  )) as unknown[];
  const status = String(reply[0]);
  if (status !== "ok" && status !== "phase")
    return { status: status as "other" | "unknown" | "stale" | "dropped" };
  const raw = reply[1];
  const state = (typeof raw === "string" ? JSON.parse(raw) : raw) as TransferState;
  return { status, state };
}

function fileStateOf(size: number, downloaded: number, uploaded: number): FileState {
  if (uploaded >= size && size > 0) return "uploaded";
  if (uploaded > 0) return "uploading";
  if (downloaded >= size) return "downloaded";
  return downloaded > 0 ? "downloading" : "pending";
}

/** The tab's numbers as the event a worker would write (sizes and states from the transfer state). */
function eventOf(jobId: string, state: TransferState, body: TransferProgress): ProgressEvent {
  const sizes = new Map(state.sizes);
  const clamp = (n: number, max: number) => Math.min(n, max);
  const downloaded = clamp(body.bytes.downloaded, state.total);
  const uploaded = clamp(body.bytes.uploaded, state.total);
  const phase = state.phase === "uploading" ? "uploading" : body.phase;
  const rate = phase === "uploading" ? body.rates.up : body.rates.down;
  const left = state.total - (phase === "uploading" ? uploaded : downloaded);
  return {
    jobId,
    attempt: body.attempt,
    phase,
    at: Date.now(),
    bytes: { total: state.total, downloaded, uploaded },
    rates: body.rates,
    etaSeconds: rate > 0 ? Math.round(left / rate) : null,
    peers: body.peers,
    files: body.files.flatMap((f) => {
      const size = sizes.get(f.index);
      if (size === undefined) return [];
      const fileDown = clamp(f.downloaded, size);
      const fileUp = clamp(f.uploaded, size);
      return [
        {
          index: f.index,
          size,
          downloaded: fileDown,
          uploaded: fileUp,
          state: fileStateOf(size, fileDown, fileUp),
        },
      ];
    }),
  };
}

/** Appends an event through the one publish script (refused if a newer attempt published). */
async function publish(redis: Redis, event: ProgressEvent): Promise<boolean> {
  const written = await redis.eval(
    progressPublishScript,
    [keys.progress(event.jobId), keys.snapshot(event.jobId)],
    [
      String(event.attempt),
      JSON.stringify(event),
      String(queue.progressMaxLen),
      String(progressRetentionSeconds),
      progressField,
    ],
  );
  return Number(written) === 1;
}

/** An event of the job's own numbers (its row's), for when a tab's hold begins or ends. */
function jobEvent(job: Job, message?: string): ProgressEvent {
  return {
    jobId: job.id,
    attempt: Math.max(1, job.attempt),
    phase: job.state,
    at: Date.now(),
    bytes: { total: job.bytesTotal, downloaded: job.bytesDownloaded, uploaded: job.bytesUploaded },
    rates: { down: 0, up: 0 },
    etaSeconds: null,
    peers: 0,
    files: [],
    ...(message ? { message } : {}),
  };
}

/** A job's last event when a tab's hold ends (paused, failed, completed, handed over): best effort. */
async function settle(c: C, job: TransitionedJob | Job, message?: string): Promise<void> {
  const redis = c.var.redis;
  try {
    const tx = redis
      .multi()
      .del(keys.transfer(job.id), keys.transferGate(job.id))
      .incr(keys.reconcileChanges);
    if ("webhookDeliveries" in job && job.webhookDeliveries > 0) tx.lpush(webhookWakeKey, "1");
    await tx.exec();
    await publish(redis, jobEvent(job, message));
  } catch (error) {
    console.warn(
      JSON.stringify({ level: "warn", msg: "transfer end not noted", jobId: job.id, error: String(error) }),
    );
  }
}

// --- Schemas and routes -----------------------------------------------------------

const tags = ["Transfer in the browser"];
const JobParams = z.object({
  id: z.uuid("must be a job id (a UUID)").openapi({ param: { name: "id", in: "path" } }),
});
const FileParams = JobParams.extend({
  index: z.coerce
    .number()
    .int()
    .min(0)
    .openapi({ param: { name: "index", in: "path" } }),
});
const PartParams = FileParams.extend({
  n: z.coerce
    .number()
    .int()
    .min(1)
    .max(10_000)
    .openapi({ param: { name: "n", in: "path" } }),
});
const json = <T extends z.ZodType>(schema: T) => ({
  required: true,
  content: { "application/json": { schema } },
});
const jsonBody = [acceptContentTypes("application/json"), parseJsonBody] as const;
// A tab asks for two calls per part: generous, so a fast link is never held back by it.
const perMinute = rateLimit("transfer", 1200, "1 m");

const common = {
  400: "The id, index, part number or body is not valid.",
  401: "Not signed in.",
  403: csrfRefused,
  404: "No such job of yours (or no such file of it).",
} as const;

const heldErrors = {
  ...common,
  409: "`stale_attempt`: another tab or the fleet holds the job now; `not_transferring`: it is not being transferred (take it again); `not_browser_job`: the fleet transfers it.",
  415: "The body is not JSON.",
  422: "The request does not fit the file (e.g. a part number outside its layout).",
} as const;

const take = createRoute({
  method: "post",
  path: "/{id}/transfer",
  tags,
  summary: "Take a job to transfer it in this browser tab",
  description:
    "For your `runner: browser` job that is queued, or being transferred (a reopened tab takes it back): a new attempt (any earlier tab's is stale from now on), the job `downloading`. Returns the source you handed in and where each file stands. Counts against your running-jobs limit like a fleet job.",
  security: signedIn,
  middleware: [requireUser, rateLimit("transfer-take", 60, "1 m")] as const,
  request: { params: JobParams },
  responses: {
    200: { description: "The plan.", content: { "application/json": { schema: TransferPlan } } },
    ...errorResponses({
      ...common,
      409: "The job is not a browser job, or not in a state a tab can take it in.",
      422: "The job's destination cannot take uploads from a browser.",
      429: "Too many takes, or as many of your jobs run as your quota allows (`quota_running_jobs`).",
    }),
  },
});

const openFile = createRoute({
  method: "post",
  path: "/{id}/transfer/files/{index}/upload",
  tags,
  summary: "Open (or reopen) a file's upload",
  description:
    "S3: a multipart upload at the file's key (its part size and the parts stored already); a zero-byte file is stored at once and needs no parts. Google Drive: a resumable session opened for this web app's origin (its URI, chunk size and the bytes Drive holds). The same upload every time after, and the one the fleet resumes.",
  security: signedIn,
  middleware: [requireUser, perMinute, ...jsonBody] as const,
  request: { params: FileParams, body: json(TransferAttempt) },
  responses: {
    200: { description: "The upload.", content: { "application/json": { schema: FileUpload } } },
    ...errorResponses({ ...heldErrors, 502: "The storage provider refused to open the upload." }),
  },
});

const partUrl = createRoute({
  method: "post",
  path: "/{id}/transfer/files/{index}/parts/{n}",
  tags,
  summary: "A presigned URL for one S3 part",
  description: `A presigned UploadPart URL for part \`n\` of the file's open upload, good for ${partUrlSeconds / 60} minutes. PUT the part's bytes to it; then record the part with its ETag.`,
  security: signedIn,
  middleware: [requireUser, perMinute, ...jsonBody] as const,
  request: { params: PartParams, body: json(TransferAttempt) },
  responses: {
    200: { description: "The URL.", content: { "application/json": { schema: PartUrl } } },
    ...errorResponses(heldErrors),
  },
});

const recordStoredPart = createRoute({
  method: "put",
  path: "/{id}/transfer/files/{index}/parts/{n}",
  tags,
  summary: "Record a stored S3 part",
  description: "The part's ETag as S3 answered the PUT, and its size (it must be the layout's).",
  security: signedIn,
  middleware: [requireUser, perMinute, ...jsonBody] as const,
  request: { params: PartParams, body: json(StoredPart) },
  responses: { 204: { description: "Recorded." }, ...errorResponses(heldErrors) },
});

const completeFile = createRoute({
  method: "post",
  path: "/{id}/transfer/files/{index}/complete",
  tags,
  summary: "Finish a file's upload",
  description:
    "S3: completes the multipart upload from the recorded parts (409 `parts_missing` names any not recorded). Google Drive: checks the file Drive answered the last chunk with (`driveFileId`: in the job's folder, under the file's name, of its size). The file is then stored.",
  security: signedIn,
  middleware: [requireUser, perMinute, ...jsonBody] as const,
  request: { params: FileParams, body: json(CompleteFile) },
  responses: {
    204: { description: "The file is stored." },
    ...errorResponses({ ...heldErrors, 502: "The storage provider refused to complete the upload." }),
  },
});

const progress = createRoute({
  method: "post",
  path: "/{id}/transfer/progress",
  tags,
  summary: "Report the tab's progress",
  description: `Written into the job's progress stream, as a worker's events are, at most once per ${transferProgressEveryMs} ms (more are dropped: \`recorded: false\`). \`phase: uploading\` moves the job from downloading to uploading.`,
  security: signedIn,
  middleware: [requireUser, ...jsonBody] as const,
  request: { params: JobParams, body: json(TransferProgress) },
  responses: {
    202: {
      description: "Taken.",
      content: { "application/json": { schema: z.object({ recorded: z.boolean() }) } },
    },
    ...errorResponses(heldErrors),
  },
});

const finish = createRoute({
  method: "post",
  path: "/{id}/transfer/finish",
  tags,
  summary: "Complete the job: every chosen file is stored",
  description:
    "The job completes as a fleet job does (webhooks and all); 409 `files_not_stored` names the files that are not.",
  security: signedIn,
  middleware: [requireUser, ...jsonBody] as const,
  request: { params: JobParams, body: json(TransferAttempt) },
  responses: {
    200: { description: "The completed job.", content: { "application/json": { schema: JobResponse } } },
    ...errorResponses(heldErrors),
  },
});

const pause = createRoute({
  method: "post",
  path: "/{id}/transfer/pause",
  tags,
  summary: "Pause: the tab is closing",
  description: `The job waits, queued, for a tab to take it again ("${pausedReason}"); what is stored stays. Works from \`navigator.sendBeacon\` with a JSON Blob.`,
  security: signedIn,
  middleware: [requireUser, ...jsonBody] as const,
  request: { params: JobParams, body: json(TransferAttempt) },
  responses: {
    200: { description: "The paused job.", content: { "application/json": { schema: JobResponse } } },
    ...errorResponses(heldErrors),
  },
});

const fail = createRoute({
  method: "post",
  path: "/{id}/transfer/fail",
  tags,
  summary: "Fail the job: the tab gave up",
  description: `The job fails with the tab's reason, prefixed "${browserFailurePrefix}". It can be retried.`,
  security: signedIn,
  middleware: [requireUser, ...jsonBody] as const,
  request: { params: JobParams, body: json(TransferFailure) },
  responses: {
    200: { description: "The failed job.", content: { "application/json": { schema: JobResponse } } },
    ...errorResponses(heldErrors),
  },
});

const toFleet = createRoute({
  method: "post",
  path: "/{id}/transfer/fleet",
  tags,
  summary: "Hand the job to the worker fleet",
  description:
    "The fleet transfers it from now on: a new attempt (any tab's is stale), queued for its turn like any job. It resumes the uploads the tab opened: stored S3 parts and Drive bytes are not sent again.",
  security: signedIn,
  middleware: [requireUser, rateLimit("transfer-take", 60, "1 m")] as const,
  request: { params: JobParams },
  responses: {
    200: {
      description: "The job, queued for the fleet.",
      content: { "application/json": { schema: JobResponse } },
    },
    ...errorResponses({ ...common, 409: "Not a browser job, or not in a state to hand over." }),
  },
});

// --- Handlers ------------------------------------------------------------------

const api = router();
registerAuthSchemes(api);

export const transferApi = api
  .openapi(take, async (c) => {
    const { id } = c.req.valid("param");
    const userId = c.var.user.id;
    const db = c.var.db();
    const config = c.var.config;
    await noteChange(c.var.redis);
    const taken = await takeForBrowser(db, { jobId: id, userId, runningLimit: config.QUOTA_RUNNING_JOBS });
    if ("refused" in taken) throw refusal(taken);
    const { job } = taken;
    const { destination } = await destinationOfJob(db, job);
    const files = await db
      .select()
      .from(jobFiles)
      .where(eq(jobFiles.jobId, id))
      .orderBy(asc(jobFiles.fileIndex));
    try {
      await c.var.redis.set(keys.owner(id), userId);
      await saveTransferState(c.var.redis, id, transferStateOf(job, files));
      // The new attempt's first event: an earlier tab's progress can no longer be shown.
      await publish(c.var.redis, jobEvent(job));
    } catch (error) {
      // Progress posts then heal the state from the database.
      console.warn(
        JSON.stringify({ level: "warn", msg: "transfer state not written", jobId: id, error: String(error) }),
      );
    }
    return c.json(await planOf(c, job, destination.kind, files), 200);
  })
  .openapi(openFile, async (c) => {
    const { id, index } = c.req.valid("param");
    const { attempt } = c.req.valid("json");
    const held = await loadHeld(c, id, attempt);
    const db = c.var.db();
    const file = await loadFile(db, id, index);
    notStoredYet(file);
    const opened = await held.transfer.open(contextOf(c, held, file), transferFile(file));
    const f = { db, jobId: id, attempt };
    await fenced(attempt, () =>
      updateFile(
        f,
        file.id,
        opened.stored
          ? {
              state: "uploaded",
              cloudId: opened.stored.cloudId,
              cloudUrl: opened.stored.cloudUrl ?? null,
              checksum: opened.stored.checksum,
              uploadSession: null,
              bytesDownloaded: file.size,
              bytesUploaded: file.size,
              error: null,
            }
          : { uploadSession: opened.session, state: "uploading" },
      ),
    );
    return c.json(opened.upload, 200);
  })
  .openapi(partUrl, async (c) => {
    const { id, index, n } = c.req.valid("param");
    const { attempt } = c.req.valid("json");
    const held = await loadHeld(c, id, attempt);
    const file = await loadFile(c.var.db(), id, index);
    notStoredYet(file);
    const upload = openUpload(file);
    const ctx = contextOf(c, held, file);
    const parts = multipart(held.transfer);
    checkPart(file, await parts.partSize(ctx, upload), n);
    const now = new Date();
    const url = await parts.url(ctx, upload, n, now);
    return c.json({ url, expiresAt: now.getTime() + partUrlSeconds * 1000 }, 200);
  })
  .openapi(recordStoredPart, async (c) => {
    const { id, index, n } = c.req.valid("param");
    const body = c.req.valid("json");
    const held = await loadHeld(c, id, body.attempt);
    const db = c.var.db();
    const file = await loadFile(db, id, index);
    notStoredYet(file);
    const upload = openUpload(file);
    const length = checkPart(
      file,
      await multipart(held.transfer).partSize(contextOf(c, held, file), upload),
      n,
    );
    if (body.size !== length) {
      throw new ApiError(
        422,
        "part_size_mismatch",
        `Part ${n} of file ${index} is ${length} bytes, not ${body.size}.`,
        {
          expected: length,
        },
      );
    }
    const etag = body.etag.replaceAll('"', "");
    await fenced(body.attempt, () =>
      recordPart({ db, jobId: id, attempt: body.attempt }, file.id, { partNumber: n, etag, size: length }),
    );
    return c.body(null, 204);
  })
  .openapi(completeFile, async (c) => {
    const { id, index } = c.req.valid("param");
    const body = c.req.valid("json");
    const held = await loadHeld(c, id, body.attempt);
    const db = c.var.db();
    const file = await loadFile(db, id, index);
    // Completing twice (an answer lost on the way) is no error.
    if (file.state === "uploaded") return c.body(null, 204);
    const stored = await held.transfer.complete(contextOf(c, held, file), openUpload(file), body.driveFileId);
    await fenced(body.attempt, () =>
      updateFile({ db, jobId: id, attempt: body.attempt }, file.id, {
        state: "uploaded",
        cloudId: stored.cloudId,
        cloudUrl: stored.cloudUrl ?? null,
        checksum: stored.checksum,
        uploadSession: null,
        bytesDownloaded: file.size,
        bytesUploaded: file.size,
        error: null,
      }),
    );
    return c.body(null, 204);
  })
  .openapi(progress, async (c) => {
    const { id } = c.req.valid("param");
    const body = c.req.valid("json");
    const userId = c.var.user.id;
    const redis = c.var.redis;
    let gated = await gate(redis, id, userId, body);
    if (gated.status === "unknown") {
      // Redis lost the state (or never had it): the database says, and the state is written back.
      await healTransferState(c, id, body.attempt);
      gated = await gate(redis, id, userId, body);
    }
    if (gated.status === "dropped") return c.json({ recorded: false }, 202);
    if (gated.status !== "ok" && gated.status !== "phase") {
      throw gated.status === "stale" ? staleAttempt(body.attempt) : jobNotFound();
    }
    let state = gated.state;
    if (gated.status === "phase") state = await startUploading(c, id, body.attempt, state);
    return c.json({ recorded: await publish(redis, eventOf(id, state, body)) }, 202);
  })
  .openapi(finish, async (c) => {
    const { id } = c.req.valid("param");
    const { attempt } = c.req.valid("json");
    const held = await loadHeld(c, id, attempt);
    const db = c.var.db();
    const files = await db
      .select()
      .from(jobFiles)
      .where(eq(jobFiles.jobId, id))
      .orderBy(asc(jobFiles.fileIndex));
    const missing = files.filter((f) => f.selected && !(f.state === "uploaded" && f.cloudId));
    if (missing.length > 0) {
      throw new ApiError(
        409,
        "files_not_stored",
        `${missing.length} file${missing.length === 1 ? " is" : "s are"} not stored yet: ${missing
          .slice(0, 5)
          .map((f) => f.path)
          .join(", ")}${missing.length > 5 ? ", …" : ""}.`,
        { files: missing.slice(0, 100).map((f) => ({ index: f.fileIndex, path: f.path, state: f.state })) },
      );
    }
    await noteChange(c.var.redis);
    const total = held.job.bytesTotal;
    const counters = { bytesDownloaded: total, bytesUploaded: total };
    if (held.job.state === "downloading") await move(c, id, attempt, "uploading", undefined, counters);
    const done = await move(c, id, attempt, "completed", undefined, counters);
    await settle(c, done);
    await admitAndEnqueue(db, c.var.redis, c.var.user.id, c.var.config.QUOTA_RUNNING_JOBS);
    return c.json({ job: await loadJob(db, c.var.user.id, id, c.var.config) }, 200);
  })
  .openapi(pause, async (c) => {
    const { id } = c.req.valid("param");
    const { attempt } = c.req.valid("json");
    await loadHeld(c, id, attempt);
    await noteChange(c.var.redis);
    // No longer running: its slot is free for the user's next job until a tab takes it again.
    const paused = await move(c, id, attempt, "queued", pausedReason, { admittedAt: null, claimedAt: null });
    await settle(c, paused, pausedReason);
    const db = c.var.db();
    await admitAndEnqueue(db, c.var.redis, c.var.user.id, c.var.config.QUOTA_RUNNING_JOBS);
    return c.json({ job: await loadJob(db, c.var.user.id, id, c.var.config) }, 200);
  })
  .openapi(fail, async (c) => {
    const { id } = c.req.valid("param");
    const body = c.req.valid("json");
    await loadHeld(c, id, body.attempt);
    await noteChange(c.var.redis);
    const reason = `${browserFailurePrefix}${body.reason}`;
    const failed = await move(c, id, body.attempt, "failed", reason);
    await settle(c, failed, reason);
    const db = c.var.db();
    await admitAndEnqueue(db, c.var.redis, c.var.user.id, c.var.config.QUOTA_RUNNING_JOBS);
    return c.json({ job: await loadJob(db, c.var.user.id, id, c.var.config) }, 200);
  })
  .openapi(toFleet, async (c) => {
    const { id } = c.req.valid("param");
    const userId = c.var.user.id;
    const db = c.var.db();
    await noteChange(c.var.redis);
    const handed = await handToFleet(db, id, userId);
    if ("refused" in handed) throw refusal(handed);
    await settle(c, handed.job);
    // In line like any queued job: into the stream when it is the user's turn.
    await forJob(id, () => admitAndEnqueue(db, c.var.redis, userId, c.var.config.QUOTA_RUNNING_JOBS));
    return c.json({ job: await loadJob(db, userId, id, c.var.config) }, 200);
  });

// --- Helpers of the handlers ------------------------------------------------------

/** The destination's multipart calls; 422 for a destination without parts (Drive takes chunks). */
function multipart(
  transfer: BrowserTransfer<DestinationKind>,
): NonNullable<BrowserTransfer<DestinationKind>["parts"]> {
  if (!transfer.parts) {
    throw new ApiError(422, "no_parts", "This destination takes its upload through a session, not in parts.");
  }
  return transfer.parts;
}

/** The length of part `n` of the file; 422 for a part outside its layout. */
function checkPart(file: JobFile, partSize: number, n: number): number {
  const length = file.size === 0 ? 0 : partLength(file.size, partSize, n);
  if (length === 0) {
    const count = file.size === 0 ? 0 : Math.ceil(file.size / partSize);
    throw new ApiError(
      422,
      "part_out_of_range",
      `File ${file.fileIndex} has ${count} part${count === 1 ? "" : "s"} of ${partSize} bytes; there is no part ${n}.`,
      { parts: count, partSize },
    );
  }
  return length;
}

/** A fenced move of the tab's attempt, cause `browser`; 409 when the attempt is stale or the job moved on. */
async function move(
  c: C,
  jobId: string,
  attempt: number,
  to: JobState,
  reason?: string,
  set?: Parameters<typeof transitionJob>[1]["set"],
): Promise<TransitionedJob> {
  const job = await transitionJob(c.var.db(), {
    jobId,
    to,
    cause: "browser",
    reason,
    attempt,
    userId: c.var.user.id,
    from: ["downloading", "uploading"],
    set,
  });
  if (!job) throw staleAttempt(attempt);
  return job;
}

/** downloading → uploading, recorded as a move, then the state in Redis says so. */
async function startUploading(
  c: C,
  jobId: string,
  attempt: number,
  state: TransferState,
): Promise<TransferState> {
  const moved = await transitionJob(c.var.db(), {
    jobId,
    to: "uploading",
    from: ["downloading"],
    cause: "browser",
    attempt,
    userId: c.var.user.id,
  });
  if (!moved) {
    // Another request moved it meanwhile, or the attempt is stale: the database says which.
    await healTransferState(c, jobId, attempt);
  }
  const next: TransferState = { ...state, phase: "uploading" };
  await saveTransferState(c.var.redis, jobId, next);
  return next;
}

/** Writes the transfer state back from the database, or answers why the tab holds nothing. */
async function healTransferState(c: C, jobId: string, attempt: number): Promise<void> {
  const db = c.var.db();
  const [job] = await db
    .select()
    .from(jobs)
    .where(and(eq(jobs.id, jobId), eq(jobs.userId, c.var.user.id)));
  if (!job) throw jobNotFound();
  if (job.runner !== "browser") throw notBrowser();
  if (job.attempt !== attempt) throw staleAttempt(attempt);
  if (job.state !== "downloading" && job.state !== "uploading") {
    throw new ApiError(409, "not_transferring", `The job is ${job.state}: take it again to transfer it.`, {
      state: job.state,
    });
  }
  const files = await db.select().from(jobFiles).where(eq(jobFiles.jobId, jobId));
  await c.var.redis.set(keys.owner(jobId), c.var.user.id);
  await saveTransferState(c.var.redis, jobId, transferStateOf(job, files));
}

/** The plan a tab works from: the owner's own source, decrypted, and where each file stands. */
async function planOf(c: C, job: Job, kind: DestinationKind, files: JobFile[]): Promise<TransferPlan> {
  const sealed = sealedSourceOf(job);
  if (!sealed) {
    throw new ApiError(
      409,
      "source_unreadable",
      "The job's source is not encrypted yet; its operator must migrate.",
    );
  }
  const source = await decryptJobSource(c.var.config.CREDENTIALS_KEYS, sealed, job.id);
  return {
    attempt: job.attempt,
    destination: kind as TransferPlan["destination"],
    source:
      source.kind === "torrent"
        ? { kind: "torrent", torrentFile: base64(source.torrent) }
        : {
            kind: "magnet",
            magnet: source.magnet,
            infoDictionary: job.infoDictionary ? base64(job.infoDictionary) : null,
          },
    files: files.map((f) => ({
      index: f.fileIndex,
      path: f.path,
      size: f.size,
      selected: f.selected,
      state: f.state,
    })),
  };
}

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000)
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}
