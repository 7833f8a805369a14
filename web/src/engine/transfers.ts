// Transfers this tab runs, per job id, for the life of the tab: the new-job
// page starts one, the job page shows it (and can start one after a reload).
// While any runs, leaving the page asks first, and a page that goes away
// anyway pauses its jobs with a beacon, so they wait for a tab or the fleet
// instead of looking stuck until the edge notices.
import { type Accessor, createRoot, createSignal } from "solid-js";
import { pauseBeacon, transferEdge } from "./edge.ts";
import { runTransfer, type TransferStatus } from "./transfer.ts";

interface Transfer {
  status: Accessor<TransferStatus>;
  /** Stops the transfer and pauses the job (the page is going away, or the person asked). */
  pause(): void;
  /** Stops the transfer and leaves the job as it is (it is being cancelled). */
  stop(): void;
}

const transfers = new Map<string, Transfer>();
const [count, setCount] = createSignal(0);

/** The transfer this tab runs (or ran) for `jobId`, if any. */
export function browserTransfer(jobId: string): Transfer | undefined {
  count(); // read, so a page sees transfers started after it rendered
  return transfers.get(jobId);
}

/** Whether this tab is moving a job's bytes right now. */
export function transferring(status: TransferStatus | undefined): boolean {
  return status?.status === "starting" || status?.status === "running";
}

const anyRunning = () => [...transfers.values()].some((t) => transferring(t.status()));

function onBeforeUnload(event: BeforeUnloadEvent): void {
  if (!anyRunning()) return;
  event.preventDefault();
  // Older browsers show the prompt only when returnValue is set.
  event.returnValue = "";
}

function onPageHide(): void {
  for (const transfer of transfers.values()) if (transferring(transfer.status())) transfer.pause();
}

let listening = false;
function listen(): void {
  if (listening) return;
  listening = true;
  window.addEventListener("beforeunload", onBeforeUnload);
  window.addEventListener("pagehide", onPageHide);
}

/** Takes job `jobId` and runs it in this tab (again, if an earlier run here has ended). */
export function startTransfer(jobId: string): Transfer {
  const running = transfers.get(jobId);
  if (running && transferring(running.status())) return running;
  listen();
  const controller = new AbortController();
  const edge = transferEdge(jobId, controller.signal);
  const transfer = createRoot(() => {
    const [status, setStatus] = createSignal<TransferStatus>({ status: "starting" });
    void runTransfer({ edge, signal: controller.signal, onStatus: setStatus });
    return {
      status,
      pause() {
        if (!transferring(status())) return;
        // The beacon first: an abort may end the page's last chance to send anything.
        if (edge.attempt !== undefined) pauseBeacon(jobId, edge.attempt);
        controller.abort(new DOMException("the transfer was paused", "AbortError"));
      },
      stop() {
        controller.abort(new DOMException("the transfer was stopped", "AbortError"));
      },
    };
  });
  transfers.set(jobId, transfer);
  setCount((n) => n + 1);
  return transfer;
}
