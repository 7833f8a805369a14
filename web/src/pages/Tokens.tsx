// Personal API tokens: create one (its secret is shown once, with a copy
// button), list them, revoke them.
import { createResource, createSignal, For, Show } from "solid-js";
import { ApiError, api, call, describeError } from "../api/client.ts";
import { ConfirmButton } from "../components/Confirm.tsx";
import { Listing } from "../components/States.tsx";
import { formatDate, formatRelative } from "../format.ts";

type Created = Awaited<ReturnType<typeof createToken>>;

function createToken(name: string) {
  return call(api.api.tokens.$post({ json: { name } }));
}

export function Tokens() {
  const [list, { refetch, mutate }] = createResource(() => call(api.api.tokens.$get()));
  const [name, setName] = createSignal("");
  const [busy, setBusy] = createSignal(false);
  const [error, setError] = createSignal<string>();
  const [created, setCreated] = createSignal<Created>();
  const [copied, setCopied] = createSignal(false);
  const [listError, setListError] = createSignal<string>();
  let nameRef: HTMLInputElement | undefined;
  let tokenRef: HTMLElement | undefined;

  const submit = async (event: SubmitEvent) => {
    event.preventDefault();
    setError(undefined);
    setBusy(true);
    try {
      const token = await createToken(name().trim());
      setCreated(token);
      setCopied(false);
      setName("");
      void refetch();
      requestAnimationFrame(() => tokenRef?.focus());
    } catch (err) {
      setError(err instanceof ApiError ? (err.fieldIssues().name ?? err.message) : describeError(err));
      nameRef?.focus();
    } finally {
      setBusy(false);
    }
  };

  const copy = async () => {
    const token = created()?.token;
    if (!token) return;
    try {
      await navigator.clipboard.writeText(token);
      setCopied(true);
    } catch {
      // Clipboard refused (no permission or insecure origin): select the text instead.
      const range = document.createRange();
      if (tokenRef) range.selectNodeContents(tokenRef);
      getSelection()?.removeAllRanges();
      getSelection()?.addRange(range);
    }
  };

  const revoke = async (id: string) => {
    setListError(undefined);
    try {
      await call(api.api.tokens[":id"].$delete({ param: { id } }));
      const current = list();
      if (current) mutate({ ...current, tokens: current.tokens.filter((t) => t.id !== id) });
      if (created()?.id === id) setCreated(undefined);
    } catch (err) {
      setListError(describeError(err));
    }
  };

  return (
    <>
      <div class="page-head">
        <div>
          <h1>API tokens</h1>
          <p class="muted">
            Tokens let scripts use the API as you: send <code>Authorization: Bearer tc_…</code>.
          </p>
        </div>
      </div>

      <section class="card" aria-labelledby="new-token">
        <h2 id="new-token">Create a token</h2>
        <form class="row" onSubmit={submit} style={{ "align-items": "flex-end" }}>
          <div class="field" style={{ flex: "1 1 16rem" }}>
            <label for="token-name">Name</label>
            <input
              id="token-name"
              ref={nameRef}
              type="text"
              required
              maxLength={100}
              placeholder="e.g. backup script on my laptop"
              value={name()}
              onInput={(e) => setName(e.currentTarget.value)}
              aria-invalid={error() ? "true" : undefined}
              aria-describedby={error() ? "token-error" : undefined}
            />
          </div>
          <button type="submit" class="button primary" disabled={busy()}>
            {busy() ? "Creating…" : "Create token"}
          </button>
        </form>
        <Show when={error()}>
          <p id="token-error" class="field-error" role="alert">
            {error()}
          </p>
        </Show>
        <Show when={created()}>
          {(token) => (
            <div class="alert ok stack" style={{ "margin-top": "1rem" }} role="status">
              <p>
                <strong>Token “{token().name}” created.</strong> Copy it now: it will not be shown again.
              </p>
              <div class="secret-box">
                <code ref={tokenRef} tabindex="-1" data-testid="new-token">
                  {token().token}
                </code>
                <button type="button" class="button" onClick={copy}>
                  {copied() ? "Copied" : "Copy"}
                </button>
              </div>
              <button type="button" class="linkish small" onClick={() => setCreated(undefined)}>
                I have stored it; hide it
              </button>
            </div>
          )}
        </Show>
      </section>

      <section class="card" aria-labelledby="token-list">
        <h2 id="token-list">Your tokens</h2>
        <Show when={listError()}>
          <p class="field-error" role="alert">
            {listError()}
          </p>
        </Show>
        <Listing
          items={list.latest?.tokens}
          error={list.error}
          loading={list.loading}
          what="your tokens"
          retry={refetch}
          empty={<p>No API tokens yet.</p>}
        >
          {(tokens) => (
            <ul class="item-list">
              <For each={tokens()}>
                {(token) => (
                  <li>
                    <div class="item-main">
                      <div class="item-title">{token.name}</div>
                      <div class="item-sub">
                        <code>{token.prefix}…</code> · created{" "}
                        <time datetime={token.createdAt} title={formatDate(token.createdAt)}>
                          {formatRelative(token.createdAt)}
                        </time>{" "}
                        ·{" "}
                        {token.lastUsedAt ? (
                          <>
                            last used{" "}
                            <time datetime={token.lastUsedAt} title={formatDate(token.lastUsedAt)}>
                              {formatRelative(token.lastUsedAt)}
                            </time>
                          </>
                        ) : (
                          "never used"
                        )}
                      </div>
                    </div>
                    <ConfirmButton
                      label="Revoke"
                      confirmLabel="Revoke now"
                      subject={`token ${token.name}`}
                      onConfirm={() => revoke(token.id)}
                    />
                  </li>
                )}
              </For>
            </ul>
          )}
        </Listing>
      </section>
    </>
  );
}
