// The typed API client: hono/client over the edge's own route types, so every
// request and response shape comes from the server code. `call` unwraps a
// response: the success body, or an ApiError built from the one JSON error
// shape `{ error: { code, message, details } }`.

import type { ClientResponse } from "hono/client";
import { hc } from "hono/client";
import type { SuccessStatusCode } from "hono/utils/http-status";
import type { App } from "../../../edge/src/app.ts";

// Absolute, so `$url()` works too; in the browser this is the page's own origin.
export const api = hc<App>(typeof location === "undefined" ? "http://localhost" : location.origin);

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;
  constructor(status: number, code: string, message: string, details?: unknown) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /** Field-level issues from a 400 `invalid_request`, keyed by path. */
  fieldIssues(): Record<string, string> {
    const found: Record<string, string> = {};
    const issues = (this.details as { issues?: { path?: string; message?: string }[] } | undefined)?.issues;
    if (Array.isArray(issues)) {
      for (const issue of issues) {
        if (issue?.path && issue.message && !(issue.path in found)) found[issue.path] = issue.message;
      }
    }
    return found;
  }
}

type Listener = () => void;
const unauthenticatedListeners = new Set<Listener>();

/** Called whenever the API answers 401, so the app can return to the sign-in screen. */
export function onUnauthenticated(listener: Listener): () => void {
  unauthenticatedListeners.add(listener);
  return () => unauthenticatedListeners.delete(listener);
}

type AnyResponse = ClientResponse<unknown, number, string>;

/** The body type of the response's success statuses. */
export type Ok<R> =
  R extends ClientResponse<infer Body, infer Status, infer _F>
    ? Status extends SuccessStatusCode
      ? Status extends 204
        ? undefined
        : Body
      : never
    : never;

export async function toApiError(response: Response | AnyResponse): Promise<ApiError> {
  let body: unknown;
  try {
    body = await response.json();
  } catch {
    body = undefined;
  }
  const error = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined)
    ?.error;
  if (error && typeof error.message === "string") {
    return new ApiError(
      response.status,
      typeof error.code === "string" ? error.code : "error",
      error.message,
      error.details,
    );
  }
  return new ApiError(
    response.status,
    "http_error",
    response.status >= 500
      ? "The server had a problem. Please try again in a moment."
      : `The request failed (HTTP ${response.status}).`,
  );
}

/** Awaits a typed request; returns the success body or throws ApiError. */
export async function call<R extends AnyResponse>(request: Promise<R>): Promise<Ok<R>> {
  let response: R;
  try {
    response = await request;
  } catch (err) {
    if (err instanceof DOMException && err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "Cannot reach TorreClou. Check your connection and try again.");
  }
  if (!response.ok) {
    const error = await toApiError(response);
    if (error.status === 401) for (const listener of unauthenticatedListeners) listener();
    throw error;
  }
  if (response.status === 204 || response.headers.get("content-length") === "0") return undefined as Ok<R>;
  return (await response.json()) as Ok<R>;
}

/** A message a person can read, for anything thrown. */
export function describeError(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Standard base64 of bytes (how the API takes binary in JSON), in chunks so large ones do not overflow the call stack. */
export function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}
