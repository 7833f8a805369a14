// Reading a file's downloaded bytes from the job's scratch folder: straight
// from its scratch file, or through its ring (torrent/ring.ts) when the file
// streamed through one. Every provider reads local bytes through here.
import { type FileHandle, open } from "node:fs/promises";
import { Readable } from "node:stream";
import type { Ring } from "../torrent/ring.ts";

export interface LocalFile {
  /** The scratch file holding the bytes (a ring file when `ring` is set). */
  localPath: string;
  /** How file offsets map to positions in `localPath`; absent: one to one. */
  ring?: Ring | undefined;
}

/** Chunks a read stream yields (fs.createReadStream's default). */
const STREAM_CHUNK = 64 * 1024;

/** A local file opened for reads at file offsets. */
export class LocalReader {
  readonly #file: LocalFile;
  readonly #handle: FileHandle;

  private constructor(file: LocalFile, handle: FileHandle) {
    this.#file = file;
    this.#handle = handle;
  }

  static async open(file: LocalFile): Promise<LocalReader> {
    return new LocalReader(file, await open(file.localPath, "r"));
  }

  /** Fills `into` with the file's bytes from `position`. */
  async read(into: Uint8Array, position: number): Promise<void> {
    const ring = this.#file.ring;
    if (!ring) return this.#readAt(into, position);
    for (const [at, from, length] of ring.runs(position, position + into.length))
      await this.#readAt(into.subarray(from - position, from - position + length), at);
  }

  async #readAt(into: Uint8Array, at: number): Promise<void> {
    let done = 0;
    while (done < into.length) {
      const { bytesRead } = await this.#handle.read(into, done, into.length - done, at + done);
      if (bytesRead === 0) throw new Error(`${this.#file.localPath} ended ${into.length - done} bytes early`);
      done += bytesRead;
    }
  }

  close(): Promise<void> {
    return this.#handle.close();
  }
}

/** The file's bytes [start, end) as a stream of chunks. */
export function readStream(file: LocalFile, start: number, end: number): Readable {
  return Readable.from(chunks(file, start, end), { objectMode: false });
}

async function* chunks(file: LocalFile, start: number, end: number): AsyncGenerator<Buffer> {
  if (end <= start) return;
  const reader = await LocalReader.open(file);
  try {
    for (let at = start; at < end; at += STREAM_CHUNK) {
      const chunk = Buffer.allocUnsafe(Math.min(STREAM_CHUNK, end - at));
      await reader.read(chunk, at);
      yield chunk;
    }
  } finally {
    await reader.close();
  }
}
