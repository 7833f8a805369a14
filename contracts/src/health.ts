// Swarm health: how many seeders and leechers a torrent's trackers report
// (a BEP 48 / BEP 15 scrape), asked of the worker fleet before a job is
// started. The edge queues a request on a Redis list and answers from a
// short-lived cache; a worker scrapes under the egress policy and fills it.
import { z } from "zod";

/** Trackers scraped per request, at most. */
export const MAX_HEALTH_TRACKERS = 10;
/** How long an answer is kept (and reused for the same torrent and trackers). */
export const HEALTH_CACHE_SECONDS = 600;
/** How long a request waits for a worker before the browser may ask again. */
export const HEALTH_PENDING_SECONDS = 60;

export const healthKeys = {
  /** Requests for the fleet (a Redis list of HealthRequest JSON). */
  requests: "torreclou:health:requests",
  /** The answer for one info hash and tracker list. */
  result: (id: string) => `torreclou:health:${id}`,
  /** Set while a request is queued or being scraped, so it is queued once. */
  pending: (id: string) => `torreclou:health:${id}:pending`,
};

export const TrackerUrl = z
  .string()
  .max(512, "each tracker URL must be at most 512 characters")
  .refine(
    (url) => /^(https?|udp):\/\/[^/?#]+/i.test(url),
    "each tracker must be an http(s):// or udp:// URL",
  );

export const HealthRequest = z.object({
  id: z.string().regex(/^[0-9a-f]{40}-[0-9a-f]{16}$/),
  infoHash: z.string().regex(/^[0-9a-f]{40}$/),
  trackers: z.array(TrackerUrl).min(1).max(MAX_HEALTH_TRACKERS),
});
export type HealthRequest = z.infer<typeof HealthRequest>;

export interface TrackerHealth {
  /** The tracker's host (and port): its URL may carry a private passkey. */
  tracker: string;
  seeders?: number;
  leechers?: number;
  completed?: number;
  /** Why there are no counts: no answer, refused by the egress policy, … */
  error?: string;
}

export interface SwarmHealth {
  checkedAt: string;
  trackers: TrackerHealth[];
  /** The most seeders any tracker reported (undefined: none answered). */
  seeders?: number;
  /** A plain sentence for a person. */
  verdict: string;
}

/** The request for one torrent's trackers: its id names the cache entry (same hash and trackers, same answer). */
export async function healthRequest(infoHash: string, trackers: readonly string[]): Promise<HealthRequest> {
  const unique = [...new Set(trackers)].slice(0, MAX_HEALTH_TRACKERS);
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode([...unique].sort().join("\n"))),
  );
  const hex = [...digest.slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return { id: `${infoHash.toLowerCase()}-${hex}`, infoHash: infoHash.toLowerCase(), trackers: unique };
}

/** The tracker part a person may see: host and port, never the path (passkeys live there). */
export function trackerLabel(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol.replace(":", "")}://${parsed.host}`;
  } catch {
    return "an unreadable tracker URL";
  }
}

/** What the counts of every tracker add up to, for a person. */
export function summarizeHealth(trackers: TrackerHealth[], checkedAt: Date): SwarmHealth {
  const answered = trackers.filter((t) => t.seeders !== undefined);
  const seeders = answered.length > 0 ? Math.max(...answered.map((t) => t.seeders ?? 0)) : undefined;
  let verdict: string;
  if (answered.length === 0) verdict = `No tracker answered (${trackers.length} tried).`;
  else if (seeders === 0) verdict = "No seeders reported by any tracker: the download may never finish.";
  else {
    const leechers = Math.max(...answered.map((t) => t.leechers ?? 0));
    verdict = `${seeders} seeder${seeders === 1 ? "" : "s"} and ${leechers} leecher${leechers === 1 ? "" : "s"} reported.`;
  }
  return { checkedAt: checkedAt.toISOString(), trackers, seeders, verdict };
}
