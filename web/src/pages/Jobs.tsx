// Your jobs, newest first: status, live progress, speeds, ETA and peers.
// Progress is polled only for jobs that are still running, in one request for
// all of them, and more slowly while the tab is hidden. Search by name, filter
// by state and destination (all in the URL, so a view can be bookmarked),
// select jobs for a bulk cancel, retry or delete, and keyboard shortcuts.
import { A, useNavigate, useSearchParams } from "@solidjs/router";
import type { JobState } from "@torreclou/contracts";
import {
  createEffect,
  createMemo,
  createResource,
  createSignal,
  For,
  Match,
  onCleanup,
  Show,
  Switch,
} from "solid-js";
import { createStore, reconcile } from "solid-js/store";
import { api, call, describeError } from "../api/client.ts";
import { ConfirmButton } from "../components/Confirm.tsx";
import { Legend, ProgressBar, StatsRow } from "../components/Progress.tsx";
import { Empty, ErrorState, Loading } from "../components/States.tsx";
import { UsageLine } from "../components/Usage.tsx";
import { formatDate, formatRelative, plural } from "../format.ts";
import { announceJobEnd, askForNotifications, notificationPermission } from "../notify.ts";
import { createPoll } from "../poll.ts";
import { activeStates, isActive, jobStateLabel } from "../status.ts";

type ListPage = Awaited<ReturnType<typeof fetchPage>>;
type Job = ListPage["jobs"][number];
type Snapshots = Awaited<ReturnType<typeof fetchSnapshots>>;
type Snapshot = NonNullable<Snapshots[string]>;

const filters: { value: string; label: string }[] = [
  { value: "", label: "All" },
  { value: "active", label: "Running" },
  { value: "awaiting_selection", label: "Choose files" },
  { value: "completed", label: "Completed" },
  { value: "failed", label: "Failed" },
  { value: "cancelled", label: "Cancelled" },
];

interface ListFilter {
  status: string;
  q: string;
  storage: string;
}

type BulkAction = "cancel" | "retry" | "delete";

/** Which jobs a bulk action applies to (the others in the selection are left as they are). */
const applies: Record<BulkAction, (state: JobState) => boolean> = {
  cancel: (state) => isActive(state),
  retry: (state) => state === "failed" || state === "cancelled",
  delete: (state) => !isActive(state),
};
const bulkWords: Record<BulkAction, { label: string; done: string }> = {
  cancel: { label: "Cancel", done: "cancelled" },
  retry: { label: "Retry", done: "queued again" },
  delete: { label: "Delete", done: "deleted" },
};

