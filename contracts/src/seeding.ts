// Seeding back: after a job is stored, its worker may keep offering the
// torrent to the swarm until a ratio or a time limit, whichever comes first.
// The settings a job asks for, the limits that bound them and what the
// worker reports are spoken by edge, worker and web alike: defined here once.
import { z } from "zod";

/** What a job asks for: seed up to this ratio (uploaded ÷ selected bytes) and/or for this many minutes. */
export const SeedRequest = z
  .object({
    ratio: z.number().min(0).max(1000).optional(),
    minutes: z
      .number()
      .int()
      .min(0)
      .max(366 * 24 * 60)
      .optional(),
  })
  .strict();
export type SeedRequest = z.infer<typeof SeedRequest>;

/** What a job seeds with, once bounded: both limits set; 0 in either means no seeding. */
export interface SeedSettings {
  ratio: number;
  minutes: number;
}

/** An operator's (or a worker's) limits on seeding, and the default for jobs that do not ask. */
export interface SeedPolicy {
  maxRatio: number;
  maxMinutes: number;
  /** What a job gets when it does not ask (0 / 0: no seeding). */
  defaultRatio: number;
  defaultMinutes: number;
}

/**
 * The seeding a job gets: what it asked for (the default where it asked
 * nothing), each limit capped by the policy. A job asking only a ratio seeds
 * at most the policy's time, and the other way round; null when it will not
 * seed at all.
 */
export function boundSeed(asked: SeedRequest | null | undefined, policy: SeedPolicy): SeedSettings | null {
  const wanted = asked ?? { ratio: policy.defaultRatio, minutes: policy.defaultMinutes };
  const ratio = Math.min(wanted.ratio ?? policy.maxRatio, policy.maxRatio);
  const minutes = Math.min(wanted.minutes ?? policy.maxMinutes, policy.maxMinutes);
  return ratio > 0 && minutes > 0 ? { ratio, minutes } : null;
}

/** The value of a job's seed-stop key (`keys.seedStop`): who stopped it. */
export const seedStopFlag = { user: 1, deleted: 2 } as const;

/** Why a job's seeding ended (or never began). */
export const SeedEnd = z.enum([
  "ratio",
  "time",
  "user",
  "shutdown",
  "deleted",
  "no_slot",
  "no_source",
  "failed",
]);
export type SeedEnd = z.infer<typeof SeedEnd>;

/** For people: "ratio reached". */
export const seedEndText: Record<SeedEnd, string> = {
  ratio: "ratio reached",
  time: "time limit reached",
  user: "stopped by the user",
  shutdown: "the worker shut down",
  deleted: "the job was deleted",
  no_slot: "every seeding slot of the worker was in use",
  no_source: "the files are no longer on the worker's disk and reading them back from storage is off",
  failed: "seeding failed",
};

/** The seeding part of a progress event (contracts/src/progress.ts). */
export const SeedingProgress = z.object({
  /** Where the pieces are read from: the worker's scratch files, or ranged reads of the stored objects. */
  source: z.enum(["disk", "storage"]).nullable(),
  /** Bytes sent to peers so far. */
  uploaded: z.number().int().min(0),
  /** uploaded ÷ selected bytes. */
  ratio: z.number().min(0),
  peers: z.number().int().min(0),
  /** The limits it seeds under. */
  ratioLimit: z.number().min(0),
  /** When it stops at the latest (ms since the epoch, worker clock). */
  until: z.number().int(),
  since: z.number().int(),
  /** Set once it ended: why, in a word and for people, and when. */
  ended: z.object({ reason: SeedEnd, message: z.string(), at: z.number().int() }).optional(),
});
export type SeedingProgress = z.infer<typeof SeedingProgress>;

/** "Seeding · ratio 0.42 · 3 peers · uploaded 120 MiB", or why it ended. */
export function describeSeeding(s: SeedingProgress, formatBytes: (n: number) => string): string {
  const numbers = `ratio ${s.ratio.toFixed(2)} · uploaded ${formatBytes(s.uploaded)}`;
  if (s.ended) return `Seeded · ${numbers} · ended: ${s.ended.message}`;
  return `Seeding · ratio ${s.ratio.toFixed(2)} · ${s.peers} peer${s.peers === 1 ? "" : "s"} · uploaded ${formatBytes(s.uploaded)}`;
}
