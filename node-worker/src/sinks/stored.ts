// For uploads that go in order and are checked by a hash of the whole file
// (Drive, OneDrive, Dropbox): the local bytes a session holds and the hash has
// read are no longer needed, so the job's disk window may free them. Hashing
// goes a chunk at a time, freeing as it goes, so that a resumed file larger
// than the disk budget can be checked too.
import type { Logger } from "pino";
import type { UploadHooks } from "./index.ts";

/** A running hash over a file, read in order up to `at`. */
export interface InOrderHash {
  readonly at: number;
  catchUp(end: number): Promise<void>;
}

export interface StoredInOrder {
  /** Frees what is both held by the session (`held` bytes from the start) and hashed. */
  free(held: number): Promise<void>;
  /** Hashes up to `end`, a `chunk` at a time, freeing up to `held` as it goes. */
  hashUpTo(end: number, held: number): Promise<void>;
}

export function storedInOrder(
  hooks: UploadHooks,
  hash: InOrderHash,
  chunk: number,
  log: Pick<Logger, "warn">,
  path: string,
): StoredInOrder {
  let freedTo = 0;
  const free = async (held: number) => {
    const upTo = Math.min(held, hash.at);
    if (upTo <= freedTo || !hooks.onStored) return;
    const from = freedTo;
    freedTo = upTo;
    // Freeing is housekeeping: a failure keeps the bytes, not the upload from going on.
    await hooks
      .onStored(from, upTo)
      .catch((error: unknown) => log.warn({ err: error, path }, "could not free stored bytes locally"));
  };
  const hashUpTo = async (end: number, held: number) => {
    while (hash.at < end) {
      const next = Math.min(end, hash.at + chunk);
      await hooks.ready(hash.at, next);
      await hash.catchUp(next);
      await free(held);
    }
  };
  return { free, hashUpTo };
}