function fetchPage(filter: ListFilter, cursor?: string) {
  const { status } = filter;
  return call(
    api.api.jobs.$get({
      query: {
        ...(status ? { status: status === "active" ? activeStates.join(",") : status } : {}),
        ...(filter.q ? { q: filter.q } : {}),
        ...(filter.storage ? { storage: filter.storage } : {}),
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
  const navigate = useNavigate();
  const param = (name: string) => {
    const value = params[name];
    return typeof value === "string" ? value : "";
  };
  const status = () => param("status");
  const filter = createMemo<ListFilter>(
    () => ({ status: status(), q: param("q"), storage: param("storage") }),
    { status: "", q: "", storage: "" },
    { equals: (a, b) => a.status === b.status && a.q === b.q && a.storage === b.storage },
  );
  const [page, { refetch, mutate }] = createResource(filter, (f) => fetchPage(f));
  const [profiles] = createResource(() => call(api.api.storage.$get()));
  const [search, setSearch] = createSignal(param("q"));
  const [selected, setSelected] = createSignal<ReadonlySet<string>>(new Set());
  const [bulkResult, setBulkResult] = createSignal<{ ok: boolean; text: string }>();
  const [focused, setFocused] = createSignal(-1);
  let searchRef: HTMLInputElement | undefined;
  let listRef: HTMLUListElement | undefined;
  // Typing searches after a short pause, so each keystroke is not a request.
  let searchTimer: ReturnType<typeof setTimeout> | undefined;
  const onSearch = (value: string) => {
    setSearch(value);
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => setParams({ q: value.trim() || undefined }, { replace: true }), 250);
  };
  onCleanup(() => clearTimeout(searchTimer));
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
      if (before && isActive(before) && !isActive(job.state)) announceJobEnd(job, job.state);
    }
    known = new Map(latest.jobs.map((job) => [job.id, job.state]));
    if (changes.length > 0) setAnnouncement(changes.join(". "));
    setList("jobs", reconcile(latest.jobs, { key: "id" }));
    // The selection keeps only jobs still in view.
    const ids = new Set(latest.jobs.map((job) => job.id));
    setSelected((current) => new Set([...current].filter((id) => ids.has(id))));
  });
  const jobs = () => list.jobs;
  const selectedJobs = () => jobs().filter((job) => selected().has(job.id));
  const toggle = (id: string, on: boolean) =>
    setSelected((current) => {
      const next = new Set(current);
      if (on) next.add(id);
      else next.delete(id);
      return next;
    });
  const allSelected = () => jobs().length > 0 && jobs().every((job) => selected().has(job.id));
  const countFor = (action: BulkAction) => selectedJobs().filter((job) => applies[action](job.state)).length;

  const runBulk = async (action: BulkAction) => {
    const targets = selectedJobs().filter((job) => applies[action](job.state));
    setBulkResult(undefined);
    const failures: string[] = [];
    for (const job of targets) {
      try {
        const param = { param: { id: job.id } };
        if (action === "cancel") await call(api.api.jobs[":id"].cancel.$post(param));
        if (action === "retry") await call(api.api.jobs[":id"].retry.$post(param));
        if (action === "delete") await call(api.api.jobs[":id"].$delete(param));
      } catch (err) {
        failures.push(`${job.name ?? job.id}: ${describeError(err)}`);
      }
    }
    const done = targets.length - failures.length;
    setBulkResult({
      ok: failures.length === 0,
      text: `${plural(done, "job")} ${bulkWords[action].done}.${failures.length > 0 ? ` Not done: ${failures.join("; ")}` : ""}`,
    });
    if (action === "delete") setSelected(new Set<string>());
    await refetch();
  };

  // Keyboard: "/" search, "n" new job, "j"/"k" move between jobs, "x" select, "o" or Enter open, Esc clear.
  const rows = () => [...(listRef?.querySelectorAll<HTMLElement>("[data-testid=job-row]") ?? [])];
  const moveTo = (index: number) => {
    const all = rows();
    if (all.length === 0) return;
    const next = Math.max(0, Math.min(all.length - 1, index));
    setFocused(next);
    all[next]?.querySelector<HTMLElement>(".job-name")?.focus();
  };
  const onKey = (event: KeyboardEvent) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target as HTMLElement | null;
    const typing = target?.closest("input, textarea, select, [contenteditable=true]") !== null;
    if (typing) {
      if (event.key === "Escape" && target === searchRef) searchRef?.blur();
      return;
    }
    const job = jobs()[focused()];
    switch (event.key) {
      case "/":
        event.preventDefault();
        searchRef?.focus();
        break;
      case "n":
        navigate("/jobs/new");
        break;
      case "j":
        moveTo(focused() + 1);
        break;
      case "k":
        moveTo(focused() - 1);
        break;
      case "x":
        if (job) toggle(job.id, !selected().has(job.id));
        break;
      case "o":
        if (job) navigate(`/jobs/${job.id}`);
        break;
      case "Escape":
        setSelected(new Set<string>());
        break;
      default:
        return;
    }
  };
  document.addEventListener("keydown", onKey);
  onCleanup(() => document.removeEventListener("keydown", onKey));
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
    { interval: 3000, hiddenInterval: 30_000, enabled: () => activeIds().length > 0 },
  );

  const loadMore = async () => {
    const current = page.latest;
    if (!current?.nextCursor) return;
    setMore(true);
    setMoreError(undefined);
    try {
      const next = await fetchPage(filter(), current.nextCursor);
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
          <UsageLine version={page.latest} />
        </div>
        <div class="row">
          <Show when={notificationPermission() === "default"}>
            <button type="button" class="button subtle small" onClick={() => void askForNotifications()}>
              Notify me when jobs finish
            </button>
          </Show>
          <A href="/jobs/new" class="button primary" aria-keyshortcuts="n">
            New job
          </A>
        </div>
      </div>

      <p class="visually-hidden" role="status" aria-live="polite">
        {announcement()}
      </p>
      <div class="list-tools">
        <div class="field search">
          <label for="job-search" class="visually-hidden">
            Search jobs by name
          </label>
          <input
            id="job-search"
            ref={searchRef}
            type="search"
            placeholder="Search by name  ( / )"
            autocomplete="off"
            spellcheck={false}
            aria-keyshortcuts="/"
            value={search()}
            onInput={(e) => onSearch(e.currentTarget.value)}
          />
        </div>
        <div class="field">
          <label for="job-destination" class="visually-hidden">
            Destination
          </label>
          <select
            id="job-destination"
            value={param("storage")}
            onChange={(e) => setParams({ storage: e.currentTarget.value || undefined })}
          >
            <option value="">All destinations</option>
            <For each={profiles.latest?.profiles ?? []}>{(p) => <option value={p.id}>{p.name}</option>}</For>
          </select>
        </div>
      </div>
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
              when={status() || param("q") || param("storage")}
              fallback={
                <>
                  <p>No jobs yet. Start one from a .torrent file or a magnet link.</p>
                  <A href="/jobs/new" class="button primary">
                    New job
                  </A>
                </>
              }
            >
              <p data-testid="no-jobs">
                {[
                  "No",
                  status() ? filters.find((f) => f.value === status())?.label.toLowerCase() : "",
                  "jobs",
                  param("q") ? `matching “${param("q")}”` : "",
                  param("storage") ? "going to this destination" : "",
                ]
                  .filter(Boolean)
                  .join(" ")}
                .
              </p>
            </Show>
          </Empty>
        </Match>
        <Match when={jobs().length > 0}>
          <fieldset class="bulk-bar">
            <legend class="visually-hidden">Selected jobs</legend>
            <label class="check">
              <input
                type="checkbox"
                checked={allSelected()}
                ref={(box) =>
                  createEffect(() => {
                    box.indeterminate = selected().size > 0 && !allSelected();
                  })
                }
                onChange={(e) =>
                  setSelected(new Set(e.currentTarget.checked ? jobs().map((job) => job.id) : []))
                }
              />
              Select all
            </label>
            <Show when={selected().size > 0}>
              <span class="muted small" data-testid="selected-count">
                {selected().size} selected
              </span>
              <For each={["cancel", "retry", "delete"] as const}>
                {(action) => (
                  <Show when={countFor(action) > 0}>
                    <ConfirmButton
                      label={`${bulkWords[action].label} ${countFor(action)}`}
                      confirmLabel={`${bulkWords[action].label} ${plural(countFor(action), "job")}`}
                      subject={countFor(action) === 1 ? "selected job" : "selected jobs"}
                      onConfirm={() => runBulk(action)}
                    />
                  </Show>
                )}
              </For>
            </Show>
          </fieldset>
          <Show when={bulkResult()}>
            {(result) => (
              <p class={result().ok ? "muted small" : "field-error"} role="status" data-testid="bulk-result">
                {result().text}
              </p>
            )}
          </Show>
          <Legend />
          <ul class="job-list" aria-label="Jobs" style={{ "margin-top": "0.6rem" }} ref={listRef}>
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
                  <li
                    class="card job-card"
                    classList={{ selected: selected().has(job.id) }}
                    data-testid="job-row"
                    data-job-id={job.id}
                  >
                    <span class="job-title">
                      <input
                        type="checkbox"
                        aria-label={`Select ${job.name}`}
                        checked={selected().has(job.id)}
                        onChange={(e) => toggle(job.id, e.currentTarget.checked)}
                      />
                      <A
                        href={`/jobs/${job.id}`}
                        class="job-name"
                        title={job.name}
                        onFocus={() => setFocused(jobs().findIndex((j) => j.id === job.id))}
                      >
                        {job.name}
                      </A>
                    </span>
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
                      phase={state()}
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
                      <Show when={job.runner === "browser" && running()}>
                        {" "}
                        · <span data-testid="job-runner">in this browser</span>
                      </Show>
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
          <p class="muted small shortcuts">
            Keys: <kbd>/</kbd> search · <kbd>n</kbd> new job · <kbd>j</kbd>/<kbd>k</kbd> next/previous ·{" "}
            <kbd>x</kbd> select · <kbd>o</kbd> open · <kbd>Esc</kbd> clear selection
          </p>
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
