// Secrets at rest: storage secrets (the edge encrypts them when a profile is
// saved, the worker decrypts them when it uploads) and job sources (a magnet
// link or .torrent carries private-tracker passkeys: the edge encrypts it when
// the job is created, the worker decrypts it when an attempt starts). Every
// side uses this module, so the formats below are defined in exactly one
// place. WebCrypto only: it runs unchanged in the Workers runtime, in Node 24
// and in browsers.
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
// Format of a job's source (jobs row), the same scheme
//   source_kind        "torrent" or "magnet", in the clear (job views show which it is)
//   source_key_id, source_iv, source_ciphertext   as secret_key_id, secret_iv, secret_ciphertext
//   additional data    the UTF-8 bytes of "jobs.source:<kind>:<jobs.id>": the ciphertext opens
//                      only for its own job and kind. The caller generates the job id first.
//   plaintext          the .torrent file's bytes as submitted, or the magnet link as UTF-8
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
//      (`columnsOf(...)`); likewise each job whose source_key_id is not the first key,
//      `reencryptJobSource(keyring, sealedSourceOf(row)!, row.id)` and `sourceColumnsOf(...)`.
//      Rows written concurrently are already on the new key.
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

/** Value of each base64 character, standard and URL-safe alike; -1 for anything else. */
const BASE64_VALUES = (() => {
  const values = new Int8Array(256).fill(-1);
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (let i = 0; i < alphabet.length; i++) values[alphabet.charCodeAt(i)] = i;
  values["-".charCodeAt(0)] = 62;
  values["_".charCodeAt(0)] = 63;
  return values;
})();

/** Decodes base64, standard or URL-safe, padding optional; undefined if it is not base64. */
function decodeBase64(text: string): Uint8Array<ArrayBuffer> | undefined {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 61) end--; // trailing "="
  if (end % 4 === 1) return undefined;
  const out = new Uint8Array(Math.floor((end * 3) / 4));
  let o = 0;
  let bits = 0;
  let count = 0;
  for (let i = 0; i < end; i++) {
    const code = text.charCodeAt(i);
    const value = code < 256 ? BASE64_VALUES[code]! : -1;
    if (value < 0) return undefined;
    bits = (bits << 6) | value;
    count += 6;
    if (count >= 8) {
      count -= 8;
      out[o++] = (bits >> count) & 0xff;
    }
  }
  return out;
}

const BASE64 = new TextEncoder().encode("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");

/** Standard padded base64. A table loop: a .torrent is megabytes, and btoa wants a string of it first. */
function encodeBase64(bytes: Uint8Array): string {
  const out = new Uint8Array(Math.ceil(bytes.length / 3) * 4);
  let o = 0;
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out[o++] = BASE64[n >> 18]!;
    out[o++] = BASE64[(n >> 12) & 63]!;
    out[o++] = BASE64[(n >> 6) & 63]!;
    out[o++] = BASE64[n & 63]!;
  }
  const left = bytes.length - i;
  if (left > 0) {
    const n = (bytes[i]! << 16) | (left === 2 ? bytes[i + 1]! << 8 : 0);
    out[o++] = BASE64[n >> 18]!;
    out[o++] = BASE64[(n >> 12) & 63]!;
    out[o++] = left === 2 ? BASE64[(n >> 6) & 63]! : 61; // "="
    out[o++] = 61;
  }
  return new TextDecoder().decode(out);
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

function additionalData(boundTo: string): Uint8Array<ArrayBuffer> {
  if (boundTo === "") throw new CredentialsError("a secret must be bound to the row it belongs to");
  return utf8(boundTo);
}

/**
 * Encrypts `plaintext` with the current key. `boundTo` (the additional data)
 * names what the ciphertext belongs to, e.g. its row's id: it opens only with
 * the same `boundTo`, so a ciphertext copied into another row does not decrypt.
 */
export async function encryptBytes(
  keyring: Keyring,
  plaintext: Uint8Array,
  boundTo: string,
): Promise<SealedSecret> {
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: additionalData(boundTo) },
    await keyring.key(keyring.current),
    // A copy only when the bytes are not on a plain ArrayBuffer, as WebCrypto wants.
    plaintext.buffer instanceof ArrayBuffer
      ? (plaintext as Uint8Array<ArrayBuffer>)
      : new Uint8Array(plaintext),
  );
  return { ciphertext: encodeBase64(new Uint8Array(sealed)), iv: encodeBase64(iv), keyId: keyring.current };
}

