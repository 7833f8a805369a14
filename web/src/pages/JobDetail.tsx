// One job: overall progress with speeds, ETA and peers; every file with its
// state, bytes and a link to the stored object; the transitions timeline;
// cancel and retry. Progress comes from the job's progress stream with a
// cursor, polled only while the job runs.
import { A, useLocation, useNavigate, useParams } from "@solidjs/router";
import {
  createEffect,
  createMemo,
  createResource,
  createSignal,
  For,
  Match,
  on,
  onCleanup,
  Show,
  Switch,
} from "solid-js";
import { createStore, reconcile } from "solid-js/store";
import { ApiError, api, call, describeError } from "../api/client.ts";
import { ChooseFiles } from "../components/ChooseFiles.tsx";
import { ConfirmButton } from "../components/Confirm.tsx";
import {
  FileNumbers,
  Legend,
  PathText,
  ProgressBar,
  phaseProgress,
  StatsRow,
} from "../components/Progress.tsx";
import { ErrorState, Loading } from "../components/States.tsx";
import { handToFleet } from "../engine/edge.ts";
import { metadataSearch } from "../engine/searches.ts";
import { browserTransfer, startTransfer, transferring } from "../engine/transfers.ts";
import { formatBytes, formatDate, formatRelative } from "../format.ts";
import { announceJobEnd } from "../notify.ts";
import { createPoll } from "../poll.ts";
import {
  browserSearchText,
  browserTransferText,
  fileLabel,
  isActive,
  jobStateLabel,
  laterState,
  resolvingText,
  seedingText,
  timelineReason,
} from "../status.ts";

/** Between two progress polls of a visible page: at most 20 requests a minute. */
const POLL_MS = 3000;
/** Between two polls of a hidden page: longer than a poll marks the job watched. */
const HIDDEN_POLL_MS = 30_000;
/** After how long without events the job row is read again. */
const ROW_RELOAD_MS = 60_000;

function fetchJob(id: string) {
  return call(api.api.jobs[":id"].$get({ param: { id } }));
}

type JobBody = Awaited<ReturnType<typeof fetchJob>>;
type ProgressBody = Awaited<ReturnType<typeof fetchProgress>>;
type Event = ProgressBody["events"][number]["event"];
type FileProgress = Event["files"][number];

function fetchProgress(id: string, after: string | undefined) {
  return call(api.api.jobs[":id"].progress.$get({ param: { id }, query: after ? { after } : {} }));
}

