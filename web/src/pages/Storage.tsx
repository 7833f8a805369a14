// Storage profiles: where finished files go. Adding an S3-compatible profile
// is checked by the server against the provider; its refusal is shown right
// by the form, with the provider's own code and message. Google Drive,
// OneDrive and Dropbox are connected with a full-page visit to the provider's
// consent screen; the edge sends the browser back here with
// `?<key>=connected` or `?<key>_error=<code>` (key: drive, onedrive, dropbox).
import { useSearchParams } from "@solidjs/router";
import { createResource, createSignal, For, Show } from "solid-js";
import { api, call, describeError } from "../api/client.ts";
import { ConfirmButton } from "../components/Confirm.tsx";
import { S3ProfileForm } from "../components/S3ProfileForm.tsx";
import { Listing } from "../components/States.tsx";

type OAuthKind = "gdrive" | "onedrive" | "dropbox";

interface OAuthProviderView {
  kind: OAuthKind;
  label: string;
  company: string;
  /** Query key the edge answers with, and the API path segment (`/api/<path>/connect`). */
  key: "drive" | "onedrive" | "dropbox";
  /** What the consent asks for, in words. */
  blurb: string;
}

export const oauthProviders: OAuthProviderView[] = [
  {
    kind: "gdrive",
    label: "Google Drive",
    company: "Google",
    key: "drive",
    blurb:
      "TorreClou asks Google only for the files it creates in your Drive, nothing else. You can disconnect at any time; files already uploaded stay in your Drive.",
  },
  {
    kind: "onedrive",
    label: "OneDrive",
    company: "Microsoft",
    key: "onedrive",
    blurb:
      "TorreClou asks Microsoft only for its own app folder in your OneDrive (Apps/TorreClou) and your account name. You can disconnect at any time; files already uploaded stay.",
  },
  {
    kind: "dropbox",
    label: "Dropbox",
    company: "Dropbox",
    key: "dropbox",
    blurb:
      "TorreClou gets only its own app folder in your Dropbox (Apps/TorreClou) and your account's email. Disconnecting revokes its access; files already uploaded stay.",
  },
];

const providerOf = (kind: string) => oauthProviders.find((p) => p.kind === kind);

/** What a failed connection (`?<key>_error=<code>` from the edge) means for the person. */
export function connectErrorMessage(provider: OAuthProviderView, code: string): string {
  const { label, company } = provider;
  if (code.endsWith("_denied") && !code.endsWith("_scope_denied"))
    return `Connecting ${label} was cancelled.`;
  if (code === "invalid_request" || code === "invalid_state")
    return `That ${label} link has expired or was already used. Please connect again.`;
  if (code.endsWith("_scope_denied"))
    return `${label} access was not granted. Allow TorreClou to add files to your ${label} and connect again.`;
  if (code.endsWith("_no_refresh_token"))
    return `${company} did not grant offline access, so uploads could not run while you are away. Please connect again.`;
  if (code.endsWith("_exchange_failed"))
    return `${company}'s answer could not be verified. Please connect again.`;
  if (code.endsWith("_unavailable")) return `${company} could not be reached. Please try again in a moment.`;
  if (code.endsWith("_error")) return `${company} refused to connect ${label}. Please try again.`;
  return `Connecting ${label} did not complete. Please try again.`;
}

/** A full-page visit: the edge redirects to the provider's consent screen, which comes back to this page. */
function connect(provider: OAuthProviderView): void {
  window.location.assign(`/api/${provider.key}/connect`);
}

const first = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value);

