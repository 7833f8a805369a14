// The form that adds an S3-compatible storage profile: the server checks the
// bucket with the credentials before saving, and its refusal is shown right by
// the form with the provider's own code and message. Used on the storage page
// and, for someone with no storage yet, inline on the new-job page.
import { createSignal, Show } from "solid-js";
import { createStore } from "solid-js/store";
import { ApiError, api, call, describeError } from "../api/client.ts";

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

export interface S3ProfileFormProps {
  /** Called with the new profile once the server saved it. */
  onSaved?: (profile: { id: string; name: string }) => void;
  heading?: string;
}

export function S3ProfileForm(props: S3ProfileFormProps) {
  const [form, setForm] = createStore<FormState>({ ...emptyForm });
  const [fieldErrors, setFieldErrors] = createSignal<Record<string, string>>({});
  const [failure, setFailure] = createSignal<ProviderFailure>();
  const [formError, setFormError] = createSignal<string>();
  const [busy, setBusy] = createSignal(false);
  const [saved, setSaved] = createSignal<{
    name: string;
    warnings: string[];
    /** Set when a browser tab could not upload into the bucket: what to add to its CORS rules. */
    cors?: { message: string; rule: string } | undefined;
  }>();
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
      const browser = result.browserTransfer;
      const cors =
        browser && !browser.ready
          ? { message: browser.message, rule: JSON.stringify([browser.rule], null, 2) }
          : undefined;
      setSaved({
        name: result.profile.name,
        // The CORS advice is shown below with its rule laid out to copy.
        warnings: result.warnings.filter((w) => w !== browser?.message),
        cors,
      });
      setForm({ ...emptyForm });
      props.onSaved?.({ id: result.profile.id, name: result.profile.name });
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
    <section class="card" aria-labelledby="add-heading">
      <h2 id="add-heading">{props.heading ?? "Add an S3-compatible bucket"}</h2>
      <p class="muted small">
        AWS S3, Cloudflare R2, Backblaze B2, MinIO and others. TorreClou checks the bucket with these
        credentials (list, write and delete a small marker) before saving; the secret key is stored encrypted
        and never shown again.
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
              <Show when={s().cors}>
                {(cors) => (
                  <div data-testid="cors-advice">
                    <p>
                      Transfers in this browser need one more thing: the bucket must let this site upload
                      (CORS). Fleet jobs work without it. Add this rule to the bucket's CORS configuration:
                    </p>
                    <pre class="mono" data-testid="cors-rule">
                      {cors().rule}
                    </pre>
                  </div>
                )}
              </Show>
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
  );
}