/** Decrypts what `encryptBytes` made for `boundTo`, with whichever configured key made it. */
export async function decryptBytes(
  keyring: Keyring,
  sealed: SealedSecret,
  boundTo: string,
): Promise<Uint8Array> {
  const key = await keyring.key(sealed.keyId);
  const iv = decodeBase64(sealed.iv);
  const data = decodeBase64(sealed.ciphertext);
  if (!iv || !data) throw new CredentialsError("the stored secret is not valid base64");
  if (iv.length !== IV_BYTES) throw new CredentialsError(`the stored secret's iv is not ${IV_BYTES} bytes`);
  try {
    return new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv, additionalData: additionalData(boundTo) },
        key,
        data,
      ),
    );
  } catch {
    throw new CredentialsError(
      `the stored secret does not decrypt with key "${sealed.keyId}": it was altered, belongs to another row, or the key is wrong`,
    );
  }
}

/** Encrypts `plaintext` (JSON) with the current key, bound to the storage profile `profileId`. */
export async function encryptSecret(
  keyring: Keyring,
  plaintext: object,
  profileId: string,
): Promise<SealedSecret> {
  return encryptBytes(keyring, utf8(JSON.stringify(plaintext)), profileId);
}

/** Decrypts a secret of the storage profile `profileId` with whichever configured key made it. */
export async function decryptSecret(
  keyring: Keyring,
  sealed: SealedSecret,
  profileId: string,
): Promise<unknown> {
  const plain = await decryptBytes(keyring, sealed, profileId);
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

// --- Job sources -----------------------------------------------------------------

export const jobSourceKinds = ["torrent", "magnet"] as const;
export type JobSourceKind = (typeof jobSourceKinds)[number];

/** What a job's submitter handed in: the .torrent file's bytes or the magnet link. */
export type JobSource = { kind: "torrent"; torrent: Uint8Array } | { kind: "magnet"; magnet: string };

/** A job's encrypted source: which kind it is (in the clear) and the sealed bytes. */
export interface SealedJobSource extends SealedSecret {
  kind: JobSourceKind;
}

/** The additional data of a job's source: its kind and its job's id. */
function jobSourceBinding(kind: JobSourceKind, jobId: string): string {
  if (jobId === "") throw new CredentialsError("a job source must be bound to its job id");
  return `jobs.source:${kind}:${jobId}`;
}

/** Encrypts a job's source with the current key, bound to the job `jobId` and to its kind. */
export async function encryptJobSource(
  keyring: Keyring,
  source: JobSource,
  jobId: string,
): Promise<SealedJobSource> {
  const plaintext = source.kind === "torrent" ? source.torrent : utf8(source.magnet);
  const sealed = await encryptBytes(keyring, plaintext, jobSourceBinding(source.kind, jobId));
  return { kind: source.kind, ...sealed };
}

/** Decrypts the source of the job `jobId`; a ciphertext from another job or of another kind fails. */
export async function decryptJobSource(
  keyring: Keyring,
  sealed: SealedJobSource,
  jobId: string,
): Promise<JobSource> {
  const plain = await decryptBytes(keyring, sealed, jobSourceBinding(sealed.kind, jobId));
  if (sealed.kind === "torrent") return { kind: "torrent", torrent: plain };
  try {
    return {
      kind: "magnet",
      magnet: new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(plain),
    };
  } catch {
    throw new CredentialsError("the stored magnet link is not UTF-8");
  }
}

/** Decrypts with whichever key made it and encrypts again with the current key (fresh iv). */
export async function reencryptJobSource(
  keyring: Keyring,
  sealed: SealedJobSource,
  jobId: string,
): Promise<SealedJobSource> {
  return encryptJobSource(keyring, await decryptJobSource(keyring, sealed, jobId), jobId);
}

/** The source columns of a jobs row, as a SealedJobSource; undefined while it has none. */
export function sealedSourceOf(row: {
  sourceKind: JobSourceKind;
  sourceCiphertext: string | null;
  sourceIv: string | null;
  sourceKeyId: string | null;
}): SealedJobSource | undefined {
  if (row.sourceCiphertext === null || row.sourceIv === null || row.sourceKeyId === null) return undefined;
  return { kind: row.sourceKind, ciphertext: row.sourceCiphertext, iv: row.sourceIv, keyId: row.sourceKeyId };
}

/** A SealedJobSource as the jobs columns it is stored in. */
export function sourceColumnsOf(sealed: SealedJobSource): {
  sourceKind: JobSourceKind;
  sourceCiphertext: string;
  sourceIv: string;
  sourceKeyId: string;
} {
  return {
    sourceKind: sealed.kind,
    sourceCiphertext: sealed.ciphertext,
    sourceIv: sealed.iv,
    sourceKeyId: sealed.keyId,
  };
}
