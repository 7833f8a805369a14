// Polling that respects the reader: one request at a time, a slower pace
// while the tab is hidden, an immediate refresh when it becomes visible
// again, and nothing at all while `enabled` is false.
import { createEffect, onCleanup } from "solid-js";

export interface PollOptions {
  /** Milliseconds between polls while the page is visible. */
  interval: number;
  /** Milliseconds between polls while the page is hidden. */
  hiddenInterval: number;
  /** Polls only while this returns true (reactive). */
  enabled: () => boolean;
}

/** The delay before the next poll; a failed poll backs off up to a minute. */
export function nextDelay(
  options: { interval: number; hiddenInterval: number },
  hidden: boolean,
  failures: number,
): number {
  const base = hidden ? options.hiddenInterval : options.interval;
  if (failures === 0) return base;
  return Math.min(60_000, base * 2 ** Math.min(failures, 6));
}

/** Runs `tick` repeatedly under the options, inside the current reactive owner. */
export function createPoll(tick: () => Promise<unknown>, options: PollOptions): void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running = false;
  let stopped = false;
  let failures = 0;

  const schedule = (delay: number) => {
    clearTimeout(timer);
    if (stopped || !options.enabled()) return;
    timer = setTimeout(run, delay);
  };

  const run = async () => {
    if (running || stopped || !options.enabled()) return;
    running = true;
    try {
      await tick();
      failures = 0;
    } catch {
      failures++;
    } finally {
      running = false;
    }
    schedule(nextDelay(options, document.hidden, failures));
  };

  const onVisibility = () => {
    if (!document.hidden) schedule(0);
  };
  document.addEventListener("visibilitychange", onVisibility);

  createEffect(() => {
    if (options.enabled()) schedule(nextDelay(options, document.hidden, failures));
    else clearTimeout(timer);
  });

  onCleanup(() => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisibility);
  });
}
