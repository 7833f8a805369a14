// The operator's view (accounts in the edge's OPERATOR_EMAILS): the queue,
// jobs stuck in one state, jobs that used up their attempts (with a retry),
// the workers seen, and each user's usage. The nav link shows only for
// operators; anyone else who comes here gets the edge's 404.
import { createResource, createSignal, For, type JSX, Show } from "solid-js";
import { api, call, describeError } from "../api/client.ts";
import { ErrorState, Loading } from "../components/States.tsx";
import { formatBytes, formatDate, formatDuration, formatRelative, plural } from "../format.ts";

function When(props: { at: string }) {
  return (
    <time datetime={props.at} title={formatDate(props.at)}>
      {formatRelative(props.at)}
    </time>
  );
}

function Section(props: { id: string; title: string; children: JSX.Element }) {
  return (
    <section class="card" aria-labelledby={props.id}>
      <h2 id={props.id}>{props.title}</h2>
      {props.children}
    </section>
  );
}

export function Operator() {
  const [view, { refetch }] = createResource(() => call(api.api.operator.$get()));
  const [retrying, setRetrying] = createSignal<string>();
  const [message, setMessage] = createSignal<{ ok: boolean; text: string }>();

  const retry = async (id: string, name: string) => {
    setMessage(undefined);
    setRetrying(id);
    try {
      await call(api.api.operator.jobs[":id"].retry.$post({ param: { id } }));
      setMessage({ ok: true, text: `“${name}” is queued again; it starts in its owner's turn.` });
      await refetch();
    } catch (err) {
      setMessage({ ok: false, text: describeError(err) });
    } finally {
      setRetrying(undefined);
    }
  };

  return (
    <>
      <div class="page-head">
        <div>
          <h1>Operator</h1>
          <p class="muted">The whole service: queue, stuck and exhausted jobs, workers and usage.</p>
        </div>
        <button type="button" class="button" onClick={() => void refetch()} disabled={view.loading}>
          Refresh
        </button>
      </div>
      <Show when={message()}>
        {(m) => (
          <div class={`alert ${m().ok ? "ok" : "error"}`} role={m().ok ? "status" : "alert"}>
            <p>{m().text}</p>
          </div>
        )}
      </Show>
      <Show when={view.error}>
        <ErrorState error={view.error} what="the operator's view" retry={refetch} />
      </Show>
      <Show when={view.loading && !view.latest}>
        <Loading label="Loading the operator's view" rows={4} />
      </Show>
      <Show when={view.latest}>
        {(v) => (
          <>
            <Section id="ops-queue" title="Queue">
              <p data-testid="ops-queue">
                {plural(v().queue.queued, "job")} queued ({v().queue.admitted} in the shared queue, the rest
                waiting their owner's turn).{" "}
                <Show when={v().queue.oldest} fallback="Nothing waits.">
                  {(oldest) => (
                    <>
                      The oldest has waited {formatDuration(oldest().ageSeconds)} (
                      <a href={`#job-${oldest().id}`}>
                        <code>{oldest().id.slice(0, 8)}</code>
                      </a>
                      ).
                    </>
                  )}
                </Show>
              </p>
              <Show when={v().queue.stream}>
                {(stream) => (
                  <p class="muted">
                    Jobs stream: {stream().pending} delivered to workers and not acknowledged
                    {stream().undelivered === null ? "" : `, ${stream().undelivered} not read yet`}.
                  </p>
                )}
              </Show>
            </Section>

            <Section id="ops-stuck" title="Stuck jobs">
              <p class="muted">
                Running without an update for {formatDuration(v().thresholds.stuckAfterSeconds)}, or queued
                for {formatDuration(v().thresholds.queuedTooLongSeconds)}.
              </p>
              <Show when={v().stuck.length > 0} fallback={<p>None.</p>}>
                <div class="table-wrap">
                  <table class="ops" data-testid="ops-stuck">
                    <thead>
                      <tr>
                        <th scope="col">Job</th>
                        <th scope="col">Owner</th>
                        <th scope="col">State</th>
                        <th scope="col">Attempt</th>
                        <th scope="col">Since</th>
                      </tr>
                    </thead>
                    <tbody>
                      <For each={v().stuck}>
                        {(job) => (
                          <tr id={`job-${job.id}`}>
                            <td>{job.name ?? <code>{job.id}</code>}</td>
                            <td>{job.email}</td>
                            <td>{job.state}</td>
                            <td>{job.attempt}</td>
                            <td>
                              <When at={job.since} />
                            </td>
                          </tr>
                        )}
                      </For>
                    </tbody>
                  </table>
                </div>
              </Show>
            </Section>

            <Section id="ops-exhausted" title="Jobs that used up their attempts">
              <Show when={v().exhausted.length > 0} fallback={<p>None.</p>}>
                <ul class="item-list" data-testid="ops-exhausted">
                  <For each={v().exhausted}>
                    {(job) => (
                      <li>
                        <div class="item-main">
                          <div class="item-title">{job.name ?? job.id}</div>
                          <div class="item-sub">
                            {job.email} · attempt {job.attempt} · failed <When at={job.failedAt} />
                          </div>
                          <div class="item-sub">{job.reason}</div>
                        </div>
                        <button
                          type="button"
                          class="button"
                          disabled={retrying() !== undefined}
                          onClick={() => void retry(job.id, job.name ?? job.id)}
                          aria-label={`Retry ${job.name ?? job.id}`}
                        >
                          {retrying() === job.id ? "Retrying…" : "Retry"}
                        </button>
                      </li>
                    )}
                  </For>
                </ul>
              </Show>
            </Section>

            <Section id="ops-workers" title="Workers">
              <Show when={v().workers.length > 0} fallback={<p>No worker has written a heartbeat lately.</p>}>
                <div class="table-wrap">
                  <table class="ops" data-testid="ops-workers">
                    <thead>
                      <tr>
                        <th scope="col">Worker</th>
                        <th scope="col">Host</th>
                        <th scope="col">Version</th>
                        <th scope="col">Jobs</th>
                        <th scope="col">Last heartbeat</th>
                      </tr>
                    </thead>
                    <tbody>
                      <For each={v().workers}>
                        {(worker) => (
                          <tr class={worker.seen ? undefined : "muted"}>
                            <td>
                              <code>{worker.id}</code>
                            </td>
                            <td>{worker.host}</td>
                            <td>{worker.version}</td>
                            <td>
                              {worker.jobs.length} of {worker.concurrency}
                            </td>
                            <td>
                              <When at={worker.seenAt} />
                              {worker.seen ? "" : " (not seen since)"}
                            </td>
                          </tr>
                        )}
                      </For>
                    </tbody>
                  </table>
                </div>
              </Show>
            </Section>

            <Section id="ops-users" title="Usage by user">
              <p class="muted">
                Limits: running {v().limits.runningJobs ?? "no limit"}, queued{" "}
                {v().limits.queuedJobs ?? "no limit"}, this month{" "}
                {v().limits.monthlyBytes === null ? "no limit" : formatBytes(v().limits.monthlyBytes ?? 0)}.
              </p>
              <Show when={v().users.length > 0} fallback={<p>Nobody has used anything this month.</p>}>
                <div class="table-wrap">
                  <table class="ops" data-testid="ops-users">
                    <thead>
                      <tr>
                        <th scope="col">User</th>
                        <th scope="col">Running</th>
                        <th scope="col">Queued</th>
                        <th scope="col">This month</th>
                      </tr>
                    </thead>
                    <tbody>
                      <For each={v().users}>
                        {(user) => (
                          <tr>
                            <td>{user.email}</td>
                            <td>{user.runningJobs}</td>
                            <td>{user.queuedJobs}</td>
                            <td>{formatBytes(user.monthlyBytes)}</td>
                          </tr>
                        )}
                      </For>
                    </tbody>
                  </table>
                </div>
              </Show>
            </Section>
          </>
        )}
      </Show>
    </>
  );
}
