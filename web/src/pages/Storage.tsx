// Storage profiles: where finished files go. Adding an S3-compatible profile
// is checked by the server against the provider; its refusal is shown right
// by the form, with the provider's own code and message. Google Drive is
// connected with a full-page visit to Google's consent screen; the edge sends
// the browser back here with `?drive=connected` or `?drive_error=<code>`.
import { useSearchParams } from "@solidjs/router";
import { createResource, createSignal, For, Match, Show, Switch } from "solid-js";
import { api, call, describeError } from "../api/client.ts";
import { ConfirmButton } from "../components/Confirm.tsx";
import { S3ProfileForm } from "../components/S3ProfileForm.tsx";
import { Empty, ErrorState, Loading } from "../components/States.tsx";

/** What a failed Drive connection (`?drive_error=<code>` from the edge) means for the person. */
const driveErrors: Record<string, string> = {
  google_denied: "Connecting Google Drive was cancelled.",
  google_error: "Google refused to connect Drive. Please try again.",
  invalid_request: "That Google Drive link has expired or was already used. Please connect again.",
  invalid_state: "That Google Drive link has expired or was already used. Please connect again.",
  google_exchange_failed: "Google's answer could not be verified. Please connect again.",
  google_unavailable: "Google could not be reached. Please try again in a moment.",
  drive_scope_denied:
    "Google Drive access was not granted. Allow TorreClou to add files to your Drive and connect again.",
  drive_no_refresh_token:
    "Google did not grant offline access, so uploads could not run while you are away. Please connect again.",
};

export function driveErrorMessage(code: string): string {
  return driveErrors[code] ?? "Connecting Google Drive did not complete. Please try again.";
}

/** A full-page visit: the edge redirects to Google's consent screen, which comes back to this page. */
function connectDrive(): void {
  window.location.assign("/api/drive/connect");
}

const first = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value);

