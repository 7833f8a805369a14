// The BitTorrent wire (bittorrent-protocol, patched to cut messages out of the
// received chunks instead of copying every chunk into one buffer): messages
// must come out whole however the byte stream is split or joined on the way.
import { createHash, randomBytes } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import Wire from "bittorrent-protocol";
import { describe, expect, it } from "vitest";

const BLOCK = 16 * 1024;

/** Re-cuts a byte stream into slices of random sizes: from single bytes to several messages at once. */
function rechunker(seed: number): Transform {
  let state = seed;
  const next = () => {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    return state;
  };
  let pending: Buffer[] = [];
  let timer: NodeJS.Immediate | undefined;
  const emit = (stream: Transform, all: boolean) => {
    let data = Buffer.concat(pending);
    pending = [];
    while (data.length > 0) {
      const size = next() % 3 === 0 ? 1 + (next() % 7) : 1 + (next() % 70_000);
      if (size > data.length && !all) break;
      stream.push(data.subarray(0, size));
      data = data.subarray(size);
    }
    if (data.length > 0) pending.push(data);
  };
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback) {
      pending.push(chunk);
      emit(this, false);
      // Whatever is left goes out once the writer pauses, so nothing waits forever.
      if (timer) clearImmediate(timer);
      timer = setImmediate(() => emit(this, true));
      done();
    },
  });
}

function piece(index: number, offset: number, length: number): Buffer {
  // Deterministic bytes per block, so the receiver can check what it got.
  const out = Buffer.alloc(length);
  let counter = 0;
  for (let at = 0; at < length; at += 32) {
    createHash("sha256").update(`${index}:${offset}:${counter++}`).digest().copy(out, at);
  }
  return out;
}

/** Handshakes `leecher` with `seeder`, which unchokes it and has pieces 0 to `pieces - 1`. */
async function handshaken(seeder: Wire, leecher: Wire, pieces: number): Promise<void> {
  const infoHash = randomBytes(20).toString("hex");
  seeder.on("handshake", () => {
    seeder.handshake(infoHash, randomBytes(20).toString("hex"));
    seeder.unchoke();
    for (let i = 0; i < pieces; i++) seeder.have(i);
  });
  const unchoked = new Promise<void>((resolve) => leecher.once("unchoke", () => resolve()));
  leecher.handshake(infoHash, randomBytes(20).toString("hex"));
  await unchoked;
}

/** Requests every [index, offset, length] at once; the blocks in the order asked. */
function fetchAll(leecher: Wire, wanted: [number, number, number][]): Promise<Buffer[]> {
  return Promise.all(
    wanted.map(
      ([index, offset, length]) =>
        new Promise<Buffer>((resolve, reject) => {
          leecher.request(index, offset, length, (error: Error | null, data?: Uint8Array) =>
            error || !data ? reject(error ?? new Error("no data")) : resolve(Buffer.from(data)),
          );
        }),
    ),
  );
}

/** Four full blocks of each of pieces 0 to 5. */
function sixPieces(): [number, number, number][] {
  const wanted: [number, number, number][] = [];
  for (let index = 0; index < 6; index++) {
    for (let offset = 0; offset < 4 * BLOCK; offset += BLOCK) wanted.push([index, offset, BLOCK]);
  }
  return wanted;
}

