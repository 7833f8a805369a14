// Sign-in: Google, and in local mode a sign-in with any email address (the
// edge answers 404 to the dev sign-in when it is off, so the form only shows
// when the edge offers it).
import { useNavigate, useSearchParams } from "@solidjs/router";
import { createResource, createSignal, Show } from "solid-js";
import { RedirectIfSignedIn } from "../App.tsx";
import { ApiError, api, call, describeError, toApiError } from "../api/client.ts";
import { useSession } from "../session.tsx";

/** What a failed Google sign-in (`?signin_error=<code>` from the edge) means for the person. */
const googleErrors: Record<string, string> = {
  google_denied: "Google sign-in was cancelled.",
  google_error: "Google refused the sign-in. Please try again.",
  invalid_request: "That sign-in link has expired or was already used. Please start again.",
  invalid_state: "That sign-in link has expired or was already used. Please start again.",
  google_exchange_failed: "Google's answer could not be verified. Please start again.",
  invalid_id_token: "Google's answer could not be verified. Please start again.",
  google_unavailable: "Google could not be reached. Please try again in a moment.",
  email_unverified: "Verify your email address with Google first, then sign in again.",
};

export function signInErrorMessage(code: string): string {
  return googleErrors[code] ?? "Signing in with Google did not complete. Please try again.";
}

/** Is the dev sign-in on? An empty request is answered 400 when it is, 404 when it is not. */
async function devSignInAvailable(): Promise<boolean> {
  try {
    await call(
      api.api.auth.dev.$post({}, { init: { body: "{}", headers: { "content-type": "application/json" } } }),
    );
    return true;
  } catch (err) {
    return err instanceof ApiError && err.status === 400;
  }
}

function safeNext(next: string | string[] | undefined): string {
  const value = Array.isArray(next) ? next[0] : next;
  return value?.startsWith("/") && !value.startsWith("//") && !value.startsWith("/signin") ? value : "/jobs";
}

export function SignIn() {
  const session = useSession();
  const navigate = useNavigate();
  const [params] = useSearchParams();
  // Where to go after signing in, read once: the query changes as soon as we navigate.
  const next = safeNext(params.next);
  const [devAvailable] = createResource(devSignInAvailable);
  const [email, setEmail] = createSignal("");
  const [busy, setBusy] = createSignal(false);
  const [error, setError] = createSignal<string>();
  const initialError = Array.isArray(params.signin_error) ? params.signin_error[0] : params.signin_error;
  const [googleError, setGoogleError] = createSignal<string | undefined>(
    initialError ? signInErrorMessage(initialError) : undefined,
  );
  const [googleBusy, setGoogleBusy] = createSignal(false);

  const submit = async (event: SubmitEvent) => {
    event.preventDefault();
    setError(undefined);
    setBusy(true);
    try {
      await call(
        api.api.auth.dev.$post(
          {},
          {
            init: {
              body: JSON.stringify({ email: email().trim() }),
              headers: { "content-type": "application/json" },
            },
          },
        ),
      );
      await session.refresh();
      navigate(next, { replace: true });
    } catch (err) {
      setError(describeError(err));
      document.getElementById("dev-email")?.focus();
    } finally {
      setBusy(false);
    }
  };

  // Google sign-in is a full-page redirect. Ask first, so a server without
  // Google configured answers with its message here instead of a JSON page.
  const google = async () => {
    setGoogleError(undefined);
    setGoogleBusy(true);
    const url = api.api.auth.google.$url({ query: { returnTo: next } }).toString();
    try {
      const response = await fetch(url, { redirect: "manual", credentials: "same-origin" });
      if (response.type === "opaqueredirect" || (response.status >= 300 && response.status < 400)) {
        window.location.assign(url);
        return;
      }
      setGoogleError((await toApiError(response)).message);
    } catch (err) {
      setGoogleError(describeError(err));
    } finally {
      setGoogleBusy(false);
    }
  };

  return (
    <main class="page narrow signin">
      <RedirectIfSignedIn to={next} />
      <div class="signin-card card">
        <p class="brand big">
          <span class="brand-mark" aria-hidden="true">
            ⤓
          </span>
          TorreClou
        </p>
        <h1>Sign in</h1>
        <p class="muted">Torrents straight into your own cloud storage.</p>
        <button type="button" class="button google" onClick={google} disabled={googleBusy()}>
          Continue with Google
        </button>
        <Show when={googleError()}>
          <p class="field-error" role="alert">
            {googleError()}
          </p>
        </Show>
        <Show when={devAvailable()}>
          <div class="divider">
            <span>or, in local mode</span>
          </div>
          <form onSubmit={submit} class="stack" aria-describedby="dev-note">
            <div class="field">
              <label for="dev-email">Email</label>
              <input
                id="dev-email"
                name="email"
                type="email"
                autocomplete="email"
                required
                placeholder="you@example.com"
                value={email()}
                onInput={(e) => setEmail(e.currentTarget.value)}
                aria-invalid={error() ? "true" : undefined}
                aria-describedby={error() ? "dev-error" : undefined}
              />
              <Show when={error()}>
                <p id="dev-error" class="field-error" role="alert">
                  {error()}
                </p>
              </Show>
            </div>
            <button type="submit" class="button primary" disabled={busy()}>
              {busy() ? "Signing in…" : "Sign in with email"}
            </button>
            <p id="dev-note" class="muted small">
              This server runs locally: any email address signs in, no password needed.
            </p>
          </form>
        </Show>
      </div>
    </main>
  );
}
