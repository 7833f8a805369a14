// Reading progress: events as stored, and whether jobs are the caller's
// (the owner keys in Redis, Postgres only when one is missing). Shared by the
// job routes and the progress route.
import { keys, ProgressEvent, queue } from "@torreclou/contracts";
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

/**
 * One progress poll in one Redis command (Upstash bills a script as one):
 * confirms the caller's session where asked, checks the job's owner key,
 * marks the job watched (so its worker publishes often), and reads the
 * snapshot and the events from `start` on.
 * KEYS: session (or the owner key again when there is none to confirm),
 * owner, snapshot, progress stream, watched.
 * ARGV: user id, "1" to confirm the session, start id ("" for none), limit,
 * watched seconds.
 */
const POLL = `
if ARGV[2] == '1' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'session'} end
local owner = redis.call('GET', KEYS[2])
if not owner then return {'unknown'} end
if owner ~= ARGV[1] then return {'other'} end
redis.call('SET', KEYS[5], '1', 'EX', ARGV[5])
local snapshot = redis.call('GET', KEYS[3]) or ''
local entries = {}
if ARGV[3] ~= '' then entries = redis.call('XRANGE', KEYS[4], ARGV[3], '+', 'COUNT', ARGV[4]) end
return {'ok', snapshot, entries}
`;

export type PollResult =
  | { status: "ok"; snapshot: unknown; entries: [id: string, fields: unknown[]][] }
  /** The session is logged out or ended. */
  | { status: "session" }
  /** The owner key is missing (Postgres must say). */
  | { status: "unknown" }
  /** Someone else's job. */
  | { status: "other" };

export async function pollProgress(
  redis: Redis,
  poll: {
    jobId: string;
    userId: string;
    /** The session key to confirm in the same command (cookie sessions). */
    sessionKey?: string | undefined;
    /** First stream id to read, or undefined for the snapshot only. */
    start: string | undefined;
    limit: number;
  },
): Promise<PollResult> {
  const { jobId } = poll;
  const reply = (await redis.eval(
    POLL,
    [
      poll.sessionKey ?? keys.owner(jobId),
      keys.owner(jobId),
      keys.snapshot(jobId),
      keys.progress(jobId),
      keys.watched(jobId),
    ],
    [
      poll.userId,
      poll.sessionKey ? "1" : "0",
      poll.start ?? "",
      String(poll.limit),
      String(queue.watchedSeconds),
    ],
  )) as unknown[];
  const status = String(reply[0]);
  if (status !== "ok") return { status: status as "session" | "unknown" | "other" };
  const snapshot = reply[1] === "" || reply[1] === undefined ? null : reply[1];
  return { status: "ok", snapshot, entries: (reply[2] ?? []) as [string, unknown[]][] };
}

/** The value of `field` in a stream entry's flat field list. */
export function fieldOf(fields: unknown[], field: string): unknown {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === field) return fields[i + 1];
  return undefined;
}

/**
 * The jobs list's poll in one Redis command: confirms the session where
 * asked, and per job returns whose it is ('mine', 'other', 'unknown') and,
 * for the caller's, the snapshot, marking it watched.
 * KEYS: session (or the first owner key when there is none to confirm), then
 * owner, snapshot and watched key of each job. ARGV: user id, "1" to confirm
 * the session, watched seconds.
 */
const BATCH = `
if ARGV[2] == '1' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'session'} end
local out = {'ok'}
for i = 2, #KEYS, 3 do
  local owner = redis.call('GET', KEYS[i])
  if not owner then
    table.insert(out, 'unknown')
    table.insert(out, '')
  elseif owner ~= ARGV[1] then
    table.insert(out, 'other')
    table.insert(out, '')
  else
    redis.call('SET', KEYS[i + 2], '1', 'EX', ARGV[3])
    table.insert(out, 'mine')
    table.insert(out, redis.call('GET', KEYS[i + 1]) or '')
  end
end
return out
`;

export type BatchResult =
  | { status: "session" }
  | { status: "ok"; jobs: Map<string, { whose: "mine" | "other" | "unknown"; snapshot: unknown }> };

export async function pollSnapshots(
  redis: Redis,
  poll: { ids: string[]; userId: string; sessionKey?: string | undefined },
): Promise<BatchResult> {
  const reply = (await redis.eval(
    BATCH,
    [
      poll.sessionKey ?? keys.owner(poll.ids[0] ?? ""),
      ...poll.ids.flatMap((id) => [keys.owner(id), keys.snapshot(id), keys.watched(id)]),
    ],
    [poll.userId, poll.sessionKey ? "1" : "0", String(queue.watchedSeconds)],
  )) as unknown[];
  if (reply[0] !== "ok") return { status: "session" };
  const jobs = new Map<string, { whose: "mine" | "other" | "unknown"; snapshot: unknown }>();
  poll.ids.forEach((id, i) => {
    const snapshot = reply[2 + 2 * i];
    jobs.set(id, {
      whose: reply[1 + 2 * i] as "mine" | "other" | "unknown",
      snapshot: snapshot === "" || snapshot === undefined ? null : snapshot,
    });
  });
  return { status: "ok", jobs };
}