export function Storage() {
  const [list, { refetch, mutate }] = createResource(() => call(api.api.storage.$get()));
  const [listError, setListError] = createSignal<string>();
  const [rowErrors, setRowErrors] = createSignal<Record<string, string>>({});
  const setRowError = (id: string, message: string | undefined) =>
    setRowErrors(({ [id]: _, ...rest }) => (message ? { ...rest, [id]: message } : rest));

  // The Drive flow's answer, read once; then the query is cleaned so a reload does not repeat it.
  const [params, setParams] = useSearchParams();
  const connectedId = first(params.drive) === "connected" ? (first(params.profile) ?? "") : undefined;
  const driveErrorCode = first(params.drive_error);
  const driveError = driveErrorCode ? driveErrorMessage(driveErrorCode) : undefined;
  const [driveConnected, setDriveConnected] = createSignal(connectedId !== undefined);
  if (connectedId !== undefined || driveErrorCode) {
    setParams({ drive: undefined, profile: undefined, drive_error: undefined }, { replace: true });
  }
  const connectedEmail = () =>
    list.latest?.profiles.find((p) => p.id === connectedId)?.gdrive?.accountEmail ?? undefined;
  const makeDefault = async (id: string) => {
    setListError(undefined);
    try {
      await call(api.api.storage[":id"].default.$post({ param: { id } }));
      await refetch();
    } catch (err) {
      setListError(describeError(err));
    }
  };

  const remove = async (id: string) => {
    setListError(undefined);
    try {
      await call(api.api.storage[":id"].$delete({ param: { id } }));
      const current = list();
      if (current) mutate({ ...current, profiles: current.profiles.filter((p) => p.id !== id) });
      await refetch();
    } catch (err) {
      setListError(describeError(err));
    }
  };

  const disconnect = async (id: string) => {
    setRowError(id, undefined);
    setDriveConnected(false);
    try {
      await call(api.api.drive[":profileId"].disconnect.$post({ param: { profileId: id } }));
      const current = list();
      if (current) mutate({ ...current, profiles: current.profiles.filter((p) => p.id !== id) });
      await refetch();
    } catch (err) {
      setRowError(id, describeError(err));
    }
  };

  return (
    <>
      <div class="page-head">
        <div>
          <h1>Storage</h1>
          <p class="muted">
            Where TorreClou puts your files. New jobs go to the default unless you pick another.
          </p>
        </div>
      </div>

      <Show when={driveConnected()}>
        <div class="alert ok page-notice" role="status" data-testid="drive-connected">
          <p>
            Google Drive connected{connectedEmail() ? ` (${connectedEmail()})` : ""}. New jobs can upload to
            it.
          </p>
        </div>
      </Show>
      <Show when={driveError}>
        <div class="alert error page-notice" role="alert" data-testid="drive-error">
          <p>
            <strong>Google Drive was not connected.</strong> {driveError}
          </p>
        </div>
      </Show>

      <section class="card" aria-labelledby="profiles-heading">
        <h2 id="profiles-heading">Your destinations</h2>
        <Show when={listError()}>
          <p class="field-error" role="alert">
            {listError()}
          </p>
        </Show>
        <Switch>
          <Match when={list.error}>
            <ErrorState error={list.error} what="your storage profiles" retry={refetch} />
          </Match>
          <Match when={list.loading && !list.latest}>
            <Loading label="Loading storage profiles" rows={2} />
          </Match>
          <Match when={list.latest?.profiles.length === 0}>
            <Empty>
              <p>No storage yet. Connect Google Drive or add an S3-compatible bucket below to start a job.</p>
            </Empty>
          </Match>
          <Match when={list.latest}>
            {(data) => (
              <ul class="item-list" aria-label="Storage profiles">
                <For each={data().profiles}>
                  {(profile) => (
                    <li data-testid="storage-profile">
                      <div class="item-main">
                        <div class="item-title">
                          {profile.name}
                          <Show when={profile.isDefault}>
                            <span class="tag">Default</span>
                          </Show>
                          <Show when={profile.status === "needs_reconnect"}>
                            <span class="tag off">
                              {profile.kind === "gdrive" ? "Needs reconnect" : "Needs new credentials"}
                            </span>
                          </Show>
                        </div>
                        <div class="item-sub">
                          <Show
                            when={profile.s3}
                            fallback={
                              profile.kind === "gdrive" ? (
                                <>
                                  Google Drive
                                  <Show when={profile.gdrive?.accountEmail}>
                                    {(email) => (
                                      <>
                                        {" "}
                                        · <span class="mono">{email()}</span>
                                      </>
                                    )}
                                  </Show>
                                </>
                              ) : (
                                profile.kind
                              )
                            }
                          >
                            {(s3) => (
                              <>
                                S3 · <span class="mono">{s3().bucket}</span>
                                {s3().prefix ? <span class="mono">/{s3().prefix}</span> : null} on{" "}
                                {s3().endpoint ?? `AWS (${s3().region})`}
                                {s3().accessKeyId ? (
                                  <>
                                    {" "}
                                    · key <span class="mono">{s3().accessKeyId}</span>
                                  </>
                                ) : null}
                              </>
                            )}
                          </Show>
                        </div>
                      </div>
                      <div class="row">
                        <Show when={!profile.isDefault}>
                          <button
                            type="button"
                            class="button small"
                            onClick={() => makeDefault(profile.id)}
                            aria-label={`Make ${profile.name} the default`}
                          >
                            Make default
                          </button>
                        </Show>
                        <Show
                          when={profile.kind === "gdrive"}
                          fallback={
                            <ConfirmButton
                              label="Delete"
                              confirmLabel="Delete now"
                              subject={`storage ${profile.name}`}
                              onConfirm={() => remove(profile.id)}
                            />
                          }
                        >
                          <Show when={profile.status === "needs_reconnect"}>
                            <button
                              type="button"
                              class="button small primary"
                              onClick={connectDrive}
                              aria-label={`Reconnect ${profile.name}`}
                            >
                              Reconnect
                            </button>
                          </Show>
                          <ConfirmButton
                            label="Disconnect"
                            confirmLabel="Disconnect now"
                            subject={profile.name}
                            onConfirm={() => disconnect(profile.id)}
                          />
                        </Show>
                      </div>
                      <Show when={rowErrors()[profile.id]}>
                        <p class="field-error item-error" role="alert">
                          {rowErrors()[profile.id]}
                        </p>
                      </Show>
                    </li>
                  )}
                </For>
              </ul>
            )}
          </Match>
        </Switch>
      </section>

      <section class="card" aria-labelledby="drive-heading">
        <h2 id="drive-heading">Google Drive</h2>
        <p class="muted small">
          TorreClou asks Google only for the files it creates in your Drive, nothing else. You can disconnect
          at any time; files already uploaded stay in your Drive.
        </p>
        <div class="row">
          <button type="button" class="button primary" onClick={connectDrive}>
            Connect Google Drive
          </button>
        </div>
      </section>

      <S3ProfileForm onSaved={() => void refetch()} />
    </>
  );
}
