// Storage profiles: where finished files go. Adding an S3-compatible profile
// is checked by the server against the provider; its refusal is shown right
// by the form, with the provider's own code and message. Google Drive,
// OneDrive and Dropbox are connected with a full-page visit to the provider's
// consent screen; the edge sends the browser back here with
// `?<key>=connected` or `?<key>_error=<code>` (key: drive, onedrive, dropbox).
import { useSearchParams } from "@solidjs/router";
import { createResource, createSignal, For, Match, Show, Switch } from "solid-js";
import { createStore } from "solid-js/store";
import { ApiError, api, call, describeError } from "../api/client.ts";
import { ConfirmButton } from "../components/Confirm.tsx";
import { Empty, ErrorState, Loading } from "../components/States.tsx";

type CreateBody = Parameters<typeof api.api.storage.$post>[0]["json"];

interface FormState {
  name: string;
  endpoint: string;
  region: string;
  bucket: string;
  prefix: string;
  forcePathStyle: boolean;
  accessKeyId: string;
  secretAccessKey: string;
  makeDefault: boolean;
}

const emptyForm: FormState = {
  name: "",
  endpoint: "",
  region: "us-east-1",
  bucket: "",
  prefix: "",
  forcePathStyle: false,
  accessKeyId: "",
  secretAccessKey: "",
  makeDefault: false,
};

interface ProviderFailure {
  message: string;
  step?: string;
  providerCode?: string;
  providerMessage?: string | null;
  status?: number | null;
}

type OAuthKind = "gdrive" | "onedrive" | "dropbox";

/** The destinations connected through their provider's consent screen. */
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

function providerFailure(err: ApiError): ProviderFailure {
  const details = (err.details ?? {}) as {
    step?: string;
    provider?: { code?: string; message?: string | null; status?: number | null };
  };
  return {
    message: err.message,
    step: details.step,
    providerCode: details.provider?.code,
    providerMessage: details.provider?.message,
    status: details.provider?.status,
  };
}

