// The user's quotas and usage in one line (GET /api/usage), under the jobs
// list's heading: "3 of 5 running · 12 of 100 queued · 4.20 GiB of 50.0 GiB
// this month, renews 1 Dec". Says so when a quota that refuses new jobs is
// reached. Nothing shows while it loads or if it cannot be read.
import { createEffect, createResource, For, on, Show } from "solid-js";
import { api, call } from "../api/client.ts";
import { atLimit, usageParts } from "../usage.ts";

/** `version` changes when the jobs list reloads, so the numbers follow it. */
export function UsageLine(props: { version?: unknown }) {
  const [usage, { refetch }] = createResource(() => call(api.api.usage.$get()));
  createEffect(
    on(
      () => props.version,
      () => void refetch(),
      { defer: true },
    ),
  );
  return (
    <Show when={usage.latest}>
      {(view) => (
        <p class="usage-line small muted" data-testid="usage">
          <span class="visually-hidden">Your usage: </span>
          <For each={usageParts(view())}>
            {(text, i) => (
              <>
                <Show when={i() > 0}>
                  <span aria-hidden="true"> · </span>
                </Show>
                <span class="num">{text}</span>
              </>
            )}
          </For>
          <Show when={atLimit(view()).queued}>
            <span class="usage-full"> — the queue is full: new jobs wait until one of yours starts.</span>
          </Show>
          <Show when={atLimit(view()).monthly}>
            <span class="usage-full"> — this month's allowance is used up.</span>
          </Show>
        </p>
      )}
    </Show>
  );
}
