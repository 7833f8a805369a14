// "Transfer in this browser": the tab takes a job from the edge, downloads the
// chosen files with webtorrent's browser build (WebRTC peers, HTTP web seeds)
// and uploads them straight into the destination — S3 parts to presigned URLs,
// Drive chunks to a resumable session — while the edge records each stored
// part, so a reopened tab, or the fleet, goes on from there.
//
// Memory stays bounded whatever the torrent's size: files are read forwards a
// part (or Drive chunk) at a time; only the pieces of the next READ_AHEAD parts
// are selected; at most UPLOADS_IN_FLIGHT parts' bytes are held while they
// upload; and pieces live in a WindowStore (see store.ts) that drops them once
// their bytes are in a part.
import { type FileUpload, type TransferPlan, torrentFromInfo } from "@torreclou/contracts";
import type { Torrent, TorrentFile } from "webtorrent/dist/webtorrent.min.js";
import { type ProgressReport, StaleAttempt, type TransferEdge } from "./edge.ts";
import { browserTrackers } from "./index.ts";
import { driveChunk, type PartSlice, partsToUpload, RateMeter, type Slice, storedBytes } from "./layout.ts";
import { type ByteSource, pumpFile, type SliceReader } from "./pump.ts";
import { WindowStore } from "./store.ts";
import { browserHttp, type Http, putDriveChunk, putS3Part, UploadRefused } from "./upload.ts";

/** S3 parts uploading at once. */
export const UPLOADS_IN_FLIGHT = 2;
/** At most this often the tab reports progress (the edge keeps one a second). */
export const PROGRESS_EVERY_MS = 1000;
/** With no byte from any peer or web seed for this long while waiting for data, the job fails. */
export const STALL_MS = 5 * 60_000;

/** What the tab is doing, for its page. */
export type TransferStatus =
  | { status: "starting" }
  | { status: "running"; attempt: number }
  | { status: "finished" }
  /** Stopped by the page (closing, or the person): the job waits for a tab or the fleet. */
  | { status: "stopped" }
  /** Another tab or the fleet has the job now. */
  | { status: "taken" }
  | { status: "failed"; reason: string };

export interface TransferOptions {
  edge: TransferEdge;
  signal: AbortSignal;
  onStatus?: (status: TransferStatus) => void;
  http?: Http;
  /** This page's origin (for CORS advice in failure reasons). */
  origin?: string;
}

/** Per selected file: what was stored before this tab started, and what it stored since. */
interface FileTally {
  index: number;
  size: number;
  /** Stored by an earlier attempt (whole parts, or Drive's offset). */
  before: number;
  uploaded: number;
  torrentFile: TorrentFile;
}

