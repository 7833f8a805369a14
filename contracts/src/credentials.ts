// Storage secrets at rest: the edge encrypts them when a profile is saved, the
// worker decrypts them when it uploads. Both use this module, so the format
// below is defined in exactly one place. WebCrypto only: it runs unchanged in
// the Workers runtime, in Node 24 and in browsers.
//
// Format of a storage_profiles row
//   secret_key_id      id of the key that encrypted the secret (from CREDENTIALS_KEYS)
//   secret_iv          base64 (standard alphabet, padded) of a fresh random 12-byte nonce
//   secret_ciphertext  base64 of AES-256-GCM ciphertext || 16-byte tag (WebCrypto's output)
//   additional data    the UTF-8 bytes of the row's own id (storage_profiles.id, the
//                      lowercase uuid text). A ciphertext therefore opens only for the
//                      profile it was made for: copying it into another row (another
//                      user's profile, say) makes decryption fail instead of handing the
//                      credentials to that row's owner. The caller generates the id
//                      before inserting the row, and passes the row's id when decrypting.
//   plaintext          UTF-8 JSON; for kind "s3": {"accessKeyId": "...", "secretAccessKey": "..."};
//                      for kind "gdrive": {"refreshToken": "...", "accessToken"?: "...",
//                      "accessTokenExpiresAt"?: "<ISO 8601>"} (the access token is a cache
//                      the workers refresh and write back)
//
// Setting
//   CREDENTIALS_KEYS = "keyId:base64key[,keyId:base64key...]", each key 32 random bytes
//   (e.g. `openssl rand -base64 32`), key ids of letters, digits, ".", "_" or "-".
//   The FIRST entry encrypts; every entry decrypts. Edge and worker get the same value.
//
// Rotating a key
//   1. Add the new key as the SECOND entry everywhere (edge and workers) and deploy:
//      everything can now decrypt with it, nothing encrypts with it yet.
//   2. Move it to the FIRST place and deploy: new and updated profiles use it.
//   3. Re-encrypt old rows: for each row whose secret_key_id is not the first key,
//      `reencryptSecret(keyring, sealedOf(row), row.id)` and write the three columns back
//      (`columnsOf(...)`). Rows written concurrently are already on the new key.
//   4. When no row names the old key id any more, remove it from CREDENTIALS_KEYS.
import { z } from "zod";

/** The three stored columns of an encrypted secret. */
export interface SealedSecret {
  /** base64(ciphertext || tag) */
  ciphertext: string;
  /** base64(12-byte nonce) */
  iv: string;
  keyId: string;
}

/** The plaintext secret of an S3-compatible profile. */
export const S3Secret = z.object({
  accessKeyId: z.string().min(1),
  secretAccessKey: z.string().min(1),
});
export type S3Secret = z.infer<typeof S3Secret>;

/**
 * The plaintext secret of a Google Drive profile: the OAuth refresh token of
 * the user's grant and, once a worker has refreshed it, the current access
 * token and when it expires (ISO 8601), so other workers can reuse it.
 */
export const DriveSecret = z.object({
  refreshToken: z.string().min(1),
  accessToken: z.string().min(1).optional(),
  accessTokenExpiresAt: z.iso.datetime({ offset: true }).optional(),
});
export type DriveSecret = z.infer<typeof DriveSecret>;

/** A malformed key ring, an unknown key id, or a secret that does not decrypt. Never carries key material. */
export class CredentialsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CredentialsError";
  }
}

/** WebCrypto's key type, named without DOM or Node typings. */
type CryptoKey = Awaited<ReturnType<typeof crypto.subtle.importKey>>;

export interface Keyring {
  /** The key id new secrets are encrypted with (the first entry). */
  readonly current: string;
  /** Every configured key id, the current one first. */
  readonly ids: readonly string[];
  /** The AES-GCM key for `id`; rejects with a CredentialsError if it is not configured. */
  key(id: string): Promise<CryptoKey>;
}

const KEY_BYTES = 32;
const IV_BYTES = 12;
const KEY_ID = /^[A-Za-z0-9._-]{1,64}$/;
const SETTING = "CREDENTIALS_KEYS";

