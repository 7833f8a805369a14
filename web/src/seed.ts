// The new-job form's seeding fields, read into what POST /api/jobs takes.

/** The seeding asked for, from the form's fields (a ratio, hours), or what is wrong with them. */
export function seedRequest(ratio: string, hours: string): { ratio: number; minutes: number } | string {
  const r = Number(ratio);
  const h = Number(hours);
  if (ratio.trim() === "" || !Number.isFinite(r) || r <= 0 || r > 1000)
    return "Seed until a ratio above 0, up to 1000 (1 gives back as much as it took).";
  if (hours.trim() === "" || !Number.isFinite(h) || h <= 0 || h > 366 * 24)
    return "Seed for a number of hours above 0, up to a year.";
  return { ratio: r, minutes: Math.max(1, Math.round(h * 60)) };
}
