import { randomBytes, randomUUID, webcrypto } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  CredentialsError,
  columnsOf,
  decryptBytes,
  decryptDriveSecret,
  decryptJobSource,
  decryptS3Secret,
  decryptSecret,
  encryptBytes,
  encryptJobSource,
  encryptSecret,
  isCurrent,
  parseKeyring,
  reencryptJobSource,
  reencryptSecret,
  type SealedSecret,
  sealedOf,
  sealedSourceOf,
  sourceColumnsOf,
} from "./credentials.ts";

const key = (id: string) => `${id}:${randomBytes(32).toString("base64")}`;
const secret = {
  accessKeyId: "AKIAEXAMPLE1234",
  secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
};

function flipByte(base64: string, at: number): string {
  const bytes = Buffer.from(base64, "base64");
  bytes[at] = bytes[at]! ^ 0x01;
  return bytes.toString("base64");
}

describe("parseKeyring", () => {
  it("takes the first entry as the current key and keeps every id", () => {
    const ring = parseKeyring(` ${key("k2")} , ${key("k1")},`);
    expect(ring.current).toBe("k2");
    expect(ring.ids).toEqual(["k2", "k1"]);
  });

  it("accepts URL-safe base64 without padding", () => {
    const ring = parseKeyring(`local:${randomBytes(32).toString("base64url")}`);
    expect(ring.current).toBe("local");
  });

  it.each([
    ["", /CREDENTIALS_KEYS is empty/],
    ["nocolon", /CREDENTIALS_KEYS entry 1 is not in keyId:base64 form/],
    [`:${randomBytes(32).toString("base64")}`, /CREDENTIALS_KEYS entry 1: the key id/],
    ["k1:not base64!!", /CREDENTIALS_KEYS entry 1 \("k1"\): the key is not valid base64/],
    [
      `k1:${randomBytes(16).toString("base64")}`,
      /CREDENTIALS_KEYS entry 1 \("k1"\): the key must be 32 bytes, it is 16/,
    ],
    [`${key("a")},${key("a")}`, /CREDENTIALS_KEYS entry 2: the key id "a" appears more than once/],
  ])("rejects %j with a message naming the setting", (spec, message) => {
    expect(() => parseKeyring(spec)).toThrow(CredentialsError);
    expect(() => parseKeyring(spec)).toThrow(message);
  });

  it("never puts key material in its errors", () => {
    const material = randomBytes(31).toString("base64");
    try {
      parseKeyring(`k1:${material}`);
      expect.unreachable();
    } catch (error) {
      expect(String(error)).not.toContain(material);
    }
  });
});

