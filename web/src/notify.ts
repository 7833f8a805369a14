// Telling a person that a job ended while they looked elsewhere: the tab's
// title says so until they come back to it, and, if they allowed it, the
// system shows a notification.
import type { JobState } from "@torreclou/contracts";
import { createSignal } from "solid-js";

const baseTitle = "TorreClou";
const endings: Partial<Record<JobState, string>> = {
  completed: "✓ Done",
  failed: "✗ Failed",
  cancelled: "Cancelled",
};

type Permission = NotificationPermission | "unsupported";

function currentPermission(): Permission {
  return typeof Notification === "undefined" ? "unsupported" : Notification.permission;
}

const [permission, setPermission] = createSignal<Permission>(currentPermission());

export { permission as notificationPermission };

/** Asks for permission to show system notifications (only from a click: browsers require a gesture). */
export async function askForNotifications(): Promise<void> {
  if (typeof Notification === "undefined") return;
  setPermission(await Notification.requestPermission());
}

let resetArmed = false;

function armTitleReset(): void {
  if (resetArmed) return;
  resetArmed = true;
  const reset = () => {
    if (document.visibilityState !== "visible") return;
    document.title = baseTitle;
    resetArmed = false;
    window.removeEventListener("focus", reset);
    document.removeEventListener("visibilitychange", reset);
    window.removeEventListener("pointerdown", reset);
    window.removeEventListener("keydown", reset);
  };
  // Back in the tab and doing something there: the news has been seen.
  window.addEventListener("focus", reset);
  document.addEventListener("visibilitychange", reset);
  window.addEventListener("pointerdown", reset);
  window.addEventListener("keydown", reset);
}

const told = new Set<string>();

/** A job just ended (seen moving from running to `state`); says so once per job and ending. */
export function announceJobEnd(job: { id: string; name: string | null }, state: JobState): void {
  const ending = endings[state];
  if (!ending) return;
  const key = `${job.id}:${state}`;
  if (told.has(key)) return;
  told.add(key);
  const name = job.name ?? "A job";
  document.title = `${ending}: ${name} — ${baseTitle}`;
  armTitleReset();
  if (currentPermission() === "granted") {
    const body =
      state === "completed"
        ? "Its files are in your storage."
        : state === "failed"
          ? "It failed; open it to see why."
          : "It was cancelled.";
    try {
      new Notification(`${ending}: ${name}`, { body, tag: key });
    } catch {
      // Some browsers only allow notifications from a service worker; the title still says it.
    }
  }
}
