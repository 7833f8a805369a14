// Human-readable sizes, speeds, durations and times, in one place so every
// screen says the same thing the same way. Binary units (KiB = 1024 B), as
// torrent clients show them.

const sizeUnits = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"] as const;

/** 0 B, 999 B, 1.0 KiB, 12.3 MiB, 123 MiB, 1.50 GiB. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return "—";
  if (bytes < 1024) return `${Math.round(bytes)} B`;
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < sizeUnits.length - 1) {
    value /= 1024;
    unit++;
  }
  // Three significant figures, without rounding up to "1024".
  let digits = value >= 100 ? 0 : value >= 10 ? 1 : 2;
  if (unit === 1 && value < 10) digits = 1;
  let text = value.toFixed(digits);
  if (Number(text) >= 1024 && unit < sizeUnits.length - 1) {
    text = (value / 1024).toFixed(2);
    unit++;
  }
  return `${text} ${sizeUnits[unit]}`;
}

/** Bytes per second as e.g. "1.25 MiB/s"; 0 and below as "0 B/s". */
export function formatRate(bytesPerSecond: number): string {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return "0 B/s";
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** Seconds as "45 s", "3 min 05 s", "2 h 07 min", "3 d 4 h"; unknown as "—". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const minutes = Math.floor(s / 60);
  if (minutes < 60) return `${minutes} min ${String(s % 60).padStart(2, "0")} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours} h ${String(minutes % 60).padStart(2, "0")} min`;
  const days = Math.floor(hours / 24);
  return `${days} d ${hours % 24} h`;
}

/** A fraction 0..1 as a whole percent, never showing 100% before it is done. */
export function formatPercent(done: number, total: number): string {
  if (!(total > 0)) return done > 0 ? "100%" : "0%";
  const ratio = Math.min(1, Math.max(0, done / total));
  const percent = ratio < 1 ? Math.min(99, Math.floor(ratio * 100)) : 100;
  return `${percent}%`;
}

/** The ratio done/total clamped to 0..1 (0 when the total is unknown). */
export function fraction(done: number, total: number): number {
  if (!(total > 0)) return 0;
  return Math.min(1, Math.max(0, done / total));
}

/** "just now", "5 min ago", "3 h ago", "2 d ago"; older as a date. */
export function formatRelative(when: Date | string | number, now: number = Date.now()): string {
  const time = new Date(when).getTime();
  if (!Number.isFinite(time)) return "—";
  const seconds = Math.round((now - time) / 1000);
  if (seconds < 0) return "just now";
  if (seconds < 45) return "just now";
  if (seconds < 3600) return `${Math.max(1, Math.round(seconds / 60))} min ago`;
  if (seconds < 86_400) return `${Math.round(seconds / 3600)} h ago`;
  if (seconds < 7 * 86_400) return `${Math.round(seconds / 86_400)} d ago`;
  return formatDate(time);
}

/** A date and time in the reader's locale, e.g. "25 Nov 2025, 18:10:03". */
export function formatDate(when: Date | string | number): string {
  const date = new Date(when);
  if (!Number.isFinite(date.getTime())) return "—";
  return date.toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

/** "1 file", "3 files". */
export function plural(count: number, one: string, many = `${one}s`): string {
  return `${count} ${count === 1 ? one : many}`;
}
