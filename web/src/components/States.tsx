// Loading, empty and error states, the same everywhere.
import { type JSX, Match, Switch } from "solid-js";
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

/**
 * A fetched list in one of its states: the error (with a retry), a skeleton
 * while it first loads, the empty state, or its items.
 */
export function Listing<T>(props: {
  /** The items once loaded (undefined while loading or failed). */
  items: readonly T[] | undefined;
  error: unknown;
  loading: boolean;
  /** "your tokens": for "Could not load your tokens" and "Loading your tokens". */
  what: string;
  retry: () => void;
  empty: JSX.Element;
  rows?: number;
  /** Given the items as an accessor, so the list follows them as they change. */
  children: (items: () => readonly T[]) => JSX.Element;
}) {
  return (
    <Switch>
      <Match when={props.error}>
        <ErrorState error={props.error} what={props.what} retry={props.retry} />
      </Match>
      <Match when={props.loading && !props.items}>
        <Loading label={`Loading ${props.what}`} rows={props.rows ?? 2} />
      </Match>
      <Match when={props.items?.length === 0}>
        <Empty>{props.empty}</Empty>
      </Match>
      <Match when={props.items}>{(items) => props.children(items)}</Match>
    </Switch>
  );
}
