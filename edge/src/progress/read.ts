// Reading progress: events as stored, and whether jobs are the caller's
// (the owner keys in Redis, Postgres only when one is missing). Shared by the
// job routes and the progress route.
import { keys, ProgressEvent } from "@torreclou/contracts";
import { jobs } from "@torreclou/db";
import type { Db } from "@torreclou/db/jobs";
import type { Redis } from "@upstash/redis/cloudflare";
import { and, eq, inArray } from "drizzle-orm";

/** A progress event as stored (JSON, or already decoded by the Redis client); undefined if malformed. */
export function readEvent(value: unknown): ProgressEvent | undefined {
  let data = value;
  if (typeof data === "string") {
    try {
      data = JSON.parse(data);
    } catch {
      return undefined;
    }
  }
  const parsed = ProgressEvent.safeParse(data);
  return parsed.success ? parsed.data : undefined;
}

/**
 * Is the job the caller's? The owner key answers; only when it is missing
 * (e.g. Redis lost it) does Postgres, and the key is then written back.
 */
export async function ownsJobs(
  db: () => Db,
  redis: Redis,
  userId: string,
  owners: Map<string, unknown>,
): Promise<Set<string>> {
  const owned = new Set<string>();
  const unknown: string[] = [];
  for (const [jobId, owner] of owners) {
    if (owner === null || owner === undefined) unknown.push(jobId);
    else if (String(owner) === userId) owned.add(jobId);
  }
  if (unknown.length > 0) {
    const found = await db()
      .select({ id: jobs.id })
      .from(jobs)
      .where(and(eq(jobs.userId, userId), inArray(jobs.id, unknown)));
    if (found.length > 0) {
      const heal = redis.pipeline();
      for (const { id } of found) {
        owned.add(id);
        heal.set(keys.owner(id), userId);
      }
      await heal.exec().catch(() => {});
    }
  }
  return owned;
}
