import { createResource, Show } from "solid-js";

interface Health {
  ok: boolean;
  postgres: { ok: boolean; latencyMs: number; error?: string };
  redis: { ok: boolean; latencyMs: number; error?: string };
}

async function fetchHealth(): Promise<Health> {
  const response = await fetch("/api/health");
  return (await response.json()) as Health;
}

export function App() {
  const [health] = createResource(fetchHealth);
  return (
    <main>
      <h1>TorreClou</h1>
      <p>Torrents into your own cloud storage.</p>
      <section aria-labelledby="status-heading">
        <h2 id="status-heading">Service status</h2>
        <Show
          when={health()}
          fallback={<p role="status">{health.error ? "The API is unreachable." : "Checking…"}</p>}
        >
          {(h) => (
            <ul>
              <li data-testid="postgres">
                Postgres:{" "}
                {h().postgres.ok ? `healthy (${h().postgres.latencyMs} ms)` : `down: ${h().postgres.error}`}
              </li>
              <li data-testid="redis">
                Redis: {h().redis.ok ? `healthy (${h().redis.latencyMs} ms)` : `down: ${h().redis.error}`}
              </li>
            </ul>
          )}
        </Show>
      </section>
    </main>
  );
}
