// The egress policy: which addresses the edge and the workers may connect to
// on a user's behalf (storage endpoints, trackers, web seeds, `xs`/`as`
// sources, peers, webhooks). One policy, defined here, used by both sides:
//
// - The edge checks what it can see without DNS (IP literals and special
//   names) when a user hands it a URL.
// - The worker checks every address it actually connects to, after DNS
//   resolution, so a name that resolves to a private address later (DNS
//   rebinding, or a name only the fleet's network knows) does not help.
//
// Only globally routable unicast addresses are allowed. Everything else —
// loopback, private, link-local (cloud metadata lives there), CGNAT, unique-
// and site-local, multicast, broadcast, reserved, documentation and
// benchmarking ranges, and the IPv6 forms that embed such an IPv4 address
// (::ffff:-mapped, IPv4-compatible, NAT64, 6to4) — is refused unless the
// operator allows an exact host:port. Range data comes from ipaddr.js.
import ipaddr from "ipaddr.js";

export type Verdict = { allowed: true } | { allowed: false; reason: string };

const ALLOWED: Verdict = { allowed: true };
const refuse = (reason: string): Verdict => ({ allowed: false, reason });

/** How a person reads each ipaddr.js range name. */
const rangeNames: Record<string, string> = {
  unspecified: "an unspecified address",
  broadcast: "a broadcast address",
  multicast: "a multicast address",
  linkLocal: "a link-local address (cloud metadata services live there)",
  loopback: "a loopback address",
  carrierGradeNat: "a carrier-grade NAT address",
  private: "a private network address",
  reserved: "a reserved, documentation or benchmarking address",
  uniqueLocal: "a unique-local (private) IPv6 address",
  deprecatedSiteLocal: "a site-local (private) IPv6 address",
  discard: "a discard-only IPv6 address",
  teredo: "a Teredo tunnel address",
  benchmarking: "a benchmarking address",
  amt: "an AMT relay address",
  as112: "an AS112 address",
  as112v6: "an AS112 address",
  deprecated: "a deprecated address range",
  deprecatedOrchid: "an ORCHID address",
  orchid2: "an ORCHID address",
  droneRemoteIdProtocolEntityTags: "a drone remote-ID address",
  rfc6052: "a local-use NAT64 address",
};

function describeRange(range: string): string {
  return rangeNames[range] ?? `a special-purpose address (${range})`;
}

function classifyV4(ip: ipaddr.IPv4, embeddedIn?: string): Verdict {
  const range = ip.range();
  if (range === "unicast") return ALLOWED;
  const what = describeRange(range);
  return refuse(embeddedIn ? `${embeddedIn} of ${what} (${ip.toString()})` : what);
}

/** The IPv4 address an IPv6 form carries, for the forms that route to it. */
function embeddedV4(ip: ipaddr.IPv6): { v4: ipaddr.IPv4; form: string } | undefined {
  const p = ip.parts;
  const v4At = (hi: number, lo: number) => new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
  const range = ip.range();
  if (range === "ipv4Mapped") return { v4: ip.toIPv4Address(), form: "an IPv4-mapped form" };
  if (range === "rfc6145") return { v4: v4At(p[6]!, p[7]!), form: "an IPv4-translated form" };
  // 64:ff9b::/96, the well-known NAT64 prefix (64:ff9b:1::/48 is local-use, refused as such).
  if (range === "rfc6052" && p[2] === 0 && p[3] === 0 && p[4] === 0 && p[5] === 0)
    return { v4: v4At(p[6]!, p[7]!), form: "a NAT64 form" };
  if (range === "6to4") return { v4: v4At(p[1]!, p[2]!), form: "a 6to4 form" };
  // ::/96, the deprecated IPv4-compatible form (ipaddr.js calls it unicast).
  if (p.slice(0, 6).every((x) => x === 0) && (p[6] !== 0 || p[7]! > 1))
    return { v4: v4At(p[6]!, p[7]!), form: "an IPv4-compatible form" };
  return undefined;
}

/** Whether an IP address (no brackets, no port) may be connected to. */
export function classifyAddress(address: string): Verdict {
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    // Zone ids (fe80::1%eth0) are link-local by definition.
    if (address.includes("%")) return refuse(describeRange("linkLocal"));
    ip = ipaddr.parse(address);
  } catch {
    return refuse("not an IP address");
  }
  if (ip.kind() === "ipv4") return classifyV4(ip as ipaddr.IPv4);
  const v6 = ip as ipaddr.IPv6;
  const embedded = embeddedV4(v6);
  if (embedded) return classifyV4(embedded.v4, embedded.form);
  const range = v6.range();
  return range === "unicast" ? ALLOWED : refuse(describeRange(range));
}

export function isIpLiteral(host: string): boolean {
  return ipaddr.isValid(unbracket(host)) && !/^\d+$/.test(unbracket(host));
}

