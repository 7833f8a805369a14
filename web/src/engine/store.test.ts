import { describe, expect, it } from "vitest";
import { WindowStore } from "./store.ts";

const get = (store: WindowStore, index: number, opts: { offset?: number; length?: number } | null = null) =>
  new Promise<Uint8Array>((resolve, reject) =>
    store.get(index, opts, (err, buf) => (err ? reject(err) : resolve(buf!))),
  );
const put = (store: WindowStore, index: number, buf: Uint8Array) =>
  new Promise<void>((resolve, reject) => store.put(index, buf, (err) => (err ? reject(err) : resolve())));

describe("WindowStore", () => {
  it("holds pieces until released, and answers ranges of them", async () => {
    const store = new WindowStore(4);
    await put(store, 0, Uint8Array.of(1, 2, 3, 4));
    await put(store, 1, Uint8Array.of(5, 6, 7, 8));
    expect([...(await get(store, 1, { offset: 1, length: 2 }))]).toEqual([6, 7]);
    expect(store.heldBytes).toBe(8);
    store.releaseBelow(1);
    await expect(get(store, 0)).rejects.toThrow(/not held/);
    expect([...(await get(store, 1))]).toEqual([5, 6, 7, 8]);
    expect(store.heldBytes).toBe(4);
  });

  it("keeps nothing behind the released point, and nothing once closed", async () => {
    const store = new WindowStore(4);
    store.releaseBelow(3);
    await put(store, 2, Uint8Array.of(1, 1, 1, 1));
    expect(store.heldBytes).toBe(0);
    await put(store, 3, Uint8Array.of(1, 1, 1, 1));
    await new Promise<void>((resolve) => store.destroy(() => resolve()));
    expect(store.heldBytes).toBe(0);
    await expect(put(store, 4, Uint8Array.of(1))).rejects.toThrow(/closed/);
  });
});
