// Byte ranges [start, end) kept sorted and disjoint: what the window has freed
// or never wrote, what a claim has filled.

/** Bytes of [start, end) not yet in the sorted, disjoint `ranges`; adds them. */
export function addRange(ranges: [number, number][], start: number, end: number): number {
  if (end <= start) return 0;
  let added = end - start;
  for (const [a, b] of ranges) added -= Math.max(0, Math.min(b, end) - Math.max(a, start));
  ranges.push([start, end]);
  ranges.sort((x, y) => x[0] - y[0]);
  const merged: [number, number][] = [];
  for (const r of ranges) {
    const last = merged.at(-1);
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else merged.push([r[0], r[1]]);
  }
  ranges.splice(0, ranges.length, ...merged);
  return added;
}

export function overlaps(ranges: [number, number][], start: number, end: number): boolean {
  return ranges.some(([a, b]) => a < end && start < b);
}