function base64ToBytes(base64: string): Uint8Array {
  const binary = atob(base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** What webtorrent is handed: the .torrent, or the magnet's info dictionary wrapped with its trackers. */
export function torrentInput(source: TransferPlan["source"]): string | Uint8Array {
  if (source.kind === "torrent") return base64ToBytes(source.torrentFile);
  if (source.infoDictionary === null) return source.magnet;
  const params = new URL(source.magnet).searchParams;
  return torrentFromInfo(base64ToBytes(source.infoDictionary), {
    trackers: params.getAll("tr"),
    webSeeds: params.getAll("ws").filter((url) => /^https?:\/\//i.test(url)),
  });
}

/** Reads slices of the torrent's files through webtorrent, into the window store. */
function torrentSource(torrent: Torrent, store: () => WindowStore | undefined, watch: Watchdog): ByteSource {
  return {
    open(fileIndex, slice): SliceReader {
      const file = torrent.files[fileIndex]!;
      const length = slice.end - slice.start;
      // Creating the iterator selects the slice's pieces: the download starts now.
      const iterator =
        length > 0 ? file[Symbol.asyncIterator]({ start: slice.start, end: slice.end - 1 }) : undefined;
      return {
        async read(signal) {
          const bytes = new Uint8Array(length);
          let filled = 0;
          while (iterator && filled < length) {
            const next = await watch.waitFor(iterator.next(), signal);
            if (next.done) break;
            const chunk = next.value.subarray(0, length - filled);
            bytes.set(chunk, filled);
            filled += chunk.length;
          }
          void iterator?.return?.();
          if (filled < length) throw new Error(`the torrent gave ${filled} of ${length} bytes of a part`);
          return bytes;
        },
        cancel: () => void iterator?.return?.(),
      };
    },
    release(fileIndex, upTo) {
      const file = torrent.files[fileIndex]!;
      store()?.releaseBelow(Math.floor((file.offset + upTo) / torrent.pieceLength));
    },
  };
}

/** Fails a wait for data when no byte has come from anyone for STALL_MS. */
class Watchdog {
  private readonly now: () => number;
  private last: number;
  constructor(now: () => number) {
    this.now = now;
    this.last = now();
  }
  fed(): void {
    this.last = this.now();
  }
  async waitFor<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
    // The clock runs only while the transfer waits for data, not while it uploads.
    this.last = this.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stalled = new Promise<never>((_, reject) => {
      const check = () => {
        if (this.now() - this.last >= STALL_MS) {
          reject(
            new UploadRefused(
              "No peer or web seed sent data for 5 minutes: the torrent may have no seeder reachable from a browser (WebRTC peers or HTTP web seeds). Hand it to the fleet, or try again later.",
            ),
          );
        } else timer = setTimeout(check, 10_000);
      };
      timer = setTimeout(check, 10_000);
    });
    const aborted = new Promise<never>((_, reject) => {
      if (signal.aborted) reject(signal.reason);
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
    try {
      return await Promise.race([promise, stalled, aborted]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Adds the torrent with only the store and selections this transfer controls. */
async function addTorrent(
  plan: TransferPlan,
  signal: AbortSignal,
): Promise<{ torrent: Torrent; store: () => WindowStore | undefined; destroy: () => void }> {
  const { default: WebTorrent } = await import("webtorrent/dist/webtorrent.min.js");
  const client = new WebTorrent({ dht: false, lsd: false, utPex: false });
  let store: WindowStore | undefined;
  // webtorrent builds the store itself once it knows the piece length: keep a handle on it.
  class TransferStore extends WindowStore {
    constructor(chunkLength: number) {
      super(chunkLength);
      store = this;
    }
  }
  const input = torrentInput(plan.source);
  const torrent = client.add(input, {
    deselect: true,
    store: TransferStore,
    storeCacheSlots: 0,
    ...(typeof input === "string"
      ? { announce: browserTrackers(new URL(input).searchParams.getAll("tr")) }
      : {}),
  });
  const destroy = () => client.destroy();
  try {
    await new Promise<void>((resolve, reject) => {
      if (torrent.ready) return resolve();
      const fail = (err: Error | string) => reject(typeof err === "string" ? new Error(err) : err);
      torrent.on("ready", () => resolve());
      torrent.on("error", fail);
      client.on("error", fail);
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  } catch (err) {
    destroy();
    throw err;
  }
  return { torrent, store: () => store, destroy };
}

/** The files to move, in torrent order, checked against what webtorrent read from the same source. */
function tallies(plan: TransferPlan, torrent: Torrent): FileTally[] {
  return plan.files
    .filter((f) => f.selected)
    .sort((a, b) => a.index - b.index)
    .map((f) => {
      const torrentFile = torrent.files[f.index];
      if (!torrentFile || torrentFile.length !== f.size) {
        throw new UploadRefused("The torrent's files do not match the job's; hand the job to the fleet.");
      }
      const stored = f.state === "uploaded" ? f.size : 0;
      return { index: f.index, size: f.size, before: stored, uploaded: 0, torrentFile };
    });
}

/** Builds the progress report from the tallies and the torrent. */
function reporter(files: FileTally[], torrent: Torrent, now: () => number): () => ProgressReport {
  const down = new RateMeter();
  const up = new RateMeter();
  return () => {
    const perFile = files.map((f) => {
      const uploaded = Math.min(f.size, f.before + f.uploaded);
      const downloaded = Math.max(uploaded, Math.min(f.size, f.before + f.torrentFile.downloaded));
      return { index: f.index, downloaded, uploaded };
    });
    const downloaded = perFile.reduce((sum, f) => sum + f.downloaded, 0);
    const uploaded = perFile.reduce((sum, f) => sum + f.uploaded, 0);
    const total = files.reduce((sum, f) => sum + f.size, 0);
    const at = now();
    return {
      phase: downloaded >= total ? "uploading" : "downloading",
      bytes: { downloaded, uploaded },
      rates: { down: down.sample(at, downloaded), up: up.sample(at, uploaded) },
      peers: torrent.numPeers,
      files: perFile,
    };
  };
}

interface FileRun {
  edge: TransferEdge;
  source: ByteSource;
  tally: FileTally;
  http: Http;
  signal: AbortSignal;
  origin: string;
}

async function uploadToS3(run: FileRun, upload: Extract<FileUpload, { kind: "s3" }>): Promise<void> {
  const { edge, tally } = run;
  tally.before = storedBytes(tally.size, upload.partSize, upload.stored);
  await pumpFile<PartSlice>({
    source: run.source,
    fileIndex: tally.index,
    slices: partsToUpload(tally.size, upload.partSize, upload.stored),
    inFlight: UPLOADS_IN_FLIGHT,
    signal: run.signal,
    upload: async (part, bytes) => {
      const etag = await putS3Part({
        bytes,
        url: () => edge.partUrl(tally.index, part.partNumber),
        http: run.http,
        signal: run.signal,
        origin: run.origin,
      });
      await edge.storePart(tally.index, part.partNumber, { etag, size: bytes.length });
      tally.uploaded += bytes.length;
    },
  });
  await edge.complete(tally.index);
}

async function uploadToDrive(run: FileRun, upload: Extract<FileUpload, { kind: "gdrive" }>): Promise<void> {
  const { tally } = run;
  const session = { sessionUrl: upload.sessionUrl, size: tally.size, http: run.http, signal: run.signal };
  tally.before = upload.offset;
  let fileId: string | undefined;
  // Drive takes bytes in order, so chunks go one at a time; the next is fetched meanwhile.
  const chunks: Slice[] = [];
  for (let at = upload.offset; at < tally.size || chunks.length === 0; at += upload.chunkSize) {
    chunks.push(driveChunk(at, tally.size, upload.chunkSize));
    if (tally.size === 0) break;
  }
  await pumpFile({
    source: run.source,
    fileIndex: tally.index,
    slices: chunks,
    inFlight: 1,
    signal: run.signal,
    upload: async (chunk, bytes) => {
      const state = await putDriveChunk(session, chunk, bytes);
      if (state.done) fileId = state.fileId;
      tally.uploaded = (state.done ? tally.size : state.offset) - tally.before;
    },
  });
  if (!fileId) throw new UploadRefused("Google Drive has the whole file but did not say it was finished.");
  await run.edge.complete(tally.index, fileId);
}

/** Sends the report at most every PROGRESS_EVERY_MS, one request at a time. */
function startReporting(edge: TransferEdge, report: () => ProgressReport): { stop(): Promise<void> } {
  let sending: Promise<void> = Promise.resolve();
  const send = () => {
    sending = sending.then(() => edge.progress(report()).catch(() => {}));
  };
  const timer = setInterval(send, PROGRESS_EVERY_MS);
  return {
    async stop() {
      clearInterval(timer);
      await sending;
    },
  };
}

/**
 * Runs the job in this tab until every selected file is stored (the job then
 * completes), the signal aborts (the job is left for a pause or another
 * tab), the job is taken elsewhere, or an upload is refused (the job fails
 * with the reason). Never rejects: the outcome is the last status.
 */
export async function runTransfer(opts: TransferOptions): Promise<TransferStatus> {
  const { edge } = opts;
  const http = opts.http ?? browserHttp;
  const origin = opts.origin ?? location.origin;
  // Aborted by the page, or by the first failure, so no other part goes on after it.
  const inner = new AbortController();
  opts.signal.addEventListener("abort", () => inner.abort(opts.signal.reason), { once: true });
  const signal = inner.signal;
  const tell = (status: TransferStatus) => {
    opts.onStatus?.(status);
    return status;
  };
  tell({ status: "starting" });
  let destroy = () => {};
  let reporting: { stop(): Promise<void> } | undefined;
  try {
    const plan = await edge.take();
    tell({ status: "running", attempt: plan.attempt });
    const added = await addTorrent(plan, signal);
    destroy = added.destroy;
    const { torrent } = added;
    const watch = new Watchdog(http.now);
    torrent.on("download", () => watch.fed());
    const source = torrentSource(torrent, added.store, watch);
    const files = tallies(plan, torrent);
    const report = reporter(files, torrent, http.now);
    reporting = startReporting(edge, report);
    for (const tally of files) {
      if (tally.before === tally.size) continue;
      const upload = await edge.openUpload(tally.index);
      const run = { edge, source, tally, http, signal, origin };
      if (upload.kind === "s3") await uploadToS3(run, upload);
      else await uploadToDrive(run, upload);
    }
    await reporting.stop();
    await edge.progress(report()).catch(() => {});
    await edge.finish();
    return tell({ status: "finished" });
  } catch (err) {
    inner.abort(err);
    await reporting?.stop();
    if (opts.signal.aborted) return tell({ status: "stopped" });
    if (err instanceof StaleAttempt) return tell({ status: "taken" });
    const reason =
      err instanceof UploadRefused
        ? err.message
        : `The transfer in the browser stopped: ${err instanceof Error ? err.message : String(err)}`;
    // The failure is the tab's own: tell the edge, with an attempt the edge still knows.
    if (edge.attempt !== undefined) await edge.fail(reason).catch(() => {});
    return tell({ status: "failed", reason });
  } finally {
    destroy();
  }
}
