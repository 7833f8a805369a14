import { randomBytes, randomUUID } from "node:crypto";
import { CredentialsError, encryptJobSource, parseKeyring, sourceColumnsOf } from "@torreclou/contracts";
import { describe, expect, it } from "vitest";
import { openSource } from "./store.ts";

const ring = parseKeyring(`k1:${randomBytes(32).toString("base64")}`);
const magnet =
  "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&tr=https%3A%2F%2Ft.example%2Fpasskey%2Fannounce";

async function jobWith(source: Parameters<typeof encryptJobSource>[1], id = randomUUID()) {
  return { id, ...sourceColumnsOf(await encryptJobSource(ring, source, id)) };
}

describe("openSource", () => {
  it("decrypts the job's own magnet and .torrent", async () => {
    expect(await openSource(ring, await jobWith({ kind: "magnet", magnet }))).toBe(magnet);
    const bytes = new Uint8Array([1, 2, 3]);
    expect(await openSource(ring, await jobWith({ kind: "torrent", torrent: bytes }))).toEqual(bytes);
  });

  it("refuses a ciphertext copied from another job's row", async () => {
    const other = await jobWith({ kind: "magnet", magnet });
    await expect(openSource(ring, { ...other, id: randomUUID() })).rejects.toThrow(CredentialsError);
  });

  it("refuses a source whose kind was changed in its row", async () => {
    const job = await jobWith({ kind: "magnet", magnet });
    await expect(openSource(ring, { ...job, sourceKind: "torrent" })).rejects.toThrow(/does not decrypt/);
  });

  it("refuses a job whose source is not encrypted yet, saying what to run", async () => {
    const legacy = {
      id: randomUUID(),
      sourceKind: "magnet" as const,
      sourceCiphertext: null,
      sourceIv: null,
      sourceKeyId: null,
    };
    await expect(openSource(ring, legacy)).rejects.toThrow(/npm run migrate/);
  });
});
