// Test-only packages without type declarations: the parts the tests use.

declare module "bencode" {
  const bencode: {
    encode(value: unknown): Uint8Array;
    decode(bytes: Uint8Array): unknown;
  };
  export default bencode;
}

declare module "memory-chunk-store" {
  /** A chunk store that keeps pieces in memory (none until written). */
  export default class MemoryChunkStore {
    constructor(chunkLength: number, opts?: { length?: number });
  }
}
