// One JSON error shape for every failure: { error: { code, message, details } }.
// Handlers throw ApiError; the app's onError turns it (and anything else) into
// a response. Unknown errors become a 500 without internals.
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { traceLogFields } from "../tracing/index.ts";

export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

export class ApiError extends Error {
  readonly status: ContentfulStatusCode;
  readonly code: string;
  readonly details: unknown;
  constructor(status: ContentfulStatusCode, code: string, message: string, details?: unknown) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export function errorBody(code: string, message: string, details?: unknown): ErrorBody {
  return { error: details === undefined ? { code, message } : { code, message, details } };
}

const httpCodes: Partial<Record<number, string>> = {
  400: "invalid_request",
  401: "unauthenticated",
  403: "forbidden",
  404: "not_found",
  413: "too_large",
  415: "unsupported_media_type",
};

export function onError(err: Error, c: Context): Response {
  if (err instanceof ApiError) return c.json(errorBody(err.code, err.message, err.details), err.status);
  // Hono's own 4xx (e.g. "Malformed JSON in request body" from a validator).
  if (err instanceof HTTPException && err.status < 500) {
    const status = err.status as ContentfulStatusCode;
    return c.json(
      errorBody(httpCodes[status] ?? "bad_request", err.message || "The request is not valid."),
      status,
    );
  }
  console.error(
    JSON.stringify({
      level: "error",
      msg: "unhandled error",
      name: err.name,
      // Query errors carry their parameters after "params:"; user data stays out of logs.
      error: err.message.split("\nparams:")[0],
      cause: err.cause instanceof Error ? err.cause.message : undefined,
      ...traceLogFields(),
    }),
  );
  return c.json(errorBody("internal", "Something went wrong on our side. Please try again."), 500);
}

export function notFound(c: Context): Response {
  return c.json(errorBody("not_found", `No route for ${c.req.method} ${new URL(c.req.url).pathname}`), 404);
}
