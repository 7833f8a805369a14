// The layout of an S3 multipart upload: how big each part of a file is. The
// worker and the edge (which opens uploads for a browser tab) both use it, so
// either can resume the other's upload from the same journal (upload_parts).

const MiB = 1024 * 1024;
/** S3's most parts per upload. */
export const MAX_PARTS = 10_000;
/** S3's bounds on a part (the last part may be smaller). */
export const MIN_PART = 5 * MiB;
export const MAX_PART = 5 * 1024 * MiB;
/** The part size asked for when nothing says otherwise (the worker's WORKER_PART_SIZE_BYTES default). */
export const DEFAULT_PART_SIZE = 8 * MiB;

/** A stored part as the journal has it. */
export interface PartShape {
  partNumber: number;
  size: number;
}

/**
 * Part size for a file: at least `min` (and S3's 5 MiB), whole MiB, and few
 * enough parts for S3's 10,000 limit (a 5 TiB file gets 525 MiB parts), at
 * most S3's 5 GiB.
 */
export function partSizeFor(size: number, min: number): number {
  const needed = Math.ceil(size / MAX_PARTS);
  return Math.min(MAX_PART, Math.max(min, MIN_PART, Math.ceil(needed / MiB) * MiB));
}

/** How many parts a file of `size` bytes has in parts of `partSize` (at least one). */
export function partCount(size: number, partSize: number): number {
  return Math.max(1, Math.ceil(size / partSize));
}

/** The length of part `partNumber` (1-based) of a file of `size` bytes; 0 outside the layout. */
export function partLength(size: number, partSize: number, partNumber: number): number {
  const count = partCount(size, partSize);
  if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > count) return 0;
  return partNumber < count ? partSize : size - (count - 1) * partSize;
}

/** Whether journaled parts fit a layout of `partSize` parts for a file of `size` bytes. */
export function fitsLayout(parts: readonly PartShape[], size: number, partSize: number): boolean {
  const count = partCount(size, partSize);
  return parts.every((p) =>
    p.partNumber < count
      ? p.size === partSize
      : p.partNumber === count && p.size === size - (count - 1) * partSize,
  );
}

/**
 * The part size a resumed upload keeps: the one its journal was written with,
 * whatever the caller is configured with now. Every part but the last has it;
 * the configured size is preferred when the journal fits it too.
 */
export function resumedPartSize(parts: readonly PartShape[], size: number, configured: number): number {
  if (parts.length === 0 || fitsLayout(parts, size, configured)) return configured;
  const largest = Math.max(...parts.map((p) => p.size));
  return largest >= MIN_PART && fitsLayout(parts, size, largest) ? largest : configured;
}
