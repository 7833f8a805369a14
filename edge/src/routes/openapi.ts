// Factory for route modules. Every route that takes input is declared with
// createRoute (zod schemas): the same schemas validate requests, type the web
// client, and generate the OpenAPI document at /api/openapi.json.
import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors/index.ts";

/** A sub-app whose validation failures use the one JSON error shape (400, with zod's issues). */
export function router(): OpenAPIHono<AppEnv> {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      if (!result.success) {
        const issues = result.error.issues.map((issue) => ({
          path: issue.path.join("."),
          message: issue.message,
        }));
        const first = issues[0];
        throw new ApiError(
          400,
          "invalid_request",
          first ? `${first.path || "request"}: ${first.message}` : "The request is not valid.",
          { target: result.target, issues },
        );
      }
    },
  });
}
