// How callers authenticate and how errors look, as the OpenAPI document
// describes them: the session cookie set by sign-in or an API token in the
// Authorization header; failures in the one JSON error shape.
import { type OpenAPIHono, z } from "@hono/zod-openapi";
import { sessionCookie } from "../auth/session.ts";
import type { AppEnv } from "../env.ts";

/** `security` for a route behind requireUser: either scheme will do. */
export const signedIn: Record<string, string[]>[] = [{ session: [] }, { apiToken: [] }];

/** `security` for a route that needs the browser session (an API token is not enough). */
export const sessionOnly: Record<string, string[]>[] = [{ session: [] }];

/**
 * The 403 of every route that changes something: with the session cookie, the
 * request must come from the web app (auth/csrf.ts).
 */
export const csrfRefused =
  "Sent with the session cookie but not by the web app: no `Origin` header, or another origin than the web app's (`csrf_refused`). API tokens are not affected.";

/** Declares both schemes on a router; the document merges them once mounted. */
export function registerAuthSchemes(api: OpenAPIHono<AppEnv>): void {
  api.openAPIRegistry.registerComponent("securitySchemes", "session", {
    type: "apiKey",
    in: "cookie",
    name: sessionCookie,
    description:
      "The browser session, set by signing in. A request that changes something (not GET or HEAD) with it must carry the web app's `Origin`, as browsers send it; otherwise it is refused with 403 `csrf_refused`.",
  });
  api.openAPIRegistry.registerComponent("securitySchemes", "apiToken", {
    type: "http",
    scheme: "bearer",
    description: "A personal API token (`tc_…`), created with POST /api/tokens.",
  });
}

/** The one error shape (see errors/index.ts), for documentation. */
export const ErrorSchema = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: "unauthenticated" }),
      message: z.string().openapi({ example: "Sign in to continue: your session is missing or has ended." }),
      details: z.unknown().optional(),
    }),
  })
  .openapi("Error");

/** Documented error responses, by status, with what each means for the route. */
export function errorResponses<S extends number>(
  meanings: Record<S, string>,
): Record<S, { description: string; content: { "application/json": { schema: typeof ErrorSchema } } }> {
  const out = {} as Record<
    S,
    { description: string; content: { "application/json": { schema: typeof ErrorSchema } } }
  >;
  for (const [status, description] of Object.entries(meanings) as [`${S}`, string][]) {
    out[Number(status) as S] = { description, content: { "application/json": { schema: ErrorSchema } } };
  }
  return out;
}
