// Transfers in the browser: the submitter's tab downloads a torrent with
// webtorrent's browser build (WebRTC peers, HTTP web seeds) and uploads the
// files straight into the destination. The edge never sees the bytes: it
// hands the tab an attempt (the same fencing token a worker holds), opens each
// file's upload (an S3 multipart upload or a Drive resumable session), presigns
// one S3 part at a time, and records what the tab reports, so the job page,
// the jobs list and the API look exactly as for a fleet job, and the fleet can
// take over the same uploads.
//
// The calls, all under /api/jobs/{id}/transfer and all owner-only:
//   POST /                          take the job (again): TransferPlan
//   POST /files/{index}/upload      open or reopen a file's upload: FileUpload
//   POST /files/{index}/parts/{n}   a presigned URL for one S3 part: PartUrl
//   PUT  /files/{index}/parts/{n}   record a stored S3 part: StoredPart
//   POST /files/{index}/complete    finish a file's upload: CompleteFile
//   POST /progress                  the tab's progress: TransferProgress
//   POST /finish                    every selected file stored: the job completes
//   POST /pause                     the tab is closing: the job waits (queued)
//   POST /fail                      the tab gave up: TransferFailure
//   POST /fleet                     hand the job to the fleet (no body, no attempt)
// A request naming an attempt that is no longer the job's gets 409
// `stale_attempt`: another tab (or the fleet) has the job now.
import { z } from "zod";
import { FileState } from "./jobs.ts";

/** Who moves a job's bytes: the worker fleet, or the submitter's browser tab. */
export const jobRunners = ["fleet", "browser"] as const;
export const JobRunner = z.enum(jobRunners);
export type JobRunner = z.infer<typeof JobRunner>;

/** How long a presigned part URL stays good, in seconds. */
export const partUrlSeconds = 15 * 60;

/** At most this often (ms) the edge writes a tab's progress into the job's stream. */
export const transferProgressEveryMs = 1000;

const Attempt = z.object({ attempt: z.number().int().min(1) });
const base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/);

/** What the tab needs to run the job: the source its owner handed in, and where each file stands. */
export const TransferPlan = z.object({
  attempt: z.number().int().min(1),
  /** The destination's kind; only kinds with a browser upload (s3, gdrive) can be transferred. */
  destination: z.enum(["s3", "gdrive"]),
  /**
   * The owner's own input, so a reopened tab can find the swarm again: the
   * .torrent as uploaded, or the magnet with the info dictionary once known.
   */
  source: z.discriminatedUnion("kind", [
    z.object({ kind: z.literal("torrent"), torrentFile: base64 }),
    z.object({ kind: z.literal("magnet"), magnet: z.string(), infoDictionary: base64.nullable() }),
  ]),
  files: z.array(
    z.object({
      index: z.number().int().min(0),
      path: z.string(),
      size: z.number().int().min(0),
      selected: z.boolean(),
      state: FileState,
    }),
  ),
});
export type TransferPlan = z.infer<typeof TransferPlan>;

/**
 * A file's upload, opened on first ask and the same one after (so a reopened
 * tab, or the fleet, resumes it). S3: parts of `partSize` bytes (the last one
 * shorter), with those already stored listed; Drive: a resumable session URI
 * the tab PUTs chunks to (multiples of `chunkSize`), and the bytes Drive has.
 */
export const FileUpload = z.discriminatedUnion("kind", [
  z.object({
    kind: z.literal("s3"),
    partSize: z.number().int().min(1),
    stored: z.array(
      z.object({ partNumber: z.number().int().min(1).max(10_000), size: z.number().int().min(0) }),
    ),
  }),
  z.object({
    kind: z.literal("gdrive"),
    sessionUrl: z.url(),
    chunkSize: z.number().int().min(262_144),
    offset: z.number().int().min(0),
  }),
]);
export type FileUpload = z.infer<typeof FileUpload>;

export const PartUrlRequest = Attempt;
/** A presigned UploadPart URL for one part of one upload, good until `expiresAt` (ms since the epoch). */
export const PartUrl = z.object({ url: z.url(), expiresAt: z.number().int() });
export type PartUrl = z.infer<typeof PartUrl>;

/** A part the tab stored: its ETag as S3 answered (the bucket's CORS rule must expose ETag). */
export const StoredPart = Attempt.extend({ etag: z.string().min(1).max(200), size: z.number().int().min(0) });
export type StoredPart = z.infer<typeof StoredPart>;

/** Drive: the file id the session's last chunk answered with. S3: nothing more. */
export const CompleteFile = Attempt.extend({ driveFileId: z.string().min(1).max(200).optional() });
export type CompleteFile = z.infer<typeof CompleteFile>;

export const TransferProgress = Attempt.extend({
  phase: z.enum(["downloading", "uploading"]),
  bytes: z.object({ downloaded: z.number().int().min(0), uploaded: z.number().int().min(0) }),
  rates: z.object({ down: z.number().min(0), up: z.number().min(0) }),
  peers: z.number().int().min(0),
  files: z.array(
    z.object({
      index: z.number().int().min(0),
      downloaded: z.number().int().min(0),
      uploaded: z.number().int().min(0),
    }),
  ),
});
export type TransferProgress = z.infer<typeof TransferProgress>;

export const TransferAttempt = Attempt;
export type TransferAttempt = z.infer<typeof TransferAttempt>;

/** Why the tab gave up, for the person: "No peer or web seed answered in 5 min". */
export const TransferFailure = Attempt.extend({ reason: z.string().min(1).max(500) });
export type TransferFailure = z.infer<typeof TransferFailure>;

/**
 * The bucket CORS rule a browser transfer needs (as AWS S3, R2 and MinIO
 * accept it in their JSON form): the web app may PUT parts and read their
 * ETag. Fleet jobs need no CORS.
 */
export const CorsRule = z.object({
  AllowedOrigins: z.array(z.string()),
  AllowedMethods: z.array(z.string()),
  AllowedHeaders: z.array(z.string()),
  ExposeHeaders: z.array(z.string()),
  MaxAgeSeconds: z.number().int(),
});
export type CorsRule = z.infer<typeof CorsRule>;

export function corsRuleFor(origin: string): CorsRule {
  return {
    AllowedOrigins: [origin],
    AllowedMethods: ["PUT", "GET"],
    AllowedHeaders: ["*"],
    ExposeHeaders: ["ETag"],
    MaxAgeSeconds: 3600,
  };
}

/** What the S3 storage check found about browser transfers (a CORS preflight from the web app's origin). */
export const BrowserTransferCheck = z.object({
  /** The bucket answered the preflight: a tab can send parts. */
  ready: z.boolean(),
  /** For the person: what was found, and what to do. */
  message: z.string(),
  /** The rule to add to the bucket's CORS configuration (shown whether or not it is there). */
  rule: CorsRule,
});
export type BrowserTransferCheck = z.infer<typeof BrowserTransferCheck>;