export function Storage() {
  const [list, { refetch, mutate }] = createResource(() => call(api.api.storage.$get()));
  const [listError, setListError] = createSignal<string>();
  const [rowErrors, setRowErrors] = createSignal<Record<string, string>>({});
  const setRowError = (id: string, message: string | undefined) =>
    setRowErrors(({ [id]: _, ...rest }) => (message ? { ...rest, [id]: message } : rest));

  // A connect flow's answer, read once; then the query is cleaned so a reload does not repeat it.
  const [params, setParams] = useSearchParams();
  const answered = oauthProviders.find(
    (p) => first(params[p.key]) === "connected" || first(params[`${p.key}_error`]),
  );
  const connectedId =
    answered && first(params[answered.key]) === "connected" ? (first(params.profile) ?? "") : undefined;
  const errorCode = answered ? first(params[`${answered.key}_error`]) : undefined;
  const connectError = answered && errorCode ? connectErrorMessage(answered, errorCode) : undefined;
  const [connected, setConnected] = createSignal(connectedId !== undefined);
  if (answered) {
    setParams(
      { [answered.key]: undefined, profile: undefined, [`${answered.key}_error`]: undefined },
      { replace: true },
    );
  }
  const connectedEmail = () => {
    const profile = list.latest?.profiles.find((p) => p.id === connectedId);
    return (profile?.gdrive ?? profile?.onedrive ?? profile?.dropbox)?.accountEmail ?? undefined;
  };

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

  const disconnect = async (id: string, kind: OAuthKind) => {
    setRowError(id, undefined);
    setConnected(false);
    const param = { param: { profileId: id } };
    try {
      if (kind === "gdrive") await call(api.api.drive[":profileId"].disconnect.$post(param));
      else if (kind === "onedrive") await call(api.api.onedrive[":profileId"].disconnect.$post(param));
      else await call(api.api.dropbox[":profileId"].disconnect.$post(param));
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

      <Show when={connected() && answered}>
        {(provider) => (
          <div class="alert ok page-notice" role="status" data-testid={`${provider().key}-connected`}>
            <p>
              {provider().label} connected{connectedEmail() ? ` (${connectedEmail()})` : ""}. New jobs can
              upload to it.
            </p>
          </div>
        )}
      </Show>
      <Show when={connectError ? answered : undefined}>
        {(provider) => (
          <div class="alert error page-notice" role="alert" data-testid={`${provider().key}-error`}>
            <p>
              <strong>{provider().label} was not connected.</strong> {connectError}
            </p>
          </div>
        )}
      </Show>

      <section class="card" aria-labelledby="profiles-heading">
        <h2 id="profiles-heading">Your destinations</h2>
        <Show when={listError()}>
          <p class="field-error" role="alert">
            {listError()}
          </p>
        </Show>
        <Listing
          items={list.latest?.profiles}
          error={list.error}
          loading={list.loading}
          what="your storage profiles"
          retry={refetch}
          empty={
            <p>
              No storage yet. Connect Google Drive, OneDrive or Dropbox, or add an S3-compatible bucket below
              to start a job.
            </p>
          }
        >
          {(profiles) => (
            <ul class="item-list" aria-label="Storage profiles">
              <For each={profiles()}>
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
                            {providerOf(profile.kind) ? "Needs reconnect" : "Needs new credentials"}
                          </span>
                        </Show>
                      </div>
                      <div class="item-sub">
                        <Show
                          when={profile.s3}
                          fallback={
                            providerOf(profile.kind) ? (
                              <>
                                {providerOf(profile.kind)!.label}
                                <Show
                                  when={(profile.gdrive ?? profile.onedrive ?? profile.dropbox)?.accountEmail}
                                >
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
                        when={providerOf(profile.kind)}
                        fallback={
                          <ConfirmButton
                            label="Delete"
                            confirmLabel="Delete now"
                            subject={`storage ${profile.name}`}
                            onConfirm={() => remove(profile.id)}
                          />
                        }
                      >
                        {(provider) => (
                          <>
                            <Show when={profile.status === "needs_reconnect"}>
                              <button
                                type="button"
                                class="button small primary"
                                onClick={() => connect(provider())}
                                aria-label={`Reconnect ${profile.name}`}
                              >
                                Reconnect
                              </button>
                            </Show>
                            <ConfirmButton
                              label="Disconnect"
                              confirmLabel="Disconnect now"
                              subject={profile.name}
                              onConfirm={() => disconnect(profile.id, provider().kind)}
                            />
                          </>
                        )}
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
        </Listing>
      </section>

      <For each={oauthProviders}>
        {(provider) => (
          <section class="card" aria-labelledby={`${provider.key}-heading`}>
            <h2 id={`${provider.key}-heading`}>{provider.label}</h2>
            <p class="muted small">{provider.blurb}</p>
            <div class="row">
              <button type="button" class="button primary" onClick={() => connect(provider)}>
                Connect {provider.label}
              </button>
            </div>
          </section>
        )}
      </For>

      <S3ProfileForm onSaved={() => void refetch()} />
    </>
  );
}