describe("encryptSecret / decryptSecret", () => {
  const ring = parseKeyring(`${key("2026-01")},${key("2025-06")}`);
  const profileId = randomUUID();

  it("round-trips a JSON secret in the documented format", async () => {
    const sealed = await encryptSecret(ring, secret, profileId);
    expect(sealed.keyId).toBe("2026-01");
    expect(Buffer.from(sealed.iv, "base64")).toHaveLength(12);
    // ciphertext || 16-byte tag, standard padded base64
    expect(Buffer.from(sealed.ciphertext, "base64")).toHaveLength(JSON.stringify(secret).length + 16);
    expect(sealed.ciphertext).toMatch(/^[A-Za-z0-9+/]+=*$/);
    expect(JSON.stringify(sealed)).not.toContain(secret.secretAccessKey);
    expect(await decryptSecret(ring, sealed, profileId)).toEqual(secret);
    expect(await decryptS3Secret(ring, sealed, profileId)).toEqual(secret);
  });

  it("uses a fresh iv every time", async () => {
    const a = await encryptSecret(ring, secret, profileId);
    const b = await encryptSecret(ring, secret, profileId);
    expect(a.iv).not.toBe(b.iv);
    expect(a.ciphertext).not.toBe(b.ciphertext);
  });

  it("is plain AES-256-GCM with the profile id as additional data (what any other implementation must do)", async () => {
    const raw = randomBytes(32);
    const sealed = await encryptSecret(parseKeyring(`k:${raw.toString("base64")}`), secret, profileId);
    const cryptoKey = await webcrypto.subtle.importKey("raw", raw, "AES-GCM", false, ["decrypt"]);
    const plain = await webcrypto.subtle.decrypt(
      {
        name: "AES-GCM",
        iv: Buffer.from(sealed.iv, "base64"),
        additionalData: new TextEncoder().encode(profileId),
      },
      cryptoKey,
      Buffer.from(sealed.ciphertext, "base64"),
    );
    expect(JSON.parse(Buffer.from(plain).toString("utf8"))).toEqual(secret);
  });

  it("still decrypts secrets of an older key after rotation, and re-encrypts them with the new one", async () => {
    const old = `old:${randomBytes(32).toString("base64")}`;
    const before = parseKeyring(old);
    const sealed = await encryptSecret(before, secret, profileId);
    const fresh = key("new");
    const after = parseKeyring(`${fresh},${old}`);
    expect(isCurrent(after, sealed)).toBe(false);
    expect(await decryptSecret(after, sealed, profileId)).toEqual(secret);

    const rotated = await reencryptSecret(after, sealed, profileId);
    expect(rotated.keyId).toBe("new");
    expect(isCurrent(after, rotated)).toBe(true);
    expect(await decryptSecret(after, rotated, profileId)).toEqual(secret);
    // Once the old key is removed, only the re-encrypted secret opens.
    const newOnly = parseKeyring(fresh);
    expect(await decryptSecret(newOnly, rotated, profileId)).toEqual(secret);
    await expect(decryptSecret(newOnly, sealed, profileId)).rejects.toThrow(
      /"old", which is not in CREDENTIALS_KEYS/,
    );
  });

  it("fails on a tampered ciphertext, tag or iv", async () => {
    const sealed = await encryptSecret(ring, secret, profileId);
    const ciphertextBytes = Buffer.from(sealed.ciphertext, "base64").length;
    const tampered: SealedSecret[] = [
      { ...sealed, ciphertext: flipByte(sealed.ciphertext, 0) },
      { ...sealed, ciphertext: flipByte(sealed.ciphertext, ciphertextBytes - 1) },
      { ...sealed, iv: flipByte(sealed.iv, 5) },
      { ...sealed, ciphertext: Buffer.from(sealed.ciphertext, "base64").subarray(0, 20).toString("base64") },
    ];
    for (const bad of tampered) {
      await expect(decryptSecret(ring, bad, profileId)).rejects.toThrow(
        /does not decrypt with key "2026-01"/,
      );
    }
  });

  it("fails for another profile id (a ciphertext copied into another row)", async () => {
    const sealed = await encryptSecret(ring, secret, profileId);
    await expect(decryptSecret(ring, sealed, randomUUID())).rejects.toThrow(CredentialsError);
  });

  it("fails under another key with the same id", async () => {
    const sealed = await encryptSecret(ring, secret, profileId);
    await expect(decryptSecret(parseKeyring(key("2026-01")), sealed, profileId)).rejects.toThrow(
      /does not decrypt/,
    );
  });

  it("names an unknown key id clearly", async () => {
    const sealed = await encryptSecret(parseKeyring(key("retired")), secret, profileId);
    await expect(decryptSecret(ring, sealed, profileId)).rejects.toThrow(
      'the secret was encrypted with key "retired", which is not in CREDENTIALS_KEYS',
    );
  });

  it("rejects a malformed stored iv or ciphertext", async () => {
    const sealed = await encryptSecret(ring, secret, profileId);
    await expect(decryptSecret(ring, { ...sealed, iv: "%%%" }, profileId)).rejects.toThrow(
      /not valid base64/,
    );
    await expect(
      decryptSecret(ring, { ...sealed, iv: Buffer.alloc(16).toString("base64") }, profileId),
    ).rejects.toThrow(/iv is not 12 bytes/);
  });

  it("checks the shape of an S3 secret", async () => {
    const sealed = await encryptSecret(ring, { accessKeyId: "only" }, profileId);
    await expect(decryptS3Secret(ring, sealed, profileId)).rejects.toThrow(
      /lacks accessKeyId or secretAccessKey/,
    );
  });

  it("round-trips a Google Drive secret and checks its shape", async () => {
    const drive = {
      refreshToken: "1//0g-refresh-token-example",
      accessToken: "ya29.access-token-example",
      accessTokenExpiresAt: "2026-05-01T12:00:00.000Z",
    };
    const sealed = await encryptSecret(ring, drive, profileId);
    expect(JSON.stringify(sealed)).not.toContain(drive.refreshToken);
    expect(await decryptDriveSecret(ring, sealed, profileId)).toEqual(drive);
    const bare = await encryptSecret(ring, { refreshToken: "1//only" }, profileId);
    expect(await decryptDriveSecret(ring, bare, profileId)).toEqual({ refreshToken: "1//only" });
    for (const bad of [{ accessToken: "ya29.x" }, { refreshToken: "" }, secret]) {
      const wrong = await encryptSecret(ring, bad, profileId);
      await expect(decryptDriveSecret(ring, wrong, profileId)).rejects.toThrow(/lacks a refresh token/);
    }
    await expect(decryptDriveSecret(ring, sealed, randomUUID())).rejects.toThrow(CredentialsError);
  });

  it("maps to and from the storage_profiles columns", async () => {
    const sealed = await encryptSecret(ring, secret, profileId);
    const columns = columnsOf(sealed);
    expect(columns).toEqual({
      secretCiphertext: sealed.ciphertext,
      secretIv: sealed.iv,
      secretKeyId: sealed.keyId,
    });
    expect(sealedOf(columns)).toEqual(sealed);
  });
});

