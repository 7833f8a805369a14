// Sign-in and sign-out. Google sign-in (the flow itself is in auth/google.ts);
// the dev sign-in exists only when DEV_SIGN_IN=true and is a 404 otherwise.
//
// Google sign-in errors: a browser (a navigation that accepts text/html) is
// sent back to the web app with `?signin_error=<code>` so it can say what went
// wrong; any other client gets the JSON error (400 bad state or Google error,
// 401 code or ID token rejected, 403 unverified email, 502 Google unreachable).
import { createRoute, z } from "@hono/zod-openapi";
import { storageProfiles, users } from "@torreclou/db";
import { eq, sql } from "drizzle-orm";
import type { Context } from "hono";
import { requireWebOrigin } from "../auth/csrf.ts";
import {
  beginSignIn,
  completeSignIn,
  googleClient,
  isLocalPath,
  SignInError,
  takeSignInCookies,
} from "../auth/google.ts";
import { requireUser } from "../auth/index.ts";
import { isNavigation } from "../auth/oauth-flow.ts";
import { isOperator } from "../auth/operator.ts";
import { endSession, readSession, startSession } from "../auth/session.ts";
import type { AppEnv } from "../env.ts";
import { ApiError, notFound } from "../errors/index.ts";
import { rateLimit } from "../limits/index.ts";
import { errorResponses } from "../security/openapi.ts";
import { router } from "./openapi.ts";
import { CreateS3Profile, createS3Profile } from "./storage.ts";

/**
 * The local stack's S3 profile (DEV_S3_PROFILE) for an account with no
 * storage yet, saved through the same checks as one a person adds. A failing
 * check leaves the account without it; sign-in goes on.
 */
async function giveDevStorage(
  c: Context<AppEnv>,
  userId: string,
): Promise<{ storageCreated: { id: string; name: string } } | { storageError: string } | undefined> {
  const spec = c.var.config.DEV_S3_PROFILE;
  if (!spec) return undefined;
  const [existing] = await c.var
    .db()
    .select({ id: storageProfiles.id })
    .from(storageProfiles)
    .where(eq(storageProfiles.userId, userId))
    .limit(1);
  if (existing) return undefined;
  const input = CreateS3Profile.parse({ kind: "s3", ...spec });
  try {
    const { profile } = await createS3Profile(c, input, userId);
    return { storageCreated: { id: profile.id, name: profile.name } };
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    console.warn(
      JSON.stringify({ level: "warn", msg: "dev storage profile not created", userId, code: error.code }),
    );
    return { storageError: `${error.code}: ${error.message}` };
  }
}

const DevSignIn = z.object({
  email: z.email("must be an email address"),
  name: z.string().trim().min(1).max(200).optional(),
});

const redirect = { description: "Redirect.", headers: { Location: { schema: { type: "string" as const } } } };

const googleStart = createRoute({
  method: "get",
  path: "/google",
  tags: ["Sign-in"],
  summary: "Sign in with Google",
  description:
    "Redirects the browser to Google's consent screen (scopes `openid email profile`, PKCE). Google sends it back to `/api/auth/google/callback`.",
  middleware: [rateLimit("google-sign-in", 30, "1 m", "client")] as const,
  request: {
    query: z.object({
      returnTo: z
        .string()
        .refine(isLocalPath, "must be a path on this site, like /jobs")
        .optional()
        .openapi({ description: "Where in the web app to land after signing in.", example: "/jobs" }),
    }),
  },
  responses: {
    302: { ...redirect, description: "To Google's consent screen." },
    ...errorResponses({
      400: "`returnTo` is not a local path.",
      429: "Too many sign-in attempts from this address.",
      503: "Google sign-in is not configured on this server.",
    }),
  },
});

