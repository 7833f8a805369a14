// Sign-in and sign-out. Google sign-in lives beside this in google.ts; the
// dev sign-in exists only when DEV_SIGN_IN=true and is a 404 otherwise.
import { users } from "@torreclou/db";
import { eq, sql } from "drizzle-orm";
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../app.ts";
import { requireUser } from "../auth/index.ts";
import { endSession, readSession, startSession } from "../auth/session.ts";
import { ApiError, notFound } from "../errors/index.ts";

const DevSignIn = z.object({
  email: z.email("must be an email address"),
  name: z.string().trim().min(1).max(200).optional(),
});

export const auth = new Hono<AppEnv>()
  .post("/dev", async (c) => {
    if (!c.var.config.DEV_SIGN_IN) return notFound(c);
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
    return c.json({ user: user! });
  })
  .post("/logout", async (c) => {
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
    return c.json({ user, via: c.var.user.via });
  });