function unbracket(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/**
 * Names that never lead anywhere public: localhost and its subdomains,
 * mDNS, the private-use and internal suffixes, cloud metadata names, and
 * single-label names (resolved through a search domain on the host's own network).
 */
function classifyName(name: string): Verdict {
  const host = name.toLowerCase().replace(/\.+$/, "");
  if (host === "") return refuse("an empty host name");
  if (host === "localhost" || host.endsWith(".localhost")) return refuse("a loopback name");
  if (/(^|\.)(local|internal|intranet|lan|home\.arpa|corp|private)$/.test(host))
    return refuse("a local-network name");
  if (host === "metadata" || host === "instance-data" || host.startsWith("metadata.google."))
    return refuse("a cloud metadata name");
  if (!host.includes(".")) return refuse("a single-label name, which only the local network resolves");
  return ALLOWED;
}

/**
 * What can be said about a host before resolving it: an IP literal (brackets
 * allowed) is classified, a name is refused if it can only be local. A name
 * that passes still has to pass `classifyAddress` once resolved.
 */
export function classifyHost(host: string): Verdict {
  const bare = unbracket(host);
  if (ipaddr.isValid(bare)) {
    // Non-canonical IPv4 (2130706433, 0x7f.1, 0177.0.0.1): classify the address it means.
    if (ipaddr.IPv4.isValid(bare) && !ipaddr.IPv4.isValidFourPartDecimal(bare)) {
      return classifyAddress(ipaddr.IPv4.parse(bare).toString());
    }
    return classifyAddress(bare);
  }
  return classifyName(bare);
}

/** An exact host:port the operator allows despite the policy. */
export interface AllowedTarget {
  host: string;
  port: number;
}

/** Canonical form of a host for comparing allow entries: lowercase, no brackets or trailing dot, IPs normalised. */
export function normalHost(host: string): string {
  const bare = unbracket(host.trim().toLowerCase()).replace(/\.+$/, "");
  if (ipaddr.isValid(bare)) return ipaddr.parse(bare).toString();
  return bare;
}

/**
 * Parses the operator's allow list: `host:port` entries separated by commas
 * or whitespace, IPv6 hosts in brackets (`[::1]:9000`). Throws an Error
 * naming the bad entry.
 */
export function parseAllowList(spec: string | undefined): AllowedTarget[] {
  const out: AllowedTarget[] = [];
  for (const entry of (spec ?? "").split(/[\s,]+/).filter(Boolean)) {
    const match = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]/]+):(\d{1,5})$/.exec(entry);
    const port = match ? Number(match[2]) : Number.NaN;
    if (!match || port < 1 || port > 65535) {
      throw new Error(`"${entry}" is not host:port (an IPv6 host goes in brackets, e.g. [::1]:9000)`);
    }
    out.push({ host: normalHost(match[1]!), port });
  }
  return out;
}

/** The policy with the operator's exceptions. */
export class EgressPolicy {
  readonly allowed: readonly AllowedTarget[];

  constructor(allowed: readonly AllowedTarget[] = []) {
    this.allowed = allowed;
  }

  static fromSpec(spec: string | undefined): EgressPolicy {
    return new EgressPolicy(parseAllowList(spec));
  }

  /** An exact exception for this host (as written, before resolution) and port. */
  allows(host: string, port: number): boolean {
    const h = normalHost(host);
    return this.allowed.some((a) => a.host === h && a.port === port);
  }

  /** Before DNS: allowed exactly, or a host that may be public. */
  checkHost(host: string, port: number): Verdict {
    return this.allows(host, port) ? ALLOWED : classifyHost(host);
  }

  /** After DNS: `host` as the caller named it, `address` what it resolved to. */
  checkAddress(host: string, port: number, address: string): Verdict {
    return this.allows(host, port) ? ALLOWED : classifyAddress(address);
  }
}

/** A connection the policy refused; `message` names the destination and why. */
export class EgressRefusedError extends Error {
  readonly code = "EGRESS_REFUSED";
  readonly host: string;
  readonly port: number;
  readonly address: string | undefined;
  readonly reason: string;
  constructor(host: string, port: number, reason: string, address?: string) {
    const where = address && normalHost(address) !== normalHost(host) ? `${host} (${address})` : host;
    super(`Connection to ${where}:${port} refused by the egress policy: it is ${reason}.`);
    this.name = "EgressRefusedError";
    this.host = host;
    this.port = port;
    this.address = address;
    this.reason = reason;
  }
}

export function isEgressRefused(error: unknown): error is EgressRefusedError {
  return (
    error instanceof EgressRefusedError ||
    (typeof error === "object" && error !== null && (error as { code?: unknown }).code === "EGRESS_REFUSED")
  );
}
