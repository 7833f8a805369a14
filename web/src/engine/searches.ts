// Metadata searches this tab runs for magnet jobs it submitted: while the
// fleet resolves a job's magnet, the browser looks too (WebRTC peers, through
// the magnet's WebSocket trackers), and hands the info dictionary to the edge
// if it finds it first. Kept per job id for the life of the tab, so the job
// page shows the search the new-job page started. The magnet stays in this
// tab's memory only: the server never gives a job's source back.
import { type Accessor, createRoot, createSignal } from "solid-js";
import { ApiError, api, call, describeError, toBase64 } from "../api/client.ts";
import { findMetadata } from "./index.ts";

export type SearchState =
  | { status: "searching"; since: number; peers: number; trackers: readonly string[] }
  | { status: "sending" }
  /** Handed in: the job waits for its files to be chosen. */
  | { status: "sent" }
  /** The fleet had it first, or the job moved on: nothing to do. */
  | { status: "not_needed" }
  | { status: "failed"; message: string };

interface Search {
  state: Accessor<SearchState>;
  stop(): void;
}

/** A search gives up after this long (the fleet keeps looking on its own). */
export const SEARCH_LIMIT_MS = 30 * 60_000;

const searches = new Map<string, Search>();

/** The search this tab runs for `jobId`, if any. */
export function metadataSearch(jobId: string): Search | undefined {
  return searches.get(jobId);
}

/**
 * Starts looking for a magnet job's metadata in this browser (once per job).
 * `trackers` are the magnet's WebSocket trackers, shown while it looks.
 */
export function startMetadataSearch(jobId: string, magnet: string, trackers: readonly string[]): void {
  if (searches.has(jobId)) return;
  const controller = new AbortController();
  let stopped = false;
  const limit = setTimeout(() => controller.abort(), SEARCH_LIMIT_MS);
  createRoot(() => {
    const [state, setState] = createSignal<SearchState>({
      status: "searching",
      since: Date.now(),
      peers: 0,
      trackers: trackers.map((t) => new URL(t).host),
    });
    searches.set(jobId, {
      state,
      stop: () => {
        stopped = true;
        controller.abort();
      },
    });
    void (async () => {
      try {
        const info = await findMetadata(magnet, {
          signal: controller.signal,
          onPeers: (peers) => setState((s) => (s.status === "searching" ? { ...s, peers } : s)),
        });
        setState({ status: "sending" });
        await call(
          api.api.jobs[":id"].metadata.$post({
            param: { id: jobId },
            json: { infoDictionary: toBase64(info) },
          }),
        );
        setState({ status: "sent" });
      } catch (err) {
        if (stopped || (err instanceof ApiError && err.code === "metadata_not_needed")) {
          setState({ status: "not_needed" });
        } else if (controller.signal.aborted) {
          setState({
            status: "failed",
            message:
              "No peer reachable from this browser had the metadata in 30 minutes; the fleet keeps looking.",
          });
        } else {
          setState({ status: "failed", message: describeError(err) });
        }
      } finally {
        clearTimeout(limit);
      }
    })();
  });
}