export function JobDetail() {
  const params = useParams();
  const navigate = useNavigate();
  const location = useLocation<{ started?: boolean }>();
  const [data, { refetch }] = createResource(() => params.id ?? "", fetchJob);
  const [profiles] = createResource(() => call(api.api.storage.$get()));
  const [latest, setLatest] = createSignal<Event | null>(null);
  const [fileLive, setFileLive] = createStore<Record<number, FileProgress>>({});
  const [actionError, setActionError] = createSignal<string>();
  const [acting, setActing] = createSignal(false);
  let cursor: string | undefined;
  /** The newest attempt seen: events of an older one (a worker that lost the job) are ignored. */
  let attempt = 0;
  /** When an event or the job row last told this page something. */
  let lastNews = Date.now();
  let seenPhase: string | undefined;

  // An errored resource throws when read: ask for the error first.
  const job = () => (data.error ? undefined : data.latest?.job);
  /** The job row says it is still going: keep polling until the row itself ends. */
  const rowActive = () => {
    const s = job()?.state;
    return s !== undefined && isActive(s);
  };
  /** The worker has reported the end, though the row may lag a moment behind. */
  const streamEnded = () => {
    const phase = latest()?.phase;
    return phase !== undefined && !isActive(phase);
  };
  const running = () => rowActive() && !streamEnded();
  /** Seeding back after completion: the worker's latest word, else the job view's. */
  const seeding = () => latest()?.seeding ?? job()?.seeding ?? null;
  /** A completed job that asked to seed and has not stopped: its numbers still move. */
  const seedingLive = () => job()?.state === "completed" && job()?.seed != null && !seeding()?.ended;
  /** Waiting for this person to pick files: nothing moves until they do. */
  const choosing = () => job()?.state === "awaiting_selection";
  /** A clock for the time shown while metadata is sought. */
  const [now, setNow] = createSignal(Date.now());
  const clock = setInterval(() => setNow(Date.now()), 1000);
  onCleanup(() => clearInterval(clock));
  /** Since when the job seeks metadata: the worker's note, else the row's move to resolving. */
  const resolvingSince = () => {
    const live = latest()?.resolving?.since;
    if (live !== undefined) return live;
    const moved = job()?.transitions.findLast((t) => t.to === "resolving");
    return moved ? Date.parse(moved.at) : Date.now();
  };
  /**
   * What the badge says and the timeline ends with: the job row, or the
   * worker's stream where it has already moved further in the same attempt.
   */
  const state = () => {
    const row = job();
    if (!row) return undefined;
    const live = latest();
    if (!rowActive() || !live || live.attempt < row.attempt) return row.state;
    return laterState(row.state, live.phase);
  };
  const timeline = () => {
    const row = job();
    if (!row) return [];
    const shown = state();
    const last = row.transitions[row.transitions.length - 1];
    if (!shown || last?.to === shown) return row.transitions;
    // The worker reported a phase the row has not recorded yet: show it, so badge and timeline agree.
    const at = new Date(latest()?.at ?? Date.now()).toISOString();
    return [...row.transitions, { to: shown, cause: "worker", reason: null, at }];
  };

  /** This tab's own search for the metadata (started when it submitted the magnet), while it matters. */
  const browserSearch = () => {
    const search = params.id ? metadataSearch(params.id) : undefined;
    const shown = search?.state();
    return shown && shown.status !== "sent" && shown.status !== "not_needed" ? shown : undefined;
  };
  createEffect(
    on(
      () => [job()?.state, params.id ? metadataSearch(params.id)?.state().status : undefined] as const,
      ([row, status]) => {
        const search = params.id ? metadataSearch(params.id) : undefined;
        // Handed in: read the job again (it now waits for a choice of files).
        if (status === "sent" && row !== "awaiting_selection") void refetch();
        // The fleet found it first, or the job ended: the browser stops looking.
        else if (status === "searching" && row !== undefined && row !== "queued" && row !== "resolving")
          search?.stop();
      },
    ),
  );

  /** The submitter's browser moves this job's bytes, not the fleet. */
  const browserJob = () => job()?.runner === "browser";
  const transfer = () => (params.id ? browserTransfer(params.id) : undefined);
  const transferStatus = () => transfer()?.status();
  /** This tab is transferring the job right now. */
  const here = () => transferring(transferStatus());
  const transferText = () => {
    const row = job();
    return row && browserJob() ? browserTransferText(transferStatus(), row.state) : undefined;
  };
  // This tab's transfer ended (or took the job): the row has moved, read it again.
  createEffect(
    on(
      () => transferStatus()?.status,
      (status) => {
        if (status !== undefined && status !== "starting") void refetch();
      },
      { defer: true },
    ),
  );

  // Seen running, now ended: tell the person (tab title, notification).
  createEffect(
    on(
      () => {
        const row = job();
        return row ? { id: row.id, state: row.state } : undefined;
      },
      (now, before) => {
        const row = job();
        if (!row || !now || isActive(now.state)) return;
        // Running when last seen, or just started from this tab (it may finish before the first look).
        const wasRunning = before
          ? before.id === now.id && isActive(before.state)
          : location.state?.started === true;
        if (wasRunning) announceJobEnd(row, now.state);
      },
    ),
  );

  // A new job id (navigation between jobs): start the stream over.
  createEffect(
    on(
      () => params.id,
      () => {
        cursor = undefined;
        attempt = 0;
        seenPhase = undefined;
        setLatest(null);
        setFileLive(reconcile({}));
      },
    ),
  );

  createPoll(
    async () => {
      const id = params.id ?? "";
      let last: Event | null = null;
      // Catch up in a few rounds when the stream holds more than one page.
      for (let round = 0; round < 5; round++) {
        const body = await fetchProgress(id, cursor);
        if (id !== params.id) return;
        cursor = body.cursor || cursor;
        for (const { event } of body.events) {
          if (event.attempt < attempt) continue;
          attempt = event.attempt;
          for (const file of event.files) setFileLive(file.index, file);
          last = event;
        }
        if (!last && body.snapshot && body.snapshot.attempt >= attempt) last = body.snapshot;
        if (!body.more) break;
      }
      if (last) setLatest(last);
      // The worker reached a terminal phase, or moved on: the job row has the final word.
      // Also re-read the row after a minute without events: a queued job has none yet, and a
      // cancel from elsewhere may land without one. A running job's events make that moot.
      const moved = last !== null && last.phase !== seenPhase;
      if (last) {
        seenPhase = last.phase;
        lastNews = Date.now();
      }
      if (moved || streamEnded() || Date.now() - lastNews > ROW_RELOAD_MS) {
        lastNews = Date.now();
        await refetch();
      }
    },
    // A worker publishes at most every 2 s while the page watches (each poll marks the job
    // watched for 10 s), so a faster poll would only find nothing new. Hidden, the page polls
    // less often than the mark lasts: the worker slows down to its idle cadence.
    {
      interval: POLL_MS,
      hiddenInterval: HIDDEN_POLL_MS,
      enabled: () => (rowActive() && !choosing()) || seedingLive(),
    },
  );

  const files = createMemo(() => job()?.files ?? []);
  const selectedFiles = createMemo(() => files().filter((f) => f.selected));
  // While the job runs the stream is freshest; once it ends the job row is the truth.
  const bytes = () => (rowActive() ? (latest()?.bytes ?? job()?.bytes) : job()?.bytes);
  const total = () => bytes()?.total ?? 0;
  const downloaded = () => bytes()?.downloaded ?? 0;
  const uploaded = () => bytes()?.uploaded ?? 0;
  /** The headline: how far the phase the job is in has come, and of what. */
  const headline = () =>
    phaseProgress(state() ?? "queued", { total: total(), downloaded: downloaded(), uploaded: uploaded() });
  const destination = () => {
    const id = job()?.storageProfileId;
    if (!id) return "—";
    return profiles.latest?.profiles.find((p) => p.id === id)?.name ?? "—";
  };

  const [choosingBusy, setChoosingBusy] = createSignal(false);
  const [chooseError, setChooseError] = createSignal<string>();
  const startSelection = async (chosen: number[], folder: string | undefined) => {
    const id = params.id ?? "";
    setChooseError(undefined);
    setChoosingBusy(true);
    try {
      await call(
        api.api.jobs[":id"].selection.$post({
          param: { id },
          json: { files: chosen, ...(folder ? { targetFolder: folder } : {}) },
        }),
      );
      // A job for this browser starts moving once its files are chosen.
      if (browserJob()) startTransfer(id);
      await refetch();
    } catch (err) {
      setChooseError(describeError(err));
      if (err instanceof ApiError && err.status === 409) await refetch();
    } finally {
      setChoosingBusy(false);
    }
  };

  const act = async (what: "cancel" | "retry" | "delete" | "fleet" | "stop-seeding") => {
    const id = params.id ?? "";
    setActionError(undefined);
    setActing(true);
    try {
      if (what === "cancel") {
        transfer()?.stop();
        await call(api.api.jobs[":id"].cancel.$post({ param: { id } }));
      }
      if (what === "fleet") await handToFleet(id);
      if (what === "stop-seeding") await call(api.api.jobs[":id"].seeding.stop.$post({ param: { id } }));
      if (what === "retry") {
        await call(api.api.jobs[":id"].retry.$post({ param: { id } }));
        cursor = undefined;
        attempt = 0;
        seenPhase = undefined;
        setLatest(null);
        setFileLive(reconcile({}));
      }
      if (what === "delete") {
        await call(api.api.jobs[":id"].$delete({ param: { id } }));
        navigate("/jobs", { replace: true });
        return;
      }
      await refetch();
    } catch (err) {
      setActionError(describeError(err));
      if (err instanceof ApiError && err.status === 409) await refetch();
    } finally {
      setActing(false);
    }
  };

  return (
    <Switch>
      <Match when={data.error}>
        <p class="crumbs">
          <A href="/jobs">← Jobs</A>
        </p>
        <h1>Job</h1>
        <Show
          when={data.error instanceof ApiError && (data.error.status === 404 || data.error.status === 400)}
          fallback={<ErrorState error={data.error} what="this job" retry={refetch} />}
        >
          <div class="alert error" role="alert" data-testid="job-not-found">
            <p>Job not found: there is no such job in your account, or it was deleted.</p>
            <p>
              <A href="/jobs">See your jobs</A> or <A href="/jobs/new">start a new one</A>.
            </p>
          </div>
        </Show>
      </Match>
      <Match when={data.loading && !data.latest}>
        <p class="crumbs">
          <A href="/jobs">← Jobs</A>
        </p>
        <h1>Job</h1>
        <Loading label="Loading the job" />
      </Match>
      <Match when={job()}>
        {(j) => (
          <>
            <div class="page-head">
              <div style={{ "min-width": 0 }}>
                <p class="crumbs">
                  <A href="/jobs">← Jobs</A>
                </p>
                <h1 style={{ "overflow-wrap": "anywhere" }}>
                  {j().name ?? "Magnet link (fetching metadata)"}
                </h1>
              </div>
              <div class="row">
                <Show when={browserJob() && here()}>
                  <button
                    type="button"
                    class="button small"
                    onClick={() => transfer()?.pause()}
                    data-testid="transfer-pause"
                  >
                    Pause
                  </button>
                </Show>
                <Show when={browserJob() && rowActive() && !choosing() && !here()}>
                  <button
                    type="button"
                    class="button small primary"
                    onClick={() => startTransfer(j().id)}
                    disabled={acting()}
                    data-testid="transfer-start"
                  >
                    {downloaded() > 0 ? "Resume in this browser" : "Transfer in this browser"}
                  </button>
                </Show>
                <Show when={browserJob() && j().state === "queued" && !here()}>
                  <button
                    type="button"
                    class="button small"
                    onClick={() => act("fleet")}
                    disabled={acting()}
                    data-testid="hand-to-fleet"
                  >
                    Hand to the fleet
                  </button>
                </Show>
                <Show when={running() || choosing()}>
                  <ConfirmButton
                    label="Cancel"
                    confirmLabel="Cancel job"
                    subject="this job"
                    disabled={acting()}
                    onConfirm={() => act("cancel")}
                  />
                </Show>
                <Show when={seedingLive() && seeding()?.source}>
                  <button
                    type="button"
                    class="button small"
                    onClick={() => act("stop-seeding")}
                    disabled={acting()}
                  >
                    Stop seeding
                  </button>
                </Show>
                <Show when={j().state === "failed" || j().state === "cancelled"}>
                  <button type="button" class="button small" onClick={() => act("retry")} disabled={acting()}>
                    Retry
                  </button>
                </Show>
                <Show when={!rowActive()}>
                  <ConfirmButton
                    label="Delete"
                    confirmLabel="Delete job"
                    subject="this job"
                    disabled={acting()}
                    onConfirm={() => act("delete")}
                  />
                </Show>
              </div>
            </div>
            <Show when={seeding()}>
              {(s) => (
                <p class="muted" data-testid="seeding" style={{ "margin-bottom": "1rem" }}>
                  {seedingText(s())}
                </p>
              )}
            </Show>
            <Show when={actionError()}>
              <div class="alert error" role="alert" style={{ "margin-bottom": "1rem" }}>
                <p>{actionError()}</p>
              </div>
            </Show>

            <div class="detail-grid">
              <div>
                <section class="card overview" aria-labelledby="progress-heading">
                  <h2 id="progress-heading" class="visually-hidden">
                    Progress
                  </h2>
                  <div class="row" style={{ "justify-content": "space-between" }}>
                    <span class="headline">
                      <Show when={!choosing()} fallback={<span class="muted">Waiting for your choice</span>}>
                        <span class="big-pct" data-testid="job-percent">
                          {headline().percent}
                        </span>{" "}
                        <span class="muted" data-testid="job-percent-of">
                          {headline().of}
                        </span>
                      </Show>
                    </span>
                    <span
                      class={`badge s-${state()}`}
                      role="status"
                      aria-live="polite"
                      data-testid="job-status"
                    >
                      {jobStateLabel[state() ?? "queued"]}
                    </span>
                  </div>
                  <Show when={running() && state() === "resolving"}>
                    <p class="muted" role="status" data-testid="job-resolving">
                      {resolvingText(
                        latest()?.peers ?? 0,
                        (now() - resolvingSince()) / 1000,
                        latest()?.resolving?.trackers,
                      )}
                    </p>
                  </Show>
                  <Show when={transferText()}>
                    {(text) => (
                      <p class="muted" role="status" data-testid="browser-transfer">
                        {text()}
                      </p>
                    )}
                  </Show>
                  <Show when={browserSearch()}>
                    {(search) => (
                      <p class="muted" role="status" data-testid="browser-search">
                        {browserSearchText(search(), now())}
                      </p>
                    )}
                  </Show>
                  <Show when={choosing()}>
                    <p class="muted" role="status" data-testid="job-choosing">
                      The file list is known: choose the files to download below.
                    </p>
                  </Show>
                  <Show when={!choosing()}>
                    <ProgressBar
                      label="Job progress"
                      total={total()}
                      downloaded={downloaded()}
                      uploaded={uploaded()}
                    />
                    <StatsRow
                      phase={state() ?? "queued"}
                      total={total()}
                      downloaded={downloaded()}
                      uploaded={uploaded()}
                      down={latest()?.rates.down ?? 0}
                      up={latest()?.rates.up ?? 0}
                      etaSeconds={latest()?.etaSeconds ?? null}
                      peers={latest()?.peers ?? 0}
                      live={running() && state() !== "resolving"}
                      showPercent={false}
                    />
                    <div style={{ "margin-top": "0.5rem" }}>
                      <Legend />
                    </div>
                  </Show>
                  <Show when={running() && latest()?.waiting}>
                    {(waiting) => (
                      <div
                        class="alert"
                        role="status"
                        style={{ "margin-top": "1rem" }}
                        data-testid="job-waiting"
                      >
                        <p>
                          <strong>Waiting for {waiting().for === "disk" ? "local disk" : "storage"}:</strong>{" "}
                          {waiting().reason} since {new Date(waiting().since).toLocaleTimeString()}. The job
                          goes on by itself once{" "}
                          {waiting().for === "disk"
                            ? "other jobs give disk space back"
                            : "the storage answers"}
                          .
                        </p>
                      </div>
                    )}
                  </Show>
                  <Show when={j().state === "failed" && j().failureReason}>
                    <div class="alert error" style={{ "margin-top": "1rem" }}>
                      <p>
                        <strong>Failed:</strong> {j().failureReason}
                      </p>
                    </div>
                  </Show>
                </section>

                <Show when={choosing()}>
                  <ChooseFiles
                    files={j().files}
                    targetFolder={j().targetFolder}
                    deadline={j().selectionDeadline}
                    busy={choosingBusy()}
                    error={chooseError()}
                    onStart={(chosen, folder) => void startSelection(chosen, folder)}
                  />
                </Show>
                <Show when={!choosing()}>
                  <section class="card" aria-labelledby="files-heading">
                    <h2 id="files-heading">Files</h2>
                    <Show
                      when={selectedFiles().length > 0}
                      fallback={
                        <p class="muted">The file list appears once the torrent's metadata is known.</p>
                      }
                    >
                      <div class="table-wrap">
                        <table class="files">
                          <thead>
                            <tr>
                              <th scope="col">File</th>
                              <th scope="col">State</th>
                              <th scope="col" class="size">
                                Size
                              </th>
                              <th scope="col">Progress</th>
                            </tr>
                          </thead>
                          <tbody>
                            <For each={selectedFiles()}>
                              {(file) => {
                                const live = () => (rowActive() ? fileLive[file.index] : undefined);
                                const fileState = () => live()?.state ?? file.state;
                                const fileUploaded = () => live()?.uploaded ?? file.bytesUploaded ?? 0;
                                const fileDownloaded = () => live()?.downloaded ?? file.bytesDownloaded ?? 0;
                                return (
                                  <tr data-testid="job-file">
                                    <td class="path">
                                      <Show when={file.cloudUrl} fallback={<PathText path={file.path} />}>
                                        {(url) => (
                                          <a
                                            href={url()}
                                            target="_blank"
                                            rel="noopener noreferrer"
                                            data-testid="file-link"
                                          >
                                            <PathText path={file.path} />
                                          </a>
                                        )}
                                      </Show>
                                    </td>
                                    <td>
                                      <span class={`badge f-${fileState()}`}>{fileLabel(fileState())}</span>
                                    </td>
                                    <td class="size num">{formatBytes(file.size)}</td>
                                    <td class="progress-cell">
                                      <ProgressBar
                                        label={`Progress of ${file.path}`}
                                        total={file.size}
                                        downloaded={fileDownloaded()}
                                        uploaded={fileUploaded()}
                                      />
                                      <FileNumbers
                                        total={file.size}
                                        downloaded={fileDownloaded()}
                                        uploaded={fileUploaded()}
                                        stored={fileState() === "uploaded"}
                                      />
                                    </td>
                                  </tr>
                                );
                              }}
                            </For>
                          </tbody>
                        </table>
                      </div>
                    </Show>
                    <Show when={files().length > selectedFiles().length}>
                      <p class="muted small" style={{ "margin-top": "0.75rem" }}>
                        {files().length - selectedFiles().length} more in the torrent, not selected.
                      </p>
                    </Show>
                  </section>
                </Show>
              </div>

              <div>
                <section class="card" aria-labelledby="about-heading">
                  <h2 id="about-heading">About</h2>
                  <dl class="facts">
                    <dt>Destination</dt>
                    <dd>{destination()}</dd>
                    <dt>Runs in</dt>
                    <dd data-testid="job-runner">{browserJob() ? "your browser" : "the worker fleet"}</dd>
                    <Show when={j().targetFolder}>
                      <dt>Folder</dt>
                      <dd class="mono">{j().targetFolder}</dd>
                    </Show>
                    <dt>Created</dt>
                    <dd>
                      <time datetime={j().createdAt}>{formatDate(j().createdAt)}</time>
                    </dd>
                    <Show when={j().finishedAt}>
                      {(at) => (
                        <>
                          <dt>Finished</dt>
                          <dd>
                            <time datetime={at()}>{formatDate(at())}</time>
                          </dd>
                        </>
                      )}
                    </Show>
                    <dt>Attempt</dt>
                    <dd class="num">{j().attempt}</dd>
                    <dt>Info hash</dt>
                    <dd class="mono small">{j().infoHash}</dd>
                  </dl>
                </section>
                <section class="card" aria-labelledby="timeline-heading">
                  <h2 id="timeline-heading">Timeline</h2>
                  <ol class="timeline" data-testid="timeline">
                    <For each={timeline()}>
                      {(t) => (
                        <li>
                          <strong>{jobStateLabel[t.to]}</strong>
                          <span class="muted small">
                            {" "}
                            by {t.cause}
                            {timelineReason(t) ? `: ${timelineReason(t)}` : ""}
                          </span>
                          <time class="when" datetime={t.at} title={formatDate(t.at)}>
                            {formatRelative(t.at)}
                          </time>
                        </li>
                      )}
                    </For>
                  </ol>
                </section>
              </div>
            </div>
          </>
        )}
      </Match>
    </Switch>
  );
}

export type { JobBody };
