// Webhook endpoints: register a URL to be told when jobs end (its signing
// secret is shown once), see each endpoint's deliveries with its answers, and
// send one again.
import { webhookEvents } from "@torreclou/contracts";
import { createResource, createSignal, For, Show } from "solid-js";
import { ApiError, api, call, describeError } from "../api/client.ts";
import { ConfirmButton } from "../components/Confirm.tsx";
import { Listing } from "../components/States.tsx";
import { formatDate, formatRelative } from "../format.ts";

type Created = Awaited<ReturnType<typeof createEndpoint>>;
type Endpoint = Awaited<ReturnType<typeof listEndpoints>>["endpoints"][number];
type Event = (typeof webhookEvents)[number];

const eventLabels: Record<Event, string> = {
  "job.completed": "Completed",
  "job.failed": "Failed",
  "job.cancelled": "Cancelled",
  "job.awaiting_selection": "Waiting for a file choice",
};

function createEndpoint(url: string, events: Event[]) {
  return call(api.api.webhooks.$post({ json: { url, events } }));
}
function listEndpoints() {
  return call(api.api.webhooks.$get());
}

export function Webhooks() {
  const [list, { refetch, mutate }] = createResource(listEndpoints);
  const [url, setUrl] = createSignal("");
  const [events, setEvents] = createSignal<Set<Event>>(new Set(webhookEvents));
  const [busy, setBusy] = createSignal(false);
  const [error, setError] = createSignal<string>();
  const [created, setCreated] = createSignal<Created>();
  const [listError, setListError] = createSignal<string>();

  const toggle = (event: Event, on: boolean) => {
    const next = new Set(events());
    if (on) next.add(event);
    else next.delete(event);
    setEvents(next);
  };

  const submit = async (e: SubmitEvent) => {
    e.preventDefault();
    setError(undefined);
    setBusy(true);
    try {
      setCreated(await createEndpoint(url().trim(), [...events()]));
      setUrl("");
      void refetch();
    } catch (err) {
      setError(err instanceof ApiError ? (err.fieldIssues().url ?? err.message) : describeError(err));
    } finally {
      setBusy(false);
    }
  };

  const remove = async (id: string) => {
    setListError(undefined);
    try {
      await call(api.api.webhooks[":id"].$delete({ param: { id } }));
      const current = list();
      if (current) mutate({ ...current, endpoints: current.endpoints.filter((x) => x.id !== id) });
      if (created()?.id === id) setCreated(undefined);
    } catch (err) {
      setListError(describeError(err));
    }
  };

  return (
    <>
      <div class="page-head">
        <div>
          <h1>Webhooks</h1>
          <p class="muted">
            TorreClou sends a signed POST (<a href="https://www.standardwebhooks.com/">Standard Webhooks</a>)
            to your URL when a job ends. Failed deliveries are tried again for about a day.
          </p>
        </div>
      </div>

      <section class="card" aria-labelledby="new-webhook">
        <h2 id="new-webhook">Add an endpoint</h2>
        <form class="stack" onSubmit={submit}>
          <div class="field">
            <label for="webhook-url">URL</label>
            <input
              id="webhook-url"
              type="url"
              required
              maxLength={2048}
              placeholder="https://hooks.example.com/torreclou"
              value={url()}
              onInput={(e) => setUrl(e.currentTarget.value)}
              aria-invalid={error() ? "true" : undefined}
              aria-describedby={error() ? "webhook-error" : undefined}
            />
          </div>
          <fieldset class="field">
            <legend>Tell it when a job is</legend>
            <For each={webhookEvents}>
              {(event) => (
                <label class="check">
                  <input
                    type="checkbox"
                    checked={events().has(event)}
                    onChange={(e) => toggle(event, e.currentTarget.checked)}
                  />{" "}
                  {eventLabels[event]}
                </label>
              )}
            </For>
          </fieldset>
          <div>
            <button type="submit" class="button primary" disabled={busy() || events().size === 0}>
              {busy() ? "Adding…" : "Add endpoint"}
            </button>
          </div>
        </form>
        <Show when={error()}>
          <p id="webhook-error" class="field-error" role="alert">
            {error()}
          </p>
        </Show>
        <Show when={created()}>
          {(endpoint) => (
            <div class="alert ok stack" style={{ "margin-top": "1rem" }} role="status">
              <p>
                <strong>Endpoint added.</strong> Its signing secret, to verify each delivery's{" "}
                <code>webhook-signature</code>, is shown only now:
              </p>
              <div class="secret-box">
                <code data-testid="webhook-secret">{endpoint().secret}</code>
              </div>
              <button type="button" class="linkish small" onClick={() => setCreated(undefined)}>
                I have stored it; hide it
              </button>
            </div>
          )}
        </Show>
      </section>

      <section class="card" aria-labelledby="webhook-list">
        <h2 id="webhook-list">Your endpoints</h2>
        <Show when={listError()}>
          <p class="field-error" role="alert">
            {listError()}
          </p>
        </Show>
        <Listing
          items={list.latest?.endpoints}
          error={list.error}
          loading={list.loading}
          what="your webhooks"
          retry={refetch}
          empty={<p>No webhook endpoints yet.</p>}
        >
          {(endpoints) => (
            <ul class="item-list">
              <For each={endpoints()}>
                {(endpoint) => <EndpointItem endpoint={endpoint} onRemove={() => remove(endpoint.id)} />}
              </For>
            </ul>
          )}
        </Listing>
      </section>
    </>
  );
}