const googleCallback = createRoute({
  method: "get",
  path: "/google/callback",
  tags: ["Sign-in"],
  summary: "Google sign-in callback",
  description:
    "Where Google returns the browser. Checks the state, redeems the code, verifies the ID token, signs the user in (session cookie) and redirects to the web app. On failure a browser is redirected to the web app with `?signin_error=<code>`; other clients get the JSON error.",
  middleware: [rateLimit("google-sign-in", 30, "1 m", "client")] as const,
  request: {
    query: z.object({
      code: z.string().optional(),
      state: z.string().optional(),
      error: z.string().optional(),
      error_description: z.string().optional(),
    }),
  },
  responses: {
    302: { ...redirect, description: "Signed in (or, for a browser, failed): back to the web app." },
    ...errorResponses({
      400: "Missing or stale state, or Google reported an error (e.g. the user cancelled).",
      401: "Google rejected the code, or its ID token failed verification.",
      403: "The Google account's email is not verified.",
      429: "Too many sign-in attempts from this address.",
      502: "Google could not be reached.",
      503: "Google sign-in is not configured on this server.",
    }),
  },
});

function webUrl(c: Context<AppEnv>, path: string): string {
  return new URL(path, c.var.config.WEB_ORIGIN).toString();
}

export const auth = router()
  .openapi(googleStart, (c) => {
    const google = googleClient(c.var.config, c.req.url);
    const url = beginSignIn(c, google, c.req.valid("query").returnTo ?? "/");
    c.header("Cache-Control", "no-store");
    return c.redirect(url.toString(), 302);
  })
  .openapi(googleCallback, async (c) => {
    const config = c.var.config;
    const google = googleClient(config, c.req.url);
    const saved = takeSignInCookies(c);
    c.header("Cache-Control", "no-store");
    try {
      const profile = await completeSignIn(google, config.GOOGLE_CLIENT_ID!, c.req.valid("query"), saved);
      const now = new Date();
      const [user] = await c.var
        .db()
        .insert(users)
        .values({
          googleSub: profile.sub,
          email: profile.email,
          name: profile.name,
          pictureUrl: profile.picture,
          lastLoginAt: now,
        })
        .onConflictDoUpdate({
          target: users.googleSub,
          set: { email: profile.email, name: profile.name, pictureUrl: profile.picture, lastLoginAt: now },
        })
        .returning({ id: users.id });
      await startSession(c, config, c.var.redis, user!.id);
      return c.redirect(webUrl(c, saved.returnTo), 302);
    } catch (err) {
      if (err instanceof SignInError && isNavigation(c)) {
        const target = new URL(webUrl(c, "/"));
        target.searchParams.set("signin_error", err.code);
        return c.redirect(target.toString(), 302);
      }
      throw err;
    }
  })
  .post("/dev", async (c) => {
    if (!c.var.config.DEV_SIGN_IN) return notFound(c);
    // Another site must not sign the browser in to an account of its choosing.
    requireWebOrigin(c);
    const parsed = DevSignIn.safeParse(await c.req.json().catch(() => undefined));
    if (!parsed.success) {
      throw new ApiError(
        400,
        "invalid_request",
        'Send JSON like {"email": "you@example.com"}.',
        z.treeifyError(parsed.error),
      );
    }
    const { email, name } = parsed.data;
    const [user] = await c.var
      .db()
      .insert(users)
      .values({
        googleSub: `dev:${email.toLowerCase()}`,
        email,
        name: name ?? email.split("@")[0],
        lastLoginAt: new Date(),
      })
      .onConflictDoUpdate({ target: users.googleSub, set: { lastLoginAt: sql`now()` } })
      .returning({ id: users.id, email: users.email, name: users.name });
    await startSession(c, c.var.config, c.var.redis, user!.id);
    const storage = await giveDevStorage(c, user!.id);
    return c.json({ user: user!, ...storage });
  })
  .post("/logout", async (c) => {
    requireWebOrigin(c);
    await endSession(c, c.var.redis, await readSession(c, c.var.config, c.var.redis));
    return c.body(null, 204);
  })
  .get("/me", requireUser, async (c) => {
    const [user] = await c.var
      .db()
      .select({ id: users.id, email: users.email, name: users.name, pictureUrl: users.pictureUrl })
      .from(users)
      .where(eq(users.id, c.var.user.id));
    if (!user) throw new ApiError(401, "unauthenticated", "This account no longer exists.");
    // The web app shows the Operator page's link only to operators (the routes check again).
    return c.json({ user, via: c.var.user.via, operator: isOperator(c.var.config, user.email) });
  });