export function Storage() {
  const [list, { refetch, mutate }] = createResource(() => call(api.api.storage.$get()));
  const [form, setForm] = createStore<FormState>({ ...emptyForm });
  const [fieldErrors, setFieldErrors] = createSignal<Record<string, string>>({});
  const [failure, setFailure] = createSignal<ProviderFailure>();
  const [formError, setFormError] = createSignal<string>();
  const [busy, setBusy] = createSignal(false);
  const [saved, setSaved] = createSignal<{ name: string; warnings: string[] }>();
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
  let formRef: HTMLFormElement | undefined;
  let failureRef: HTMLDivElement | undefined;

  const submit = async (event: SubmitEvent) => {
    event.preventDefault();
    setFieldErrors({});
    setFailure(undefined);
    setFormError(undefined);
    setSaved(undefined);
    setBusy(true);
    const body: CreateBody = {
      kind: "s3",
      name: form.name,
      endpoint: form.endpoint.trim() === "" ? undefined : form.endpoint.trim(),
      region: form.region.trim() || "us-east-1",
      bucket: form.bucket.trim(),
      prefix: form.prefix,
      forcePathStyle: form.forcePathStyle,
      accessKeyId: form.accessKeyId.trim(),
      secretAccessKey: form.secretAccessKey,
      makeDefault: form.makeDefault,
    };
    try {
      const result = await call(api.api.storage.$post({ json: body }));
      setSaved({ name: result.profile.name, warnings: result.warnings });
      setForm({ ...emptyForm });
      void refetch();
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) {
        setFailure(providerFailure(err));
        requestAnimationFrame(() => failureRef?.focus());
      } else if (err instanceof ApiError && err.code === "invalid_request") {
        const issues = err.fieldIssues();
        setFieldErrors(issues);
        if (Object.keys(issues).length === 0) setFormError(err.message);
        const first = Object.keys(issues)[0];
        if (first)
          requestAnimationFrame(() => formRef?.querySelector<HTMLElement>(`[name="${first}"]`)?.focus());
      } else if (err instanceof ApiError && err.status === 409) {
        setFieldErrors({ name: err.message });
        requestAnimationFrame(() => formRef?.querySelector<HTMLElement>('[name="name"]')?.focus());
      } else {
        setFormError(describeError(err));
      }
    } finally {
      setBusy(false);
    }
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

  const text = (
    key: keyof FormState & string,
    label: string,
    options: {
      hint?: string;
      type?: string;
      placeholder?: string;
      required?: boolean;
      autocomplete?: string;
    } = {},
  ) => {
    const id = `s3-${key}`;
    const error = () => fieldErrors()[key];
    const described = () =>
      [options.hint ? `${id}-hint` : "", error() ? `${id}-error` : ""].filter(Boolean).join(" ");
    return (
      <div class="field">
        <label for={id}>{label}</label>
        <input
          id={id}
          name={key}
          type={options.type ?? "text"}
          required={options.required}
          placeholder={options.placeholder}
          autocomplete={options.autocomplete ?? "off"}
          spellcheck={false}
          value={form[key] as string}
          onInput={(e) => setForm(key, e.currentTarget.value as never)}
          aria-invalid={error() ? "true" : undefined}
          aria-describedby={described() || undefined}
        />
        <Show when={options.hint}>
          <p id={`${id}-hint`} class="hint">
            {options.hint}
          </p>
        </Show>
        <Show when={error()}>
          <p id={`${id}-error`} class="field-error">
            {error()}
          </p>
        </Show>
      </div>
    );
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
        <Switch>
          <Match when={list.error}>
            <ErrorState error={list.error} what="your storage profiles" retry={refetch} />
          </Match>
          <Match when={list.loading && !list.latest}>
            <Loading label="Loading storage profiles" rows={2} />
          </Match>
          <Match when={list.latest?.profiles.length === 0}>
            <Empty>
              <p>
                No storage yet. Connect Google Drive, OneDrive or Dropbox, or add an S3-compatible bucket
                below to start a job.
              </p>
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
                                    when={
                                      (profile.gdrive ?? profile.onedrive ?? profile.dropbox)?.accountEmail
                                    }
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
          </Match>
        </Switch>
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

      <section class="card" aria-labelledby="add-heading">
        <h2 id="add-heading">Add an S3-compatible bucket</h2>
        <p class="muted small">
          AWS S3, Cloudflare R2, Backblaze B2, MinIO and others. TorreClou checks the bucket with these
          credentials (list, write and delete a small marker) before saving; the secret key is stored
          encrypted and never shown again.
        </p>
        <form ref={formRef} class="stack" onSubmit={submit} aria-describedby="add-heading" novalidate>
          <div class="grid-2">
            {text("name", "Name", { required: true, placeholder: "e.g. Backups on R2" })}
            {text("endpoint", "Endpoint", {
              type: "url",
              placeholder: "https://s3.example.com",
              hint: "Leave empty for AWS S3.",
            })}
            {text("bucket", "Bucket", { required: true, placeholder: "my-bucket" })}
            {text("region", "Region", { placeholder: "us-east-1", hint: 'Use "auto" for R2.' })}
            {text("prefix", "Folder (key prefix)", {
              placeholder: "torrents/",
              hint: "Optional. Uploads go under it.",
            })}
            <div class="field" style={{ "justify-content": "center" }}>
              <label class="check">
                <input
                  type="checkbox"
                  name="forcePathStyle"
                  checked={form.forcePathStyle}
                  onChange={(e) => setForm("forcePathStyle", e.currentTarget.checked)}
                  aria-describedby="s3-forcePathStyle-hint"
                />
                Path-style URLs
              </label>
              <p id="s3-forcePathStyle-hint" class="hint">
                Needed for MinIO, most self-hosted servers and endpoints given by IP address.
              </p>
              <Show when={fieldErrors().forcePathStyle}>
                <p class="field-error">{fieldErrors().forcePathStyle}</p>
              </Show>
            </div>
            {text("accessKeyId", "Access key ID", { required: true })}
            {text("secretAccessKey", "Secret access key", {
              required: true,
              type: "password",
              autocomplete: "new-password",
            })}
          </div>
          <label class="check">
            <input
              type="checkbox"
              name="makeDefault"
              checked={form.makeDefault}
              onChange={(e) => setForm("makeDefault", e.currentTarget.checked)}
            />
            Make this the default destination
          </label>

          <Show when={failure()}>
            {(f) => (
              <div
                class="alert error"
                role="alert"
                tabindex="-1"
                ref={failureRef}
                data-testid="storage-check-error"
              >
                <p>
                  <strong>The bucket check failed.</strong> {f().message}
                </p>
                <Show
                  when={
                    (f().providerCode || f().providerMessage) &&
                    !f().message.includes(f().providerCode ?? "\u0000")
                  }
                >
                  <p class="small">
                    Provider said: <code>{f().providerCode}</code>
                    {f().providerMessage ? ` — ${f().providerMessage}` : ""}
                    {f().status ? ` (HTTP ${f().status})` : ""}
                    {f().step ? `, while trying to ${f().step}` : ""}.
                  </p>
                </Show>
              </div>
            )}
          </Show>
          <Show when={formError()}>
            <p class="field-error" role="alert">
              {formError()}
            </p>
          </Show>
          <Show when={saved()}>
            {(s) => (
              <div class="alert ok" role="status">
                <p>
                  Saved “{s().name}”. The bucket answered correctly.
                  {s().warnings.length > 0 ? ` Note: ${s().warnings.join(" ")}` : ""}
                </p>
              </div>
            )}
          </Show>
          <div class="row">
            <button type="submit" class="button primary" disabled={busy()}>
              {busy() ? "Checking the bucket…" : "Check and save"}
            </button>
          </div>
        </form>
      </section>
    </>
  );
}