/** Decodes base64, standard or URL-safe, padding optional; undefined if it is not base64. */
function decodeBase64(text: string): Uint8Array<ArrayBuffer> | undefined {
  const normal = text.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  if (!/^[A-Za-z0-9+/]*$/.test(normal) || normal.length % 4 === 1) return undefined;
  const binary = atob(normal.padEnd(Math.ceil(normal.length / 4) * 4, "="));
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

function encodeBase64(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/**
 * Parses the CREDENTIALS_KEYS setting. Call it once (per process or isolate)
 * and keep the result: keys are imported into WebCrypto on first use and cached.
 */
export function parseKeyring(spec: string): Keyring {
  const raw = new Map<string, Uint8Array<ArrayBuffer>>();
  const entries = spec
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
  if (entries.length === 0) {
    throw new CredentialsError(`${SETTING} is empty: set it to keyId:base64(32 random bytes)`);
  }
  entries.forEach((entry, index) => {
    const at = entry.indexOf(":");
    const where = `${SETTING} entry ${index + 1}`;
    if (at < 0) throw new CredentialsError(`${where} is not in keyId:base64 form`);
    const id = entry.slice(0, at).trim();
    if (!KEY_ID.test(id)) {
      throw new CredentialsError(
        `${where}: the key id must be 1-64 letters, digits, ".", "_" or "-"${id ? ` (got "${id.slice(0, 64)}")` : ""}`,
      );
    }
    const bytes = decodeBase64(entry.slice(at + 1).trim());
    if (!bytes) throw new CredentialsError(`${where} ("${id}"): the key is not valid base64`);
    if (bytes.length !== KEY_BYTES) {
      throw new CredentialsError(
        `${where} ("${id}"): the key must be ${KEY_BYTES} bytes, it is ${bytes.length}`,
      );
    }
    if (raw.has(id)) throw new CredentialsError(`${where}: the key id "${id}" appears more than once`);
    raw.set(id, bytes);
  });
  const ids = [...raw.keys()];
  const imported = new Map<string, Promise<CryptoKey>>();
  return {
    current: ids[0]!,
    ids,
    key(id) {
      let key = imported.get(id);
      if (!key) {
        const bytes = raw.get(id);
        if (!bytes) {
          return Promise.reject(
            new CredentialsError(`the secret was encrypted with key "${id}", which is not in ${SETTING}`),
          );
        }
        key = crypto.subtle.importKey("raw", bytes, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
        imported.set(id, key);
      }
      return key;
    },
  };
}

/** UTF-8 bytes, typed as WebCrypto wants them in every runtime's typings. */
function utf8(text: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new TextEncoder().encode(text));
}

function additionalData(profileId: string): Uint8Array<ArrayBuffer> {
  if (profileId === "") throw new CredentialsError("a secret must be bound to its storage profile id");
  return utf8(profileId);
}

/** Encrypts `plaintext` (JSON) with the current key, bound to the storage profile `profileId`. */
export async function encryptSecret(
  keyring: Keyring,
  plaintext: object,
  profileId: string,
): Promise<SealedSecret> {
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const data = utf8(JSON.stringify(plaintext));
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: additionalData(profileId) },
    await keyring.key(keyring.current),
    data,
  );
  return { ciphertext: encodeBase64(new Uint8Array(sealed)), iv: encodeBase64(iv), keyId: keyring.current };
}

/** Decrypts a secret of the storage profile `profileId` with whichever configured key made it. */
export async function decryptSecret(
  keyring: Keyring,
  sealed: SealedSecret,
  profileId: string,
): Promise<unknown> {
  const key = await keyring.key(sealed.keyId);
  const iv = decodeBase64(sealed.iv);
  const data = decodeBase64(sealed.ciphertext);
  if (!iv || !data) throw new CredentialsError("the stored secret is not valid base64");
  if (iv.length !== IV_BYTES) throw new CredentialsError(`the stored secret's iv is not ${IV_BYTES} bytes`);
  let plain: ArrayBuffer;
  try {
    plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv, additionalData: additionalData(profileId) },
      key,
      data,
    );
  } catch {
    throw new CredentialsError(
      `the stored secret does not decrypt with key "${sealed.keyId}": it was altered, belongs to another profile, or the key is wrong`,
    );
  }
  try {
    return JSON.parse(new TextDecoder().decode(plain)) as unknown;
  } catch {
    throw new CredentialsError("the stored secret is not JSON");
  }
}

/** Decrypts an S3 profile's secret and checks its shape. */
export async function decryptS3Secret(
  keyring: Keyring,
  sealed: SealedSecret,
  profileId: string,
): Promise<S3Secret> {
  const parsed = S3Secret.safeParse(await decryptSecret(keyring, sealed, profileId));
  if (!parsed.success)
    throw new CredentialsError("the stored S3 secret lacks accessKeyId or secretAccessKey");
  return parsed.data;
}

/** Decrypts a Google Drive profile's secret and checks its shape. */
export async function decryptDriveSecret(
  keyring: Keyring,
  sealed: SealedSecret,
  profileId: string,
): Promise<DriveSecret> {
  const parsed = DriveSecret.safeParse(await decryptSecret(keyring, sealed, profileId));
  if (!parsed.success) throw new CredentialsError("the stored Google Drive secret lacks a refresh token");
  return parsed.data;
}

/** True if the secret is already encrypted with the current key (nothing to rotate). */
export function isCurrent(keyring: Keyring, sealed: SealedSecret): boolean {
  return sealed.keyId === keyring.current;
}

/** Decrypts with whichever key made it and encrypts again with the current key (fresh iv). */
export async function reencryptSecret(
  keyring: Keyring,
  sealed: SealedSecret,
  profileId: string,
): Promise<SealedSecret> {
  const plaintext = await decryptSecret(keyring, sealed, profileId);
  if (plaintext === null || typeof plaintext !== "object") {
    throw new CredentialsError("the stored secret is not a JSON object");
  }
  return encryptSecret(keyring, plaintext, profileId);
}

/** The stored columns of a storage_profiles row, as a SealedSecret. */
export function sealedOf(row: {
  secretCiphertext: string;
  secretIv: string;
  secretKeyId: string;
}): SealedSecret {
  return { ciphertext: row.secretCiphertext, iv: row.secretIv, keyId: row.secretKeyId };
}

/** A SealedSecret as the storage_profiles columns it is stored in. */
export function columnsOf(sealed: SealedSecret): {
  secretCiphertext: string;
  secretIv: string;
  secretKeyId: string;
} {
  return { secretCiphertext: sealed.ciphertext, secretIv: sealed.iv, secretKeyId: sealed.keyId };
}
