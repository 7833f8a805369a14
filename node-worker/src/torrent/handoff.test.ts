import { expect, it } from "vitest";
import { Handoff } from "./handoff.ts";

const bytes = (from: number, length: number) => Uint8Array.from({ length }, (_, i) => (from + i) % 251);

it("copies what falls in a claim, says what is missing, and takes a piece only if claims hold all of it", () => {
  const handoff = new Handoff();
  const part = new Uint8Array(100);
  const claim = handoff.claim(3, 1000, part);
  // Another file's bytes, and bytes before the claim, are not taken.
  expect(handoff.take(2, 1000, bytes(1000, 10))).toBe(false);
  expect(handoff.take(3, 990, bytes(990, 10))).toBe(false);
  // Inside: taken whole.
  expect(handoff.take(3, 1020, bytes(1020, 30))).toBe(true);
  // Across the claim's end: copied in part, not taken (it goes to disk too).
  expect(handoff.take(3, 1090, bytes(1090, 20))).toBe(false);
  expect(part.subarray(20, 50)).toEqual(bytes(1020, 30));
  expect(part.subarray(90, 100)).toEqual(bytes(1090, 10));
  expect(claim.missing()).toEqual([
    [0, 20],
    [50, 90],
  ]);
  // Neighbouring fills merge.
  expect(handoff.take(3, 1000, bytes(1000, 20))).toBe(true);
  expect(claim.missing()).toEqual([[50, 90]]);
  claim.release();
  expect(handoff.take(3, 1050, bytes(1050, 40))).toBe(false);
  expect(claim.missing()).toEqual([[50, 90]]);
});

it("takes a piece that spans two claims of one file", () => {
  const handoff = new Handoff();
  const [a, b] = [new Uint8Array(50), new Uint8Array(50)];
  handoff.claim(0, 0, a);
  handoff.claim(0, 50, b);
  expect(handoff.take(0, 40, bytes(40, 20))).toBe(true);
  expect(a.subarray(40)).toEqual(bytes(40, 10));
  expect(b.subarray(0, 10)).toEqual(bytes(50, 10));
});
