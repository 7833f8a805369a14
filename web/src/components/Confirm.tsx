// A small inline "are you sure" for destructive actions: the first press
// turns the button into Confirm / Keep, and focus moves to Confirm.
import { createSignal, Show } from "solid-js";

export function ConfirmButton(props: {
  label: string;
  confirmLabel: string;
  /** Names what is affected, for screen readers, e.g. "token laptop". */
  subject: string;
  onConfirm: () => Promise<void> | void;
  disabled?: boolean;
}) {
  const [asking, setAsking] = createSignal(false);
  const [busy, setBusy] = createSignal(false);
  let confirmRef: HTMLButtonElement | undefined;
  let askRef: HTMLButtonElement | undefined;
  const ask = () => {
    setAsking(true);
    requestAnimationFrame(() => confirmRef?.focus());
  };
  const keep = () => {
    setAsking(false);
    requestAnimationFrame(() => askRef?.focus());
  };
  const confirm = async () => {
    setBusy(true);
    try {
      await props.onConfirm();
    } finally {
      setBusy(false);
      setAsking(false);
    }
  };
  return (
    <Show
      when={asking()}
      fallback={
        <button
          type="button"
          class="button danger small"
          ref={askRef}
          onClick={ask}
          disabled={props.disabled}
          aria-label={`${props.label} ${props.subject}`}
        >
          {props.label}
        </button>
      }
    >
      <span class="row">
        <button
          type="button"
          class="button danger small"
          ref={confirmRef}
          onClick={confirm}
          disabled={busy()}
          onKeyDown={(e) => e.key === "Escape" && keep()}
        >
          {busy() ? "Working…" : props.confirmLabel}
        </button>
        <button type="button" class="button subtle small" onClick={keep} disabled={busy()}>
          Keep
        </button>
      </span>
    </Show>
  );
}
