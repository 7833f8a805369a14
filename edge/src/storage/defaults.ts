// Which profile is a user's default, kept consistent under concurrent
// requests: writers lock the user row first, and deleting the default passes
// it on to the oldest remaining profile (active ones first).
import { storageProfiles } from "@torreclou/db";
import { asc, desc, eq, sql } from "drizzle-orm";
import type { AppEnv } from "../env.ts";

export type Tx = Parameters<Parameters<ReturnType<AppEnv["Variables"]["db"]>["transaction"]>[0]>[0];

/** Serialises default-profile changes of one user (SELECT ... FOR UPDATE on the user row). */
export async function lockUser(tx: Tx, userId: string): Promise<void> {
  await tx.execute(sql`select 1 from users where id = ${userId} for update`);
}

/** Call after deleting the user's default profile, in the same transaction. */
export async function passDefaultOn(tx: Tx, userId: string): Promise<void> {
  const [next] = await tx
    .select({ id: storageProfiles.id })
    .from(storageProfiles)
    .where(eq(storageProfiles.userId, userId))
    .orderBy(
      desc(sql`${storageProfiles.status} = 'active'`),
      asc(storageProfiles.createdAt),
      asc(storageProfiles.id),
    )
    .limit(1);
  if (next) await tx.update(storageProfiles).set({ isDefault: true }).where(eq(storageProfiles.id, next.id));
}
