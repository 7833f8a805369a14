import { env } from "cloudflare:workers";
import { EgressPolicy, encryptSecret, parseKeyring } from "@torreclou/contracts";
import { describe, expect, it } from "vitest";
import { ConfigError, parseConfig } from "../config.ts";
import { maskAccessKeyId, viewOf } from "./profiles.ts";
import { checkEndpoint, checkS3, isIpOrLocalhost, objectUrl, type S3Target } from "./s3.ts";

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
  const none = new EgressPolicy();

  it("takes public https origins", () => {
    expect(checkEndpoint("https://s3.example.com/", none)).toEqual({
      ok: true,
      origin: "https://s3.example.com",
      host: "s3.example.com",
    });
    expect(checkEndpoint("https://s3.example.com:8443", none)).toMatchObject({
      origin: "https://s3.example.com:8443",
    });
    expect(checkEndpoint("https://[2606:4700::1111]", none)).toMatchObject({ ok: true });
  });

  it.each([
    ["https://127.0.0.1:9000", "127.0.0.1 is a loopback address"],
    ["https://localhost", "localhost is a loopback name"],
    ["https://localhost.", "localhost. is a loopback name"],
    ["https://api.localhost", "api.localhost is a loopback name"],
    ["https://10.1.2.3", "10.1.2.3 is a private network address"],
    ["https://169.254.169.254", "169.254.169.254 is a link-local address"],
    ["https://metadata.google.internal", "metadata.google.internal is a local-network name"],
    ["https://[::1]:9000", "[::1] is a loopback address"],
    ["https://[fd00::1]", "[fd00::1] is a unique-local"],
    ["https://[fec0::1]", "[fec0::1] is a site-local"],
    ["https://[::ffff:192.168.1.1]", "is an IPv4-mapped form of a private network address (192.168.1.1)"],
    ["https://[::ffff:7f00:1]", "is an IPv4-mapped form of a loopback address (127.0.0.1)"],
    ["https://[::7f00:1]", "is an IPv4-compatible form of a loopback address (127.0.0.1)"],
    ["https://[64:ff9b::a9fe:a9fe]", "is a NAT64 form of a link-local address"],
    ["https://2130706433", "127.0.0.1 is a loopback address"],
    ["https://0x7f.1", "127.0.0.1 is a loopback address"],
    ["https://198.18.0.1", "198.18.0.1 is a"],
    ["https://192.0.0.8", "192.0.0.8 is a"],
    ["https://224.0.0.1", "224.0.0.1 is a multicast address"],
    ["https://255.255.255.255", "255.255.255.255 is a broadcast address"],
    ["https://100.64.0.1", "100.64.0.1 is a carrier-grade NAT address"],
    ["https://0.0.0.0", "0.0.0.0 is an unspecified address"],
    ["https://fileserver", "fileserver is a single-label name"],
  ])("refuses %s, naming the host and why", (raw, why) => {
    const checked = checkEndpoint(raw, none);
    expect(checked.ok).toBe(false);
    if (!checked.ok) {
      expect(checked.reason).toMatch(/^must be a public host: /);
      expect(checked.reason).toContain(why);
    }
  });

  it("says exactly what is wrong with a loopback endpoint", () => {
    expect(checkEndpoint("https://127.0.0.1", none)).toEqual({
      ok: false,
      reason: "must be a public host: 127.0.0.1 is a loopback address",
    });
  });

  it.each([
    ["http://s3.example.com", "must use https://"],
    ["https://s3.example.com/bucket", "must be just scheme, host and port"],
    ["https://s3.example.com?x=1", "must be just scheme, host and port"],
    ["https://u:p@s3.example.com", "must not contain a user name or password"],
    ["ftp://s3.example.com", "must be an https:// URL"],
    ["not a url", "must be a URL"],
  ])("refuses %s", (raw, why) => {
    const checked = checkEndpoint(raw, none);
    expect(checked.ok).toBe(false);
    if (!checked.ok) expect(checked.reason).toContain(why);
  });

  it("lets through exactly the host:port the operator allows, and only those over http", () => {
    const policy = EgressPolicy.fromSpec("127.0.0.1:4569, [::1]:9000, s3.lan.example.com:80");
    expect(checkEndpoint("http://127.0.0.1:4569", policy)).toEqual({
      ok: true,
      origin: "http://127.0.0.1:4569",
      host: "127.0.0.1",
    });
    expect(checkEndpoint("https://127.0.0.1:4569", policy)).toMatchObject({ ok: true });
    expect(checkEndpoint("http://[::1]:9000", policy)).toMatchObject({ ok: true });
    expect(checkEndpoint("http://s3.lan.example.com", policy)).toMatchObject({ ok: true });
    // Another port of an allowed host, or another spelling of loopback, is not the exception.
    expect(checkEndpoint("http://127.0.0.1:4570", policy)).toMatchObject({
      ok: false,
      reason: "must be a public host: 127.0.0.1 is a loopback address",
    });
    expect(checkEndpoint("http://localhost:4569", policy)).toMatchObject({ ok: false });
    expect(checkEndpoint("http://127.0.0.2:4569", policy)).toMatchObject({ ok: false });
    // A public host still needs https unless it is an exception itself.
    expect(checkEndpoint("http://s3.example.com", policy)).toEqual({
      ok: false,
      reason: "must use https://",
    });
    expect(checkEndpoint("http://s3.lan.example.com:8080", policy)).toEqual({
      ok: false,
      reason: "must use https://",
    });
  });

  it("needs forcePathStyle only for IP and localhost endpoints", () => {
    for (const host of ["127.0.0.1", "[::1]", "localhost", "a.localhost", "8.8.8.8"])
      expect(isIpOrLocalhost(host), host).toBe(true);
    for (const host of ["s3.example.com", "1.example.com"]) expect(isIpOrLocalhost(host), host).toBe(false);
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
    // The probe server accepts the connection and never answers, so the timeout is the only way out.
    const result = await checkS3(
      {
        endpoint: env.PROBE_ORIGIN,
        region: "us-east-1",
        bucket: "silent",
        prefix: "",
        forcePathStyle: true,
      },
      { accessKeyId: env.S3_ACCESS_KEY_ID, secretAccessKey: "y" },
      { timeoutMs: 200 },
    );
    expect(result).toMatchObject({
      ok: false,
      failure: { code: "Timeout", message: expect.stringContaining(`${env.PROBE_ORIGIN} did not answer`) },
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

describe("EGRESS_ALLOW setting", () => {
  const { EGRESS_ALLOW: _, ...without } = env as unknown as Record<string, unknown>;

  it("is parsed into the egress policy's exact exceptions", () => {
    expect(parseConfig({ ...without }).EGRESS_ALLOW.allowed).toEqual([]);
    const config = parseConfig({ ...without, EGRESS_ALLOW: "127.0.0.1:4569 [::1]:9000,minio.lan:9000" });
    expect(config.EGRESS_ALLOW.allows("127.0.0.1", 4569)).toBe(true);
    expect(config.EGRESS_ALLOW.allows("::1", 9000)).toBe(true);
    expect(config.EGRESS_ALLOW.allows("minio.lan", 9000)).toBe(true);
    expect(config.EGRESS_ALLOW.allows("127.0.0.1", 9000)).toBe(false);
  });

  it("refuses a malformed entry, naming it", () => {
    expect(() => parseConfig({ ...without, EGRESS_ALLOW: "127.0.0.1:4569,::1:9000" })).toThrow(ConfigError);
    expect(() => parseConfig({ ...without, EGRESS_ALLOW: "127.0.0.1:4569,::1:9000" })).toThrow(
      /EGRESS_ALLOW: "::1:9000" is not host:port/,
    );
    expect(() => parseConfig({ ...without, EGRESS_ALLOW: "s3.lan" })).toThrow(/EGRESS_ALLOW: "s3.lan"/);
  });

  it("replaces ALLOW_PRIVATE_STORAGE_ENDPOINTS, which is refused rather than ignored", () => {
    expect(() => parseConfig({ ...without, ALLOW_PRIVATE_STORAGE_ENDPOINTS: "true" })).toThrow(
      /ALLOW_PRIVATE_STORAGE_ENDPOINTS: is no longer read: list the exact host:port exceptions in EGRESS_ALLOW/,
    );
    expect(() => parseConfig({ ...without, ALLOW_PRIVATE_STORAGE_ENDPOINTS: "false" })).not.toThrow();
  });
});