function EndpointItem(props: { endpoint: Endpoint; onRemove: () => Promise<void> }) {
  const [open, setOpen] = createSignal(false);
  const [deliveries, { refetch }] = createResource(
    () => (open() ? props.endpoint.id : undefined),
    (id) => call(api.api.webhooks[":id"].deliveries.$get({ param: { id } })),
  );
  const [resendError, setResendError] = createSignal<string>();
  const resend = async (deliveryId: string) => {
    setResendError(undefined);
    try {
      await call(
        api.api.webhooks[":id"].deliveries[":deliveryId"].resend.$post({
          param: { id: props.endpoint.id, deliveryId },
        }),
      );
      void refetch();
    } catch (err) {
      setResendError(describeError(err));
    }
  };
  return (
    <li class="stack">
      <div class="row">
        <div class="item-main">
          <div class="item-title mono">{props.endpoint.url}</div>
          <div class="item-sub">
            {props.endpoint.events.map((e) => eventLabels[e as Event] ?? e).join(", ")} · added{" "}
            <time datetime={props.endpoint.createdAt} title={formatDate(props.endpoint.createdAt)}>
              {formatRelative(props.endpoint.createdAt)}
            </time>
          </div>
        </div>
        <button type="button" class="button" aria-expanded={open()} onClick={() => setOpen(!open())}>
          {open() ? "Hide deliveries" : "Deliveries"}
        </button>
        <ConfirmButton
          label="Remove"
          confirmLabel="Remove now"
          subject={`webhook ${props.endpoint.url}`}
          onConfirm={props.onRemove}
        />
      </div>
      <Show when={open()}>
        <Show when={resendError()}>
          <p class="field-error" role="alert">
            {resendError()}
          </p>
        </Show>
        <Listing
          items={deliveries.latest?.deliveries}
          error={deliveries.error}
          loading={deliveries.loading}
          what="the deliveries"
          retry={refetch}
          empty={<p>Nothing sent yet.</p>}
        >
          {(items) => (
            <div class="table-wrap">
              <table class="deliveries" data-testid="webhook-deliveries">
                <thead>
                  <tr>
                    <th>Event</th>
                    <th>State</th>
                    <th>Tries</th>
                    <th>Last answer</th>
                    <th />
                  </tr>
                </thead>
                <tbody>
                  <For each={items()}>
                    {(delivery) => (
                      <tr>
                        <td>
                          {eventLabels[delivery.event as Event] ?? delivery.event}
                          <div class="item-sub">
                            <time datetime={delivery.createdAt}>{formatRelative(delivery.createdAt)}</time>
                          </div>
                        </td>
                        <td>{delivery.state}</td>
                        <td>{delivery.attempts}</td>
                        <td class="mono">
                          {delivery.lastStatus !== null
                            ? `${delivery.lastStatus} ${delivery.lastResponse ?? ""}`
                            : (delivery.lastError ?? "—")}
                        </td>
                        <td>
                          <button type="button" class="linkish small" onClick={() => resend(delivery.id)}>
                            Send again
                          </button>
                        </td>
                      </tr>
                    )}
                  </For>
                </tbody>
              </table>
            </div>
          )}
        </Listing>
      </Show>
    </li>
  );
}