describe("encryptBytes / decryptBytes", () => {
  const ring = parseKeyring(key("k1"));

  it("round-trips bytes of any size, bound to what they belong to", async () => {
    for (const size of [0, 1, 100_000, 3 * 1024 * 1024 + 7]) {
      const bytes = new Uint8Array(randomBytes(size));
      const sealed = await encryptBytes(ring, bytes, "row-1");
      expect(await decryptBytes(ring, sealed, "row-1")).toEqual(bytes);
    }
    const sealed = await encryptBytes(ring, new Uint8Array([1, 2, 3]), "row-1");
    await expect(decryptBytes(ring, sealed, "row-2")).rejects.toThrow(/does not decrypt/);
  });

  it("refuses to bind to nothing", async () => {
    await expect(encryptBytes(ring, new Uint8Array([1]), "")).rejects.toThrow(CredentialsError);
  });
});

describe("job sources", () => {
  const ring = parseKeyring(`${key("2026-01")},${key("2025-06")}`);
  const jobId = randomUUID();
  const magnet =
    "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=Show&tr=https%3A%2F%2Ft.example%2Fpasskey-123%2Fannounce";

  it("round-trips a magnet and a .torrent, keeping only the kind in the clear", async () => {
    const sealed = await encryptJobSource(ring, { kind: "magnet", magnet }, jobId);
    expect(sealed.kind).toBe("magnet");
    expect(sealed.keyId).toBe("2026-01");
    expect(JSON.stringify(sealed)).not.toContain("passkey-123");
    expect(await decryptJobSource(ring, sealed, jobId)).toEqual({ kind: "magnet", magnet });
    const torrent = new Uint8Array(randomBytes(5000));
    const file = await encryptJobSource(ring, { kind: "torrent", torrent }, jobId);
    expect(await decryptJobSource(ring, file, jobId)).toEqual({ kind: "torrent", torrent });
  });

  it("is plain AES-256-GCM with jobs.source:<kind>:<job id> as additional data", async () => {
    const raw = randomBytes(32);
    const sealed = await encryptJobSource(
      parseKeyring(`k:${raw.toString("base64")}`),
      { kind: "magnet", magnet },
      jobId,
    );
    const cryptoKey = await webcrypto.subtle.importKey("raw", raw, "AES-GCM", false, ["decrypt"]);
    const plain = await webcrypto.subtle.decrypt(
      {
        name: "AES-GCM",
        iv: Buffer.from(sealed.iv, "base64"),
        additionalData: new TextEncoder().encode(`jobs.source:magnet:${jobId}`),
      },
      cryptoKey,
      Buffer.from(sealed.ciphertext, "base64"),
    );
    expect(Buffer.from(plain).toString("utf8")).toBe(magnet);
  });

  it("does not open for another job, for another kind, or as a storage secret", async () => {
    const sealed = await encryptJobSource(ring, { kind: "magnet", magnet }, jobId);
    await expect(decryptJobSource(ring, sealed, randomUUID())).rejects.toThrow(/does not decrypt/);
    await expect(decryptJobSource(ring, { ...sealed, kind: "torrent" }, jobId)).rejects.toThrow(
      /does not decrypt/,
    );
    await expect(decryptSecret(ring, sealed, jobId)).rejects.toThrow(/does not decrypt/);
  });

  it("re-encrypts with the current key and maps to and from the jobs columns", async () => {
    const oldSpec = key("old");
    const sealed = await encryptJobSource(parseKeyring(oldSpec), { kind: "magnet", magnet }, jobId);
    const newSpec = key("new");
    const rotated = await reencryptJobSource(parseKeyring(`${newSpec},${oldSpec}`), sealed, jobId);
    expect(rotated.keyId).toBe("new");
    expect(await decryptJobSource(parseKeyring(newSpec), rotated, jobId)).toEqual({ kind: "magnet", magnet });
    const columns = sourceColumnsOf(rotated);
    expect(columns).toEqual({
      sourceKind: "magnet",
      sourceCiphertext: rotated.ciphertext,
      sourceIv: rotated.iv,
      sourceKeyId: rotated.keyId,
    });
    expect(sealedSourceOf(columns)).toEqual(rotated);
    expect(
      sealedSourceOf({ sourceKind: "magnet", sourceCiphertext: null, sourceIv: null, sourceKeyId: null }),
    ).toBeUndefined();
  });
});
