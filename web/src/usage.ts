// The one line that tells a person their quotas and what they use of them
// (GET /api/usage), e.g. "3 of 5 running · 12 of 100 queued · 4.20 GiB of
// 50.0 GiB this month, renews 1 Dec". A limit the operator did not set is
// left out of its part ("3 running").
import { formatBytes } from "./format.ts";

export interface UsageView {
  limits: { runningJobs: number | null; queuedJobs: number | null; monthlyBytes: number | null };
  usage: { runningJobs: number; queuedJobs: number; monthlyBytes: number };
  month: { start: string; resetsAt: string };
}

const part = (used: string, limit: string | null, what: string) =>
  limit === null ? `${used} ${what}` : `${used} of ${limit} ${what}`;

export function usageParts(view: UsageView): string[] {
  const { limits, usage } = view;
  const renews = new Date(view.month.resetsAt).toLocaleDateString("en-GB", {
    day: "numeric",
    month: "short",
    timeZone: "UTC",
  });
  return [
    part(
      String(usage.runningJobs),
      limits.runningJobs === null ? null : String(limits.runningJobs),
      "running",
    ),
    part(String(usage.queuedJobs), limits.queuedJobs === null ? null : String(limits.queuedJobs), "queued"),
    limits.monthlyBytes === null
      ? `${formatBytes(usage.monthlyBytes)} this month`
      : `${formatBytes(usage.monthlyBytes)} of ${formatBytes(limits.monthlyBytes)} this month, renews ${renews}`,
  ];
}

/** Whether a quota is reached (running beyond the limit only waits; the others refuse new jobs). */
export function atLimit(view: UsageView): { queued: boolean; monthly: boolean } {
  const { limits, usage } = view;
  return {
    queued: limits.queuedJobs !== null && usage.queuedJobs >= limits.queuedJobs,
    monthly: limits.monthlyBytes !== null && usage.monthlyBytes >= limits.monthlyBytes,
  };
}
