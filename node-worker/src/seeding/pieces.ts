// Which pieces a seeding torrent may offer, and where each piece's bytes
// lie. A piece is offered only if every byte of it is in a file the job
// stored (or in a padding file, all zeros): a piece that spans a file the
// user did not select is never announced, so no peer asks for it.

/** A file of the torrent as laid out in its pieces. */
export interface LayoutFile {
  /** Index in the torrent. */
  index: number;
  /** Byte offset in the torrent. */
  offset: number;
  length: number;
}

/** Bytes [start, end) of file `file` (by torrent index). */
export interface Span {
  file: number;
  start: number;
  end: number;
}

export interface Layout {
  files: LayoutFile[];
  pieceLength: number;
  /** Bytes of the whole torrent (every file, padding included). */
  length: number;
}

export function pieceCount(layout: Layout): number {
  return Math.ceil(layout.length / layout.pieceLength);
}

/** Where piece `piece`'s bytes lie, file by file, in torrent order (empty files left out). */
export function spansOf(layout: Layout, piece: number): Span[] {
  const from = piece * layout.pieceLength;
  const to = Math.min(layout.length, from + layout.pieceLength);
  const spans: Span[] = [];
  const files = layout.files;
  for (let i = firstFileAt(files, from); i < files.length; i++) {
    const f = files[i]!;
    if (f.offset >= to) break;
    const start = Math.max(from, f.offset);
    const end = Math.min(to, f.offset + f.length);
    if (end > start) spans.push({ file: f.index, start: start - f.offset, end: end - f.offset });
  }
  return spans;
}

/** Position of the file holding byte `at` (files are in torrent order). */
function firstFileAt(files: LayoutFile[], at: number): number {
  let lo = 0;
  let hi = files.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const f = files[mid]!;
    if (f.offset + f.length <= at) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The pieces to offer, as a bitfield (most significant bit first, as the
 * wire and webtorrent's `bitfield` option read it), and how many.
 */
export function offeredPieces(
  layout: Layout,
  available: (file: number) => boolean,
): { bitfield: Uint8Array; count: number } {
  const pieces = pieceCount(layout);
  const bitfield = new Uint8Array(Math.ceil(pieces / 8));
  let count = 0;
  for (let piece = 0; piece < pieces; piece++) {
    const spans = spansOf(layout, piece);
    if (spans.length === 0 || !spans.every((s) => available(s.file))) continue;
    bitfield[piece >> 3]! |= 0x80 >> (piece & 7);
    count++;
  }
  return { bitfield, count };
}
