// What the torrent's trackers say about its swarm, asked of the worker fleet
// (POST /api/torrents/health) and shown when it arrives: analysis never waits.
import { MAX_HEALTH_TRACKERS, TrackerUrl } from "@torreclou/contracts";
import { createSignal, For, Show } from "solid-js";
import { api, call, describeError } from "../api/client.ts";
import { createPoll } from "../poll.ts";

type Answer = Awaited<ReturnType<typeof ask>>;

function ask(infoHash: string, trackers: string[]) {
  return call(api.api.torrents.health.$post({ json: { infoHash, trackers } }));
}

/** A worker answers within seconds when one runs; past this the wait is said plainly. */
const PATIENCE_MS = 60_000;

export function SwarmHealth(props: { infoHash: string; trackers: string[] }) {
  const [answer, setAnswer] = createSignal<Answer>();
  const [error, setError] = createSignal<string>();
  const started = Date.now();
  const [waitedLong, setWaitedLong] = createSignal(false);
  // The fleet scrapes HTTP and UDP trackers; a browser's WebSocket trackers have no scrape.
  const trackers = () =>
    props.trackers.filter((t) => TrackerUrl.safeParse(t).success).slice(0, MAX_HEALTH_TRACKERS);
  createPoll(
    async () => {
      try {
        setAnswer(await ask(props.infoHash, trackers()));
        setError(undefined);
      } catch (err) {
        setError(describeError(err));
        throw err;
      }
      if (Date.now() - started > PATIENCE_MS) setWaitedLong(true);
    },
    {
      interval: 2000,
      hiddenInterval: 10_000,
      enabled: () => trackers().length > 0 && answer()?.state !== "done" && !waitedLong(),
    },
  );
  return (
    <Show when={trackers().length > 0}>
      <section class="swarm-health" aria-live="polite" data-testid="swarm-health">
        <Show
          when={answer()?.health}
          fallback={
            <p class="muted small">
              {error()
                ? `Swarm health unavailable: ${error()}`
                : waitedLong()
                  ? "No worker answered the swarm-health check (is a worker running?)."
                  : "Asking the trackers how many seeders there are…"}
            </p>
          }
        >
          {(health) => (
            <>
              <p
                classList={{
                  "swarm-verdict": true,
                  warn: health().seeders === 0 || health().seeders === undefined,
                }}
              >
                {health().verdict}
              </p>
              <ul class="small muted">
                <For each={health().trackers}>
                  {(t) => (
                    <li>
                      <code>{t.tracker}</code>:{" "}
                      {t.seeders !== undefined
                        ? `${t.seeders} seeders · ${t.leechers ?? 0} leechers · ${t.completed ?? 0} completed`
                        : t.error}
                    </li>
                  )}
                </For>
              </ul>
            </>
          )}
        </Show>
      </section>
    </Show>
  );
}
