import { describe, expect, it } from "vitest";
import { type EtaEstimate, EtaEstimator, type EtaSample } from "./eta.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** A small deterministic generator, so every run sees the same "network". */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

interface Simulation {
  total: number;
  /** Download speed between stalls, bytes/s; pieces arrive whole, at uneven times. */
  downRate: number;
  pieceSize: number;
  /** Upload speed while sending, bytes/s; a part goes out once its data is downloaded. */
  upRate: number;
  partSize: number;
  /** How often the worker samples its counters, ms. */
  tickMs: number;
  seed: number;
}

interface Tick {
  at: number;
  estimate: EtaEstimate;
  /** When the job really finished, minus now, in seconds (filled in afterwards). */
  actualLeft: number;
}

/**
 * A job as the worker sees it: pieces of `pieceSize` land after uneven gaps
 * (about `downRate` on average, with stalls); the uploader sends whole parts at `upRate` once a
 * part's bytes are downloaded and reports them sent and stored when the part
 * is done.
 */
function simulate(sim: Simulation): Tick[] {
  const next = random(sim.seed);
  const estimator = new EtaEstimator();
  const ticks: Tick[] = [];
  let downloaded = 0;
  let nextPieceAt = 0;
  let uploaded = 0;
  let sent = 0;
  let partSent = 0;
  let at = 0;
  for (; uploaded < sim.total; at += sim.tickMs) {
    // Pieces arriving up to now, each after an exponential gap (mean piece ÷ rate).
    while (nextPieceAt <= at && downloaded < sim.total) {
      downloaded = Math.min(sim.total, downloaded + sim.pieceSize);
      // ±50 % around the mean gap, and now and then a peer choking us for 3 s.
      const mean = (sim.pieceSize * 1000) / sim.downRate;
      nextPieceAt += mean * (0.5 + next()) + (next() < 0.05 ? 3000 : 0);
    }
    // The uploader: sends the current part while its bytes are there.
    let budget = (sim.upRate * sim.tickMs) / 1000;
    while (budget > 0 && uploaded < sim.total) {
      const partEnd = Math.min(sim.total, uploaded + sim.partSize);
      if (downloaded < partEnd) break; // starved: the part's data is not downloaded yet
      const step = Math.min(budget, partEnd - uploaded - partSent);
      partSent += step;
      budget -= step;
      if (uploaded + partSent >= partEnd) {
        // Sent and stored are both reported when the part is through, as the S3 sink does.
        sent += partSent;
        uploaded = partEnd;
        partSent = 0;
      }
    }
    const sample: EtaSample = { at, total: sim.total, downloaded, uploaded, sent };
    ticks.push({ at, estimate: estimator.sample(sample), actualLeft: 0 });
  }
  for (const tick of ticks) tick.actualLeft = (at - tick.at) / 1000;
  return ticks;
}

/** The estimate once a second, from `from` s on, while at least `floor` s are left. */
function everySecond(ticks: Tick[], from: number, floor: number): Tick[] {
  return ticks.filter((t) => t.at % 1000 === 0 && t.at >= from * 1000 && t.actualLeft >= floor);
}

function assertSteady(ticks: Tick[]): void {
  expect(ticks.length).toBeGreaterThan(20);
  for (let i = 1; i < ticks.length; i++) {
    const before = ticks[i - 1]!.estimate.etaSeconds;
    const now = ticks[i]!.estimate.etaSeconds;
    expect(before, `no estimate at ${ticks[i - 1]!.at} ms`).not.toBeNull();
    expect(now, `no estimate at ${ticks[i]!.at} ms`).not.toBeNull();
    const ratio = now! / before!;
    expect(ratio, `ETA ${before} s → ${now} s at ${ticks[i]!.at} ms`).toBeGreaterThanOrEqual(0.75);
    expect(ratio, `ETA ${before} s → ${now} s at ${ticks[i]!.at} ms`).toBeLessThanOrEqual(1.25);
  }
}

