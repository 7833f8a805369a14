// The operators: the accounts whose email is in OPERATOR_EMAILS. Routes behind
// `requireOperator` answer everyone else (signed out included) exactly as a
// route that does not exist does, so they do not reveal that they exist.
import { users } from "@torreclou/db";
import { eq } from "drizzle-orm";
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import type { Config } from "../config.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors/index.ts";
import { requireUser } from "./index.ts";

export function isOperator(config: Config, email: string | null | undefined): boolean {
  return !!email && config.OPERATOR_EMAILS.has(email.trim().toLowerCase());
}

/** The 404 of an unknown route (errors/index.ts `notFound`), as an error to throw. */
function noSuchRoute(c: Context): ApiError {
  return new ApiError(404, "not_found", `No route for ${c.req.method} ${new URL(c.req.url).pathname}`);
}

export const requireOperator = createMiddleware<AppEnv>(async (c, next) => {
  // Nobody is an operator: not even a session lookup.
  if (c.var.config.OPERATOR_EMAILS.size === 0) throw noSuchRoute(c);
  let signedIn = false;
  try {
    await requireUser(c, async () => {
      signedIn = true;
    });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) throw noSuchRoute(c);
    throw err;
  }
  if (!signedIn) throw noSuchRoute(c);
  const [user] = await c.var
    .db()
    .select({ email: users.email })
    .from(users)
    .where(eq(users.id, c.var.user.id));
  if (!isOperator(c.var.config, user?.email)) throw noSuchRoute(c);
  return next();
});
