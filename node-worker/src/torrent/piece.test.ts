// Pieces (torrent-piece, patched so each block is copied into the piece's own
// buffer as it arrives, and a flushed piece's buffer is reused once webtorrent
// has written it): a reused buffer must come back holding exactly the new
// piece's bytes, and only for a piece of its length.
import { randomBytes } from "node:crypto";
import Piece from "torrent-piece";
import { describe, expect, it } from "vitest";

/** A piece of `bytes`, its blocks set in a shuffled order, then flushed. */
function download(bytes: Buffer): Uint8Array | null {
  const piece = new Piece(bytes.length);
  const blocks: number[] = [];
  for (let i = piece.reserve(); i >= 0; i = piece.reserve()) blocks.push(i);
  blocks.reverse();
  for (const i of blocks) {
    const at = i * Piece.BLOCK_LENGTH;
    piece.set(i, bytes.subarray(at, at + Piece.BLOCK_LENGTH), "peer");
  }
  return piece.flush();
}

describe("torrent-piece with reused buffers", () => {
  it("reuses a released buffer for the next piece of its length, holding that piece's bytes only", () => {
    const length = 4 * Piece.BLOCK_LENGTH + 123;
    const first = randomBytes(length);
    const flushed = download(first);
    expect(Buffer.from(flushed ?? [])).toEqual(first);
    Piece.release(flushed as Uint8Array);

    // A piece of another length does not get it.
    const other = download(randomBytes(length - 1));
    expect(other).not.toBe(flushed);

    const second = randomBytes(length);
    const again = download(second);
    expect(again).toBe(flushed);
    expect(Buffer.from(again ?? [])).toEqual(second);

    // Not released: the next piece gets a buffer of its own.
    const third = download(randomBytes(length));
    expect(third).not.toBe(again);
  });

  it("keeps no more than 16 MiB of released buffers", () => {
    const length = 4 * 1024 * 1024;
    const buffers = Array.from({ length: 5 }, () => download(randomBytes(length)) as Uint8Array);
    for (const buffer of buffers) Piece.release(buffer);
    const reused = Array.from({ length: 5 }, () => download(randomBytes(length)));
    expect(reused.filter((buffer) => buffers.includes(buffer as Uint8Array))).toHaveLength(4);
  });

  it("copies each block as it is set, so the chunk it came in may be reused at once", () => {
    const length = 3 * Piece.BLOCK_LENGTH + 77;
    const bytes = randomBytes(length);
    const piece = new Piece(length);
    const chunk = Buffer.alloc(Piece.BLOCK_LENGTH);
    for (let i = piece.reserve(); i >= 0; i = piece.reserve()) {
      const block = bytes.subarray(i * Piece.BLOCK_LENGTH, (i + 1) * Piece.BLOCK_LENGTH);
      block.copy(chunk);
      piece.set(i, chunk.subarray(0, block.length), "peer");
      expect(Buffer.from(piece.get(i) ?? [])).toEqual(block);
      chunk.fill(0xee); // the socket's buffer, overwritten by its next read
    }
    expect(Buffer.from(piece.flush() ?? [])).toEqual(bytes);
  });

  it("takes a web seed's run of blocks in one set, and nothing past the piece's end", () => {
    const length = 2 * Piece.BLOCK_LENGTH + 5;
    const bytes = randomBytes(length);
    const piece = new Piece(length);
    const from = piece.reserveRemaining();
    expect(from).toBe(0);
    expect(piece.set(from, Buffer.concat([bytes, randomBytes(99)]), "seed")).toBe(true);
    expect(Buffer.from(piece.flush() ?? [])).toEqual(bytes);
  });
});
