// One JSON error shape for every failure: { error: { code, message, details } }.
// Handlers throw ApiError; the app's onError turns it (and anything else) into
// a response. Unknown errors become a 500 without internals.
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";

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

export function onError(err: Error, c: Context): Response {
  if (err instanceof ApiError) return c.json(errorBody(err.code, err.message, err.details), err.status);
  console.error(
    JSON.stringify({ level: "error", msg: "unhandled error", name: err.name, error: err.message }),
  );
  return c.json(errorBody("internal", "Something went wrong on our side. Please try again."), 500);
}

export function notFound(c: Context): Response {
  return c.json(errorBody("not_found", `No route for ${c.req.method} ${new URL(c.req.url).pathname}`), 404);
}
