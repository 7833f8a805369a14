import { env } from "cloudflare:workers";
import { encryptSecret, parseKeyring } from "@torreclou/contracts";
import { describe, expect, it } from "vitest";
import { ConfigError, parseConfig } from "../config.ts";
import { maskAccessKeyId, viewOf } from "./profiles.ts";
import { checkEndpoint, checkS3, isPrivateHost, objectUrl, type S3Target } from "./s3.ts";

const target = (over: Partial<S3Target> = {}): S3Target => ({
  region: "eu-west-1",
  bucket: "my-bucket",
  prefix: "",
  forcePathStyle: false,
  ...over,
});

describe("objectUrl", () => {
  it("addresses buckets as the AWS SDK does", () => {
    expect(objectUrl(target(), "a b/c+d.txt").toString()).toBe(
      "https://my-bucket.s3.eu-west-1.amazonaws.com/a%20b/c%2Bd.txt",
    );
    expect(objectUrl(target({ forcePathStyle: true }), "k").toString()).toBe(
      "https://s3.eu-west-1.amazonaws.com/my-bucket/k",
    );
    // A dotted bucket cannot be a TLS host name: path style.
    expect(objectUrl(target({ bucket: "my.bucket" }), "k").toString()).toBe(
      "https://s3.eu-west-1.amazonaws.com/my.bucket/k",
    );
    expect(
      objectUrl(target({ endpoint: "https://acct.r2.cloudflarestorage.com", region: "auto" }), "").toString(),
    ).toBe("https://my-bucket.acct.r2.cloudflarestorage.com/");
    expect(
      objectUrl(target({ endpoint: "http://127.0.0.1:9000", forcePathStyle: true }), "p/q").toString(),
    ).toBe("http://127.0.0.1:9000/my-bucket/p/q");
  });
});

describe("checkEndpoint", () => {
  it("takes public https origins", () => {
    expect(checkEndpoint("https://s3.example.com/", false)).toEqual({
      ok: true,
      origin: "https://s3.example.com",
      host: "s3.example.com",
    });
    expect(checkEndpoint("https://s3.example.com:8443", false)).toMatchObject({
      origin: "https://s3.example.com:8443",
    });
  });

  it.each([
    "http://s3.example.com",
    "https://127.0.0.1:9000",
    "https://localhost",
    "https://10.1.2.3",
    "https://169.254.169.254",
    "https://[::1]:9000",
    "https://[fd00::1]",
    "https://[::ffff:192.168.1.1]",
    "https://[::ffff:7f00:1]",
    "https://2130706433",
    "https://s3.example.com/bucket",
    "https://s3.example.com?x=1",
    "https://u:p@s3.example.com",
    "ftp://s3.example.com",
  ])("refuses %s in production", (raw) => {
    expect(checkEndpoint(raw, false).ok).toBe(false);
  });

  it("allows private hosts, over http too, only when told to", () => {
    expect(checkEndpoint("http://127.0.0.1:4569", true)).toMatchObject({
      ok: true,
      origin: "http://127.0.0.1:4569",
    });
    expect(checkEndpoint("http://localhost:9000", true)).toMatchObject({ ok: true });
    expect(checkEndpoint("http://s3.example.com", true)).toEqual({ ok: false, reason: "must use https://" });
  });

  it("knows private hosts", () => {
    for (const host of [
      "127.0.0.1",
      "10.0.0.1",
      "172.16.5.4",
      "192.168.0.1",
      "100.64.0.1",
      "0.0.0.0",
      "[::1]",
      "a.localhost",
    ])
      expect(isPrivateHost(host), host).toBe(true);
    for (const host of ["8.8.8.8", "172.32.0.1", "s3.amazonaws.com", "[2001:db8::1]"])
      expect(isPrivateHost(host), host).toBe(false);
  });
});