describe("BitTorrent wire framing", () => {
  for (const seed of [1, 7, 42]) {
    it(`delivers every message whole through a stream re-cut at random (seed ${seed})`, async () => {
      const seeder = new Wire();
      const leecher = new Wire();
      seeder.pipe(rechunker(seed)).pipe(leecher);
      leecher.pipe(rechunker(seed + 1)).pipe(seeder);

      const haves: number[] = [];
      leecher.on("have", (index: number) => haves.push(index));
      seeder.on("request", (index: number, offset: number, length: number, respond) => {
        respond(null, piece(index, offset, length));
      });
      await handshaken(seeder, leecher, 50);

      const wanted = sixPieces();
      wanted.push([6, 0, 1234]); // a short last block
      const received = await fetchAll(leecher, wanted);
      for (const [i, [index, offset, length]] of wanted.entries()) {
        expect(received[i]?.equals(piece(index, offset, length))).toBe(true);
      }
      expect(haves).toEqual(Array.from({ length: 50 }, (_, i) => i));
      seeder.destroy();
      leecher.destroy();
    });
  }

  // The patch matches an answer to the oldest request first (peers answer in
  // order); a peer that answers out of order must still have every answer
  // reach its own request.
  it("matches answers sent out of order to their own requests", async () => {
    const seeder = new Wire();
    const leecher = new Wire();
    seeder.pipe(leecher).pipe(seeder);
    const wanted = sixPieces();
    const asked: (() => void)[] = [];
    seeder.on("request", (index: number, offset: number, length: number, respond) => {
      asked.push(() => respond(null, piece(index, offset, length)));
      // Answer all at once, newest first, once the last request is in.
      if (asked.length === wanted.length) for (const answer of asked.reverse()) answer();
    });
    await handshaken(seeder, leecher, 6);

    const received = await fetchAll(leecher, wanted);
    for (const [i, [index, offset, length]] of wanted.entries()) {
      expect(received[i]?.equals(piece(index, offset, length))).toBe(true);
    }
    expect(leecher.requests).toHaveLength(0);
    seeder.destroy();
    leecher.destroy();
  });

  // The patch marks answered requests at the front of the pipeline and cuts
  // them off in batches instead of shifting the array once per block: what is
  // still outstanding must behave as before when the peer chokes or times out.
  describe("a long pipeline answered in order", () => {
    const count = 150; // more than one batch of answered requests (64)

    async function answeredUpTo(answered: number) {
      const seeder = new Wire();
      const leecher = new Wire();
      seeder.pipe(leecher).pipe(seeder);
      const answers: (() => void)[] = [];
      const allAsked = new Promise<void>((resolve) =>
        seeder.on("request", (index: number, offset: number, length: number, respond) => {
          answers.push(() => respond(null, piece(index, offset, length)));
          if (answers.length === count) resolve();
        }),
      );
      await handshaken(seeder, leecher, count);
      const outcomes: (Buffer | Error)[] = [];
      const settled = Array.from(
        { length: count },
        (_, index) =>
          new Promise<void>((resolve) =>
            leecher.request(index, 0, BLOCK, (error: Error | null, data?: Uint8Array) => {
              outcomes[index] = error ?? Buffer.from(data!);
              resolve();
            }),
          ),
      );
      await allAsked;
      for (const answer of answers.slice(0, answered)) answer();
      await Promise.all(settled.slice(0, answered));
      return { seeder, leecher, outcomes, settled };
    }

    it("delivers every answer and leaves nothing outstanding", async () => {
      const { seeder, leecher, outcomes, settled } = await answeredUpTo(count);
      await Promise.all(settled);
      for (let index = 0; index < count; index++) {
        expect((outcomes[index] as Buffer).equals(piece(index, 0, BLOCK))).toBe(true);
      }
      expect(leecher.requests).toHaveLength(0);
      seeder.destroy();
      leecher.destroy();
    });

    it("fails exactly the unanswered requests when the peer chokes", async () => {
      const { seeder, leecher, outcomes, settled } = await answeredUpTo(70);
      seeder.choke();
      await Promise.all(settled);
      for (let index = 0; index < count; index++) {
        const outcome = outcomes[index];
        if (index < 70) expect((outcome as Buffer).equals(piece(index, 0, BLOCK))).toBe(true);
        else expect((outcome as Error).message).toBe("peer is choking");
      }
      expect(leecher.requests).toHaveLength(0);
      seeder.destroy();
      leecher.destroy();
    });

    it("times out the oldest unanswered request, not an answered one", async () => {
      const { seeder, leecher, outcomes } = await answeredUpTo(70);
      const timedOut = new Promise<void>((resolve) => leecher.once("timeout", () => resolve()));
      leecher.setTimeout(100);
      leecher.request(0, BLOCK, BLOCK, () => {}); // sets the timer: no answer will come
      await timedOut;
      // The wire fails the request before it says it timed out.
      expect((outcomes[70] as Error | undefined)?.message).toBe("request has timed out");
      expect(outcomes[71]).toBeUndefined();
      seeder.destroy();
      leecher.destroy();
    });
  });
});
