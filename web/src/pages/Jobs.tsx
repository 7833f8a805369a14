// Your jobs, newest first: status, live progress, speeds, ETA and peers.
// Progress is polled only for jobs that are still running, in one request for
// all of them, and more slowly while the tab is hidden.
import { A, useSearchParams } from "@solidjs/router";
import type { JobState } from "@torreclou/contracts";
import { createEffect, createMemo, createResource, createSignal, For, Match, Show, Switch } from "solid-js";
import { createStore, reconcile } from "solid-js/store";
import { api, call, describeError } from "../api/client.ts";
import { Legend, ProgressBar, StatsRow } from "../components/Progress.tsx";
import { Empty, ErrorState, Loading } from "../components/States.tsx";
import { formatDate, formatRelative, plural } from "../format.ts";
import { createPoll } from "../poll.ts";
import { activeStates, isActive, jobStateLabel } from "../status.ts";

type ListPage = Awaited<ReturnType<typeof fetchPage>>;
type Job = ListPage["jobs"][number];
type Snapshots = Awaited<ReturnType<typeof fetchSnapshots>>;
type Snapshot = NonNullable<Snapshots[string]>;

const filters: { value: string; label: string }[] = [
  { value: "", label: "All" },
  { value: "active", label: "Running" },
  { value: "completed", label: "Completed" },
  { value: "failed", label: "Failed" },
  { value: "cancelled", label: "Cancelled" },
];

function fetchPage(status: string, cursor?: string) {
  return call(
    api.api.jobs.$get({
      query: {
        ...(status ? { status: status === "active" ? activeStates.join(",") : status } : {}),
        ...(cursor ? { cursor } : {}),
        limit: "25",
      },
    }),
  );
}

async function fetchSnapshots(ids: string[]) {
  const result = await call(api.api.progress.$get({ query: { ids: ids.join(",") } }));
  return result.snapshots;
}