describe("checkS3", () => {
  it("passes against the local S3 and leaves nothing behind", async () => {
    const result = await checkS3(
      {
        endpoint: env.S3_ENDPOINT,
        region: env.S3_REGION,
        bucket: env.S3_BUCKET,
        prefix: `unit/${crypto.randomUUID()}`,
        forcePathStyle: true,
      },
      { accessKeyId: env.S3_ACCESS_KEY_ID, secretAccessKey: env.S3_SECRET_ACCESS_KEY },
    );
    expect(result).toEqual({ ok: true, warnings: [] });
  });

  it("explains an endpoint that is not S3", async () => {
    // The Upstash stand-in speaks HTTP but not S3.
    const url = new URL(env.UPSTASH_REDIS_REST_URL);
    const result = await checkS3(
      { endpoint: url.origin, region: "us-east-1", bucket: "b-1", prefix: "", forcePathStyle: true },
      { accessKeyId: "x", secretAccessKey: "y" },
    );
    expect(result.ok).toBe(false);
    if (!result.ok)
      expect(result.failure.message).toMatch(/is it an S3-compatible endpoint\?|The provider said/);
  });

  it("times out naming the endpoint", async () => {
    // A routable address that never answers is not available offline; a tiny timeout makes any endpoint late.
    const result = await checkS3(
      {
        endpoint: env.S3_ENDPOINT,
        region: "us-east-1",
        bucket: env.S3_BUCKET,
        prefix: "",
        forcePathStyle: true,
      },
      { accessKeyId: env.S3_ACCESS_KEY_ID, secretAccessKey: "y" },
      { timeoutMs: 1 },
    );
    expect(result).toMatchObject({
      ok: false,
      failure: { code: "Timeout", message: expect.stringContaining(`${env.S3_ENDPOINT} did not answer`) },
    });
  });
});

describe("profile view", () => {
  it("masks access key ids", () => {
    expect(maskAccessKeyId("AKIAIOSFODNN7EXAMPLE")).toBe("AKIA…MPLE");
    expect(maskAccessKeyId("torreclou")).toBe("…lou");
    expect(maskAccessKeyId("short")).toBe("…");
  });

  it("shows a profile whose key was removed from the ring without its access key id", async () => {
    const id = crypto.randomUUID();
    const old = parseKeyring(`old:${btoa("o".repeat(32))}`);
    const sealed = await encryptSecret(
      old,
      { accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "s" },
      id,
    );
    const row = {
      id,
      kind: "s3" as const,
      name: "n",
      isDefault: true,
      status: "active" as const,
      config: { region: "us-east-1", bucket: "b-1" },
      secretCiphertext: sealed.ciphertext,
      secretIv: sealed.iv,
      secretKeyId: sealed.keyId,
      createdAt: new Date(0),
      updatedAt: new Date(0),
    };
    expect((await viewOf(old, row)).s3?.accessKeyId).toBe("AKIA…MPLE");
    // Rotated: the new key first, the old one still there.
    const rotated = parseKeyring(`new:${btoa("n".repeat(32))},old:${btoa("o".repeat(32))}`);
    expect((await viewOf(rotated, row)).s3?.accessKeyId).toBe("AKIA…MPLE");
    // Old key dropped too early: the profile still lists, its key id shows as unreadable.
    const dropped = parseKeyring(`new:${btoa("n".repeat(32))}`);
    expect((await viewOf(dropped, row)).s3).toMatchObject({ accessKeyId: null, bucket: "b-1", prefix: "" });
  });
});

describe("CREDENTIALS_KEYS setting", () => {
  it("is required and must parse, with errors that name it", () => {
    const { CREDENTIALS_KEYS: _, ...without } = env as unknown as Record<string, unknown>;
    expect(() => parseConfig({ ...without })).toThrow(/CREDENTIALS_KEYS: is required/);
    expect(() => parseConfig({ ...without, CREDENTIALS_KEYS: "k1:c2hvcnQ=" })).toThrow(ConfigError);
    expect(() => parseConfig({ ...without, CREDENTIALS_KEYS: "k1:c2hvcnQ=" })).toThrow(
      /CREDENTIALS_KEYS: entry 1 \("k1"\): the key must be 32 bytes, it is 5/,
    );
    const config = parseConfig({
      ...without,
      CREDENTIALS_KEYS: `a:${btoa("a".repeat(32))},b:${btoa("b".repeat(32))}`,
    });
    expect(config.CREDENTIALS_KEYS.ids).toEqual(["a", "b"]);
  });
});
