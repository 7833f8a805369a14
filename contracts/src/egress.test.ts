import { describe, expect, it } from "vitest";
import {
  classifyAddress,
  classifyHost,
  EgressPolicy,
  EgressRefusedError,
  isEgressRefused,
  parseAllowList,
} from "./egress.ts";

const refused = [
  "127.0.0.1",
  "127.8.9.10",
  "0.0.0.0",
  "10.0.0.1",
  "172.16.5.4",
  "192.168.1.1",
  "100.64.0.1",
  "169.254.169.254",
  "198.18.0.1",
  "192.0.0.192",
  "192.0.2.1",
  "198.51.100.7",
  "203.0.113.9",
  "224.0.0.251",
  "239.192.152.143",
  "255.255.255.255",
  "240.0.0.1",
  "::",
  "::1",
  "fe80::1",
  "fec0::1",
  "fc00::1",
  "fd00:ec2::254",
  "ff02::1",
  "2001:db8::1",
  "::ffff:127.0.0.1",
  "::ffff:7f00:1",
  "::ffff:10.0.0.1",
  "::7f00:1",
  "::ffff:0:7f00:1",
  "64:ff9b::a9fe:a9fe",
  "64:ff9b::7f00:1",
  "64:ff9b:1::1",
  "2002:7f00:1::",
  "2002:c0a8:101::1",
  "fe80::1%eth0",
];
const allowed = [
  "8.8.8.8",
  "1.1.1.1",
  "93.184.216.34",
  "2606:4700::1111",
  "::ffff:8.8.8.8",
  "64:ff9b::808:808",
  "2002:808:808::1",
];

describe("classifyAddress", () => {
  it.each(refused)("refuses %s", (address) => {
    const verdict = classifyAddress(address);
    expect(verdict.allowed).toBe(false);
  });
  it.each(allowed)("allows %s", (address) => {
    expect(classifyAddress(address)).toEqual({ allowed: true });
  });
  it("says what kind of address it refused", () => {
    expect(classifyAddress("127.0.0.1")).toEqual({ allowed: false, reason: "a loopback address" });
    expect(classifyAddress("64:ff9b::a9fe:a9fe")).toMatchObject({
      reason: expect.stringContaining("NAT64 form of a link-local address"),
    });
  });
});

describe("classifyHost (before DNS)", () => {
  it.each([
    "localhost",
    "localhost.",
    "LOCALHOST",
    "a.localhost",
    "[::1]",
    "[::7f00:1]",
    "[64:ff9b::a9fe:a9fe]",
    "[fec0::1]",
    "198.18.0.1",
    "192.0.0.1",
    "224.0.0.1",
    "255.255.255.255",
    "2130706433",
    "0x7f.1",
    "0177.0.0.1",
    "metadata.google.internal",
    "metadata.google.internal.",
    "metadata",
    "printer.local",
    "nas.home.arpa",
    "minio",
  ])("refuses %s", (host) => {
    expect(classifyHost(host).allowed).toBe(false);
  });
  it.each(["s3.amazonaws.com", "s3.eu-central-003.backblazeb2.com", "8.8.8.8", "[2606:4700::1111]"])(
    "lets %s through to the DNS check",
    (host) => {
      expect(classifyHost(host)).toEqual({ allowed: true });
    },
  );
});

describe("EgressPolicy", () => {
  const policy = EgressPolicy.fromSpec("127.0.0.1:4569, [::1]:6969 localhost:8080");

  it("allows exactly the listed host:port", () => {
    expect(policy.checkHost("127.0.0.1", 4569)).toEqual({ allowed: true });
    expect(policy.checkHost("127.0.0.1", 4570).allowed).toBe(false);
    expect(policy.checkHost("127.0.0.2", 4569).allowed).toBe(false);
    expect(policy.checkHost("[::1]", 6969)).toEqual({ allowed: true });
    expect(policy.checkHost("0:0::1", 6969)).toEqual({ allowed: true });
    expect(policy.checkAddress("localhost", 8080, "127.0.0.1")).toEqual({ allowed: true });
    expect(policy.checkAddress("evil.example", 8080, "127.0.0.1").allowed).toBe(false);
  });

  it("checks the resolved address of any other name", () => {
    expect(policy.checkAddress("tracker.example", 80, "10.1.2.3")).toMatchObject({ allowed: false });
    expect(policy.checkAddress("tracker.example", 80, "8.8.4.4")).toEqual({ allowed: true });
  });

  it("names a bad entry", () => {
    expect(() => parseAllowList("127.0.0.1")).toThrow('"127.0.0.1" is not host:port');
    expect(() => parseAllowList("::1:80")).toThrow("brackets");
    expect(() => parseAllowList("a.example:0")).toThrow();
    expect(parseAllowList(undefined)).toEqual([]);
  });

  it("refusals carry a message naming the destination", () => {
    const error = new EgressRefusedError("tracker.example", 6969, "a loopback address", "127.0.0.1");
    expect(error.message).toBe(
      "Connection to tracker.example (127.0.0.1):6969 refused by the egress policy: it is a loopback address.",
    );
    expect(isEgressRefused(error)).toBe(true);
    expect(isEgressRefused(Object.assign(new Error("x"), { code: "EGRESS_REFUSED" }))).toBe(true);
    expect(isEgressRefused(new Error("x"))).toBe(false);
  });
});