export function Jobs() {
  const [params, setParams] = useSearchParams();
  const status = () => (typeof params.status === "string" ? params.status : "");
  const [page, { refetch, mutate }] = createResource(status, (s) => fetchPage(s));
  const [more, setMore] = createSignal(false);
  const [moreError, setMoreError] = createSignal<string>();
  const [live, setLive] = createStore<Record<string, Snapshot>>({});

  // One store keyed by job id, so a reload updates rows in place (no re-render, no lost focus).
  const [list, setList] = createStore<{ jobs: Job[] }>({ jobs: [] });
  // State changes are announced politely to screen readers (bars and numbers are not: too chatty).
  const [announcement, setAnnouncement] = createSignal("");
  let known = new Map<string, JobState>();
  createEffect(() => {
    const latest = page.latest;
    if (!latest) return;
    const changes: string[] = [];
    for (const job of latest.jobs) {
      const before = known.get(job.id);
      if (before && before !== job.state) changes.push(`${job.name}: ${jobStateLabel[job.state]}`);
    }
    known = new Map(latest.jobs.map((job) => [job.id, job.state]));
    if (changes.length > 0) setAnnouncement(changes.join(". "));
    setList("jobs", reconcile(latest.jobs, { key: "id" }));
  });
  const jobs = () => list.jobs;
  let lastReload = Date.now();
  const activeIds = createMemo(() =>
    jobs()
      .filter((job) => isActive(job.state))
      .map((job) => job.id),
  );

  createPoll(
    async () => {
      const ids = activeIds();
      if (ids.length === 0) return;
      const snapshots = await fetchSnapshots(ids);
      let changed = false;
      const next: Record<string, Snapshot> = {};
      for (const snapshot of Object.values(snapshots)) {
        if (!snapshot) continue;
        next[snapshot.jobId] = snapshot;
        const job = jobs().find((j) => j.id === snapshot.jobId);
        if (job && job.state !== snapshot.phase) changed = true;
      }
      setLive(reconcile({ ...live, ...next }));
      // A job changed state (or a while passed): reload the list so states and errors are the server's.
      if (changed || Date.now() - lastReload > 15_000) {
        lastReload = Date.now();
        await refetch();
      }
    },
    { interval: 2000, hiddenInterval: 15_000, enabled: () => activeIds().length > 0 },
  );

  const loadMore = async () => {
    const current = page.latest;
    if (!current?.nextCursor) return;
    setMore(true);
    setMoreError(undefined);
    try {
      const next = await fetchPage(status(), current.nextCursor);
      mutate({ ...next, jobs: [...current.jobs, ...next.jobs] } satisfies ListPage);
    } catch (err) {
      setMoreError(describeError(err));
    } finally {
      setMore(false);
    }
  };

  return (
    <>
      <div class="page-head">
        <div>
          <h1>Jobs</h1>
          <p class="muted">Everything you sent to TorreClou, newest first.</p>
        </div>
        <A href="/jobs/new" class="button primary">
          New job
        </A>
      </div>

      <p class="visually-hidden" role="status" aria-live="polite">
        {announcement()}
      </p>
      <fieldset class="filters">
        <legend class="visually-hidden">Show jobs</legend>
        <For each={filters}>
          {(filter) => (
            <button
              type="button"
              aria-pressed={status() === filter.value}
              onClick={() => setParams({ status: filter.value || undefined })}
            >
              {filter.label}
            </button>
          )}
        </For>
      </fieldset>

      <Switch>
        <Match when={page.error}>
          <ErrorState error={page.error} what="your jobs" retry={refetch} />
        </Match>
        <Match when={page.loading && !page.latest}>
          <Loading label="Loading jobs" />
        </Match>
        <Match when={jobs().length === 0}>
          <Empty>
            <Show
              when={status()}
              fallback={
                <>
                  <p>No jobs yet. Start one from a .torrent file or a magnet link.</p>
                  <A href="/jobs/new" class="button primary">
                    New job
                  </A>
                </>
              }
            >
              <p>No {filters.find((f) => f.value === status())?.label.toLowerCase() ?? ""} jobs.</p>
            </Show>
          </Empty>
        </Match>
        <Match when={jobs().length > 0}>
          <Legend />
          <ul class="job-list" aria-label="Jobs" style={{ "margin-top": "0.6rem" }}>
            <For each={jobs()}>
              {(job) => {
                const snap = () => live[job.id];
                const state = (): JobState => job.state;
                const running = () => isActive(state());
                const bytes = () => (running() ? (snap()?.bytes ?? job.bytes) : job.bytes);
                const total = () => bytes().total;
                const downloaded = () => bytes().downloaded;
                const uploaded = () => bytes().uploaded;
                return (
                  <li class="card job-card" data-testid="job-row" data-job-id={job.id}>
                    <A href={`/jobs/${job.id}`} class="job-name" title={job.name}>
                      {job.name}
                    </A>
                    <span class={`badge s-${state()}`} data-testid="job-status">
                      {jobStateLabel[state()]}
                    </span>
                    <ProgressBar
                      label={`Progress of ${job.name}`}
                      total={total()}
                      downloaded={downloaded()}
                      uploaded={uploaded()}
                    />
                    <StatsRow
                      total={total()}
                      downloaded={downloaded()}
                      uploaded={uploaded()}
                      down={snap()?.rates.down ?? 0}
                      up={snap()?.rates.up ?? 0}
                      etaSeconds={snap()?.etaSeconds ?? null}
                      peers={snap()?.peers ?? 0}
                      live={running()}
                    />
                    <p class="muted small" style={{ margin: 0, "grid-column": "1 / -1" }}>
                      {job.fileCount === null
                        ? "file list not known yet"
                        : `${plural(job.fileCount, "file")} in the torrent`}{" "}
                      · started{" "}
                      <time datetime={job.createdAt} title={formatDate(job.createdAt)}>
                        {formatRelative(job.createdAt)}
                      </time>
                      <Show when={state() === "failed" && job.failureReason}>
                        {" "}
                        · <span class="field-error">{job.failureReason}</span>
                      </Show>
                    </p>
                  </li>
                );
              }}
            </For>
          </ul>
          <Show when={page.latest?.nextCursor}>
            <div class="pager">
              <button type="button" class="button" onClick={loadMore} disabled={more()}>
                {more() ? "Loading…" : "Show older jobs"}
              </button>
            </div>
          </Show>
          <Show when={moreError()}>
            <p class="field-error" role="alert">
              {moreError()}
            </p>
          </Show>
        </Match>
      </Switch>
    </>
  );
}