/**
 * Near the truth: within a factor of two (the stalls make the rate of the
 * next minute differ from the last one's), never minutes for days.
 */
function assertClose(ticks: Tick[]): void {
  for (const tick of ticks) {
    const eta = tick.estimate.etaSeconds!;
    expect(eta / tick.actualLeft, `ETA ${eta} s with ${tick.actualLeft} s really left`).toBeGreaterThan(0.5);
    expect(eta / tick.actualLeft, `ETA ${eta} s with ${tick.actualLeft} s really left`).toBeLessThan(2);
  }
}

describe("EtaEstimator", () => {
  it("has no basis before anything moved, and 0 once everything is stored", () => {
    const eta = new EtaEstimator();
    expect(eta.sample({ at: 0, total: 10 * MiB, downloaded: 0, uploaded: 0, sent: 0 }).etaSeconds).toBeNull();
    expect(
      eta.sample({ at: 500, total: 10 * MiB, downloaded: 0, uploaded: 0, sent: 0 }).etaSeconds,
    ).toBeNull();
    expect(eta.sample({ at: 1000, total: 0, downloaded: 0, uploaded: 0, sent: 0 }).etaSeconds).toBeNull();
    const done = eta.sample({ at: 1500, total: 10 * MiB, downloaded: 10 * MiB, uploaded: 10 * MiB, sent: 0 });
    expect(done.etaSeconds).toBe(0);
  });

  it("stays within ±25 % from one second to the next while the download is the bottleneck", () => {
    // The case that used to read 3 min 55 s, then 33 days: 300 KiB/s down,
    // parts of 5 MiB sent at 4 MiB/s, so the uploader idles between parts.
    const ticks = simulate({
      total: 45 * MiB,
      downRate: 300 * KiB,
      pieceSize: 256 * KiB,
      upRate: 4 * MiB,
      partSize: 5 * MiB,
      tickMs: 500,
      seed: 7,
    });
    const steady = everySecond(ticks, 20, 30);
    assertSteady(steady);
    assertClose(steady);
    // The rate shown is the download's, not zero between pieces.
    for (const tick of steady) expect(tick.estimate.down).toBeGreaterThan(100 * KiB);
  });

  it("stays within ±25 % when the upload is the bottleneck", () => {
    const ticks = simulate({
      total: 200 * MiB,
      downRate: 8 * MiB,
      pieceSize: MiB,
      upRate: 1.5 * MiB,
      partSize: 8 * MiB,
      tickMs: 500,
      seed: 11,
    });
    const steady = everySecond(ticks, 20, 30);
    assertSteady(steady);
    assertClose(steady);
  });

  it("does not take a tiny file stored first for a slow upload", () => {
    // A 275-byte README is stored at once; the big files still download at 250 KiB/s.
    const eta = new EtaEstimator();
    let last: number | null = null;
    for (let second = 0; second <= 10; second++) {
      const downloaded = second * 250 * KiB;
      const sent = second >= 1 ? 275 : 0;
      last = eta.sample({ at: second * 1000, total: 5 * MiB, downloaded, uploaded: sent, sent }).etaSeconds;
    }
    // 2.56 MiB left at 250 KiB/s: about 10 s, not hours.
    expect(last).toBeGreaterThanOrEqual(8);
    expect(last).toBeLessThanOrEqual(15);
  });

  it("does not read a stalled second as days left", () => {
    const eta = new EtaEstimator();
    let downloaded = 0;
    let last: number | null = null;
    for (let second = 0; second <= 30; second++) {
      // 300 KiB/s, except nothing at all in seconds 20 and 21.
      if (second > 0 && second !== 20 && second !== 21) downloaded += 300 * KiB;
      last = eta.sample({ at: second * 1000, total: 45 * MiB, downloaded, uploaded: 0, sent: 0 }).etaSeconds;
      if (second === 19) expect(last).toBeGreaterThan(100);
      if (second === 21) expect(last).toBeLessThan(300);
    }
    expect(last).not.toBeNull();
  });
});
