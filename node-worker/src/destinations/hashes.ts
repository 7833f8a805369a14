// The content hashes OneDrive and Dropbox report for a stored file, computed
// over the local file so a finished upload can be checked byte for byte.
//
// quickXorHash (OneDrive): a 160-bit register; byte k of the file is XORed in
// at bit (11·k) mod 160, wrapping around; the file's length (64-bit, little
// endian) is XORed into the last 8 bytes; base64. As Microsoft documents it
// (https://learn.microsoft.com/onedrive/developer/code-snippets/quickxorhash).
// Bytes 160 apart land on the same bits, so the bytes are first folded into
// 160 lanes by XOR, and placed once at the end.
//
// content_hash (Dropbox): the file split into 4 MiB blocks, SHA-256 of each,
// SHA-256 of those digests concatenated; hex
// (https://www.dropbox.com/developers/reference/content-hash).
import { createHash, type Hash } from "node:crypto";
import { type LocalFile, readStream } from "../sinks/local.ts";

export interface ContentHasher {
  update(piece: Uint8Array): void;
  digest(): string;
}

const WIDTH = 160;

export class QuickXorHash implements ContentHasher {
  /** Bytes XORed per lane (lane = position mod 160). */
  readonly #lanes = new Uint8Array(WIDTH);
  readonly #lanes32 = new Uint32Array(this.#lanes.buffer);
  #length = 0;

  update(piece: Uint8Array): void {
    const lanes = this.#lanes;
    let i = 0;
    let lane = this.#length % WIDTH;
    const n = piece.length;
    // Up to the next whole 160-byte block.
    while (i < n && lane !== 0) {
      lanes[lane] = lanes[lane]! ^ piece[i++]!;
      lane = lane === WIDTH - 1 ? 0 : lane + 1;
    }
    // Whole blocks, 32 bits at a time when the bytes are aligned for it.
    if (n - i >= WIDTH && (piece.byteOffset + i) % 4 === 0) {
      const blocks = Math.floor((n - i) / WIDTH);
      const words = new Uint32Array(piece.buffer, piece.byteOffset + i, (blocks * WIDTH) / 4);
      const acc = this.#lanes32;
      for (let w = 0; w < words.length; w += 40) {
        for (let k = 0; k < 40; k++) acc[k]! ^= words[w + k]!;
      }
      i += blocks * WIDTH;
    }
    while (i < n) {
      lanes[lane] = lanes[lane]! ^ piece[i++]!;
      lane = lane === WIDTH - 1 ? 0 : lane + 1;
    }
    this.#length += n;
  }

  digest(): string {
    const out = new Uint8Array(WIDTH / 8);
    for (let lane = 0; lane < WIDTH; lane++) {
      const value = this.#lanes[lane]!;
      if (value === 0) continue;
      const start = (11 * lane) % WIDTH;
      for (let bit = 0; bit < 8; bit++) {
        if (((value >> bit) & 1) === 0) continue;
        const at = (start + bit) % WIDTH;
        out[at >> 3]! ^= 1 << (at & 7);
      }
    }
    let length = BigInt(this.#length);
    for (let i = 0; i < 8; i++) {
      out[WIDTH / 8 - 8 + i]! ^= Number(length & 0xffn);
      length >>= 8n;
    }
    return Buffer.from(out).toString("base64");
  }
}

const DROPBOX_BLOCK = 4 * 1024 * 1024;

export class DropboxContentHash implements ContentHasher {
  readonly #overall: Hash = createHash("sha256");
  #block: Hash = createHash("sha256");
  #inBlock = 0;

  update(piece: Uint8Array): void {
    let i = 0;
    while (i < piece.length) {
      const take = Math.min(piece.length - i, DROPBOX_BLOCK - this.#inBlock);
      this.#block.update(piece.subarray(i, i + take));
      this.#inBlock += take;
      i += take;
      if (this.#inBlock === DROPBOX_BLOCK) {
        this.#overall.update(this.#block.digest());
        this.#block = createHash("sha256");
        this.#inBlock = 0;
      }
    }
  }

  digest(): string {
    if (this.#inBlock > 0) this.#overall.update(this.#block.digest());
    return this.#overall.digest("hex");
  }
}

/**
 * Bytes of a local file hashed in order as they are sent; a range sent again
 * after a failure is not hashed twice, and a resumed upload first reads what
 * the provider already holds.
 */
export class FileHash {
  readonly #hasher: ContentHasher;
  readonly #file: LocalFile;
  at = 0;
  constructor(file: LocalFile, hasher: ContentHasher) {
    this.#file = file;
    this.#hasher = hasher;
  }

  /** Feeds bytes read at `position`; only those past `at` count. */
  feed(piece: Uint8Array, position: number): void {
    if (position > this.at || position + piece.length <= this.at) return;
    this.#hasher.update(piece.subarray(this.at - position));
    this.at = position + piece.length;
  }

  /** Reads and hashes the file up to `end`. */
  async catchUp(end: number): Promise<void> {
    if (this.at >= end) return;
    for await (const piece of readStream(this.#file, this.at, end)) this.feed(piece as Buffer, this.at);
  }

  digest(): string {
    return this.#hasher.digest();
  }
}

/** The hash of a whole local file. */
export async function hashFile(file: LocalFile, size: number, hasher: ContentHasher): Promise<string> {
  const hash = new FileHash(file, hasher);
  await hash.catchUp(size);
  return hash.digest();
}
