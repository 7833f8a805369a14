// Loading, empty and error states, the same everywhere.
import type { JSX } from "solid-js";
import { describeError } from "../api/client.ts";

export function Loading(props: { label: string; rows?: number }) {
  return (
    <div aria-busy="true">
      <p class="visually-hidden" role="status">
        {props.label}
      </p>
      {Array.from({ length: props.rows ?? 3 }, () => (
        <div class="skeleton" />
      ))}
    </div>
  );
}

export function ErrorState(props: { error: unknown; retry?: () => void; what: string }) {
  return (
    <div class="alert error" role="alert">
      <p>
        Could not load {props.what}: {describeError(props.error)}
      </p>
      {props.retry && (
        <button type="button" class="button small" onClick={() => props.retry?.()}>
          Try again
        </button>
      )}
    </div>
  );
}

export function Empty(props: { children: JSX.Element }) {
  return <div class="empty">{props.children}</div>;
}
