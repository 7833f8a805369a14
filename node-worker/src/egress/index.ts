// The worker's egress guard: every connection a job opens on a user's behalf
// passes the egress policy (contracts/src/egress.ts), checked on the address
// actually connected to, after DNS.
//
// Why a guard at the socket layer rather than per client: a job's traffic
// leaves through five libraries that share no hook — webtorrent's peer
// sockets (net), HTTP trackers, web seeds and `xs` sources (fetch, i.e.
// undici), UDP trackers and the DHT (dgram), and the storage SDKs (node:http
// agents). All of them end in `net.Socket.prototype.connect` or
// `dgram.Socket.prototype.send`, so those two are wrapped, once per process:
//
// - TCP (plain and TLS): an IP literal is checked before connecting; a name
//   is connected through a lookup that checks every address it resolves to,
//   so the socket can only reach an address that passed (no rebinding window).
// - UDP: a datagram to a refused address is dropped (a name is resolved and
//   checked first, then sent to the checked address).
//
// The guard applies only inside a job (`asJob`), where it tracks what each job
// had refused. The worker's own infrastructure (Postgres, Redis, the OTLP
// endpoint: addresses the operator configured, not a user) connects outside
// jobs (`outsideJobs`), or on sockets made by `infraSocket`, and is not checked.
import { AsyncLocalStorage } from "node:async_hooks";
import dgram from "node:dgram";
import dns, { type LookupAddress, type LookupOptions } from "node:dns";
import net from "node:net";
import { type EgressPolicy, EgressRefusedError } from "@torreclou/contracts";

/** What one job had refused, for its log and its failure message. */
export class Refusals {
  /** The job and attempt the refusals belong to, for the log line of each. */
  readonly job: { jobId: string; attempt: number } | undefined;
  count = 0;
  /** Distinct destinations (host:port and why), at most a few, for messages. */
  readonly examples = new Map<string, string>();

  constructor(job?: { jobId: string; attempt: number }) {
    this.job = job;
  }

  add(error: EgressRefusedError): void {
    this.count++;
    const where = `${error.host}:${error.port}`;
    if (this.examples.size < 5 && !this.examples.has(where)) this.examples.set(where, error.reason);
  }

  /** "2 connections refused by the egress policy (127.0.0.1:6969: a loopback address, …)", or "". */
  summary(): string {
    if (this.count === 0) return "";
    const list = [...this.examples].map(([where, why]) => `${where}: ${why}`).join("; ");
    return `${this.count} connection${this.count === 1 ? "" : "s"} refused by the egress policy (${list})`;
  }
}

export type LookupFn = (
  hostname: string,
  options: LookupOptions,
  callback: (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
) => void;

export interface GuardOptions {
  policy: EgressPolicy;
  /** Called for every refused connection or datagram (metrics, logs). */
  onRefused?: (error: EgressRefusedError, refusals: Refusals | undefined) => void;
  /** Name resolution; dns.lookup unless a test supplies a resolver of its own. */
  lookup?: LookupFn;
}

const scope = new AsyncLocalStorage<Refusals>();
const infra = new WeakSet<net.Socket>();
let guard: GuardOptions | undefined;

/** Runs `work` as a job: every connection it opens (and its callbacks open) is checked. */
export function asJob<T>(refusals: Refusals, work: () => T): T {
  return scope.run(refusals, work);
}

/**
 * Runs `work` outside any job, even when called from inside one: what it
 * connects to is the operator's (e.g. the OTLP endpoint, see tracing/), not
 * a user's, and is neither checked nor counted against the job.
 */
export function outsideJobs<T>(work: () => T): T {
  return scope.exit(work);
}

/** A socket for the worker's own infrastructure (e.g. pg's `stream` option): never checked. */
export function infraSocket(): net.Socket {
  const socket = new net.Socket();
  infra.add(socket);
  return socket;
}

/**
 * Installs the guard for this process (again: replaces the policy). Returns
 * nothing to undo: the wrapped methods pass through when no job is running.
 */
export function installEgressGuard(options: GuardOptions): void {
  guard = options;
  if (wrapped) return;
  wrapped = true;
  wrapTcp();
  wrapUdp();
}

let wrapped = false;

function refuse(error: EgressRefusedError): EgressRefusedError {
  const refusals = scope.getStore();
  refusals?.add(error);
  guard?.onRefused?.(error, refusals);
  return error;
}

function unbracket(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

interface TcpTarget {
  host?: string;
  port?: number | string;
  path?: string | null;
  lookup?: LookupFn;
}

/** The options object and callback of any `socket.connect(...)` call form. */
function tcpArgs(args: unknown[]): { options: TcpTarget; callback: unknown } | undefined {
  let list = args;
  // net.connect() hands its already normalised [options, callback] array on.
  if (Array.isArray(list[0])) list = list[0] as unknown[];
  const [first, second] = list;
  const callback = list.find((a) => typeof a === "function");
  if (typeof first === "object" && first !== null) return { options: first as TcpTarget, callback };
  if (typeof first === "string" && !/^\d+$/.test(first)) return undefined; // a unix socket path
  if (typeof first === "number" || typeof first === "string") {
    return { options: { port: first, host: typeof second === "string" ? second : undefined }, callback };
  }
  return undefined;
}

/** Wraps a lookup so it only hands back addresses the policy allows for host:port. */
function checkedLookup(policy: EgressPolicy, port: number, inner: LookupFn): LookupFn {
  return (hostname, options, callback) => {
    inner(hostname, options, (error, address, family) => {
      if (error) return callback(error, address, family);
      const all = Array.isArray(address) ? address : [{ address, family: family ?? 4 }];
      const allowed: LookupAddress[] = [];
      let refusal: EgressRefusedError | undefined;
      for (const entry of all) {
        const verdict = policy.checkAddress(hostname, port, entry.address);
        if (verdict.allowed) allowed.push(entry);
        else refusal ??= new EgressRefusedError(hostname, port, verdict.reason, entry.address);
      }
      if (allowed.length === 0) return callback(refuse(refusal!), "", 4);
      if (Array.isArray(address)) return callback(null, allowed);
      return callback(null, allowed[0]!.address, allowed[0]!.family);
    });
  };
}

function defaultLookup(): LookupFn {
  return guard?.lookup ?? (dns.lookup as unknown as LookupFn);
}

function wrapTcp(): void {
  const original = net.Socket.prototype.connect as (this: net.Socket, ...args: unknown[]) => net.Socket;
  net.Socket.prototype.connect = function connect(this: net.Socket, ...args: unknown[]): net.Socket {
    const current = guard;
    if (!current || !scope.getStore() || infra.has(this)) return original.apply(this, args);
    const parsed = tcpArgs(args);
    // A unix socket path is local IPC, not egress (http sets `path: null` for TCP).
    if (!parsed || typeof parsed.options.path === "string") return original.apply(this, args);
    const { options, callback } = parsed;
    const host = options.host ?? "localhost";
    const port = Number(options.port);
    const bare = unbracket(host);
    if (net.isIP(bare)) {
      const verdict = current.policy.checkAddress(host, port, bare);
      if (!verdict.allowed) {
        const error = refuse(new EgressRefusedError(host, port, verdict.reason));
        process.nextTick(() => this.destroy(error));
        return this;
      }
      return original.apply(this, args);
    }
    if (current.policy.allows(host, port)) return original.apply(this, args);
    // A client's own resolver is kept; the system's (often passed explicitly) is the guard's.
    const own = options.lookup && options.lookup !== (dns.lookup as unknown) ? options.lookup : undefined;
    const lookup = checkedLookup(current.policy, port, own ?? defaultLookup());
    const next: unknown[] = [{ ...options, lookup }];
    if (callback) next.push(callback);
    return original.apply(this, next);
  } as typeof net.Socket.prototype.connect;
}

type UdpFn = (this: dgram.Socket, ...args: unknown[]) => void;

/** 6 for a udp6 socket, else 4 (`type` is set by createSocket but not in Node's typings). */
function udpFamily(socket: dgram.Socket): 4 | 6 {
  return (socket as unknown as { type?: string }).type === "udp6" ? 6 : 4;
}

/**
 * Wraps a dgram method whose arguments name a destination (`send`, `connect`):
 * inside a job the destination is checked — an IP at once, a name after
 * resolving it, and the call then goes to the checked address. `at` finds the
 * port and address in the arguments; a refusal goes to `refused`.
 */
function guardUdp(
  original: UdpFn,
  at: (args: unknown[]) => { portAt: number; port: number; address: unknown },
  refused: (socket: dgram.Socket, args: unknown[], error: EgressRefusedError) => void,
): UdpFn {
  return function guarded(this: dgram.Socket, ...args: unknown[]): void {
    const current = guard;
    const { portAt, port, address } = at(args);
    // Outside a job, or a connected socket (no address: checked when it connected).
    if (
      !current ||
      !scope.getStore() ||
      typeof address !== "string" ||
      current.policy.allows(address, port)
    ) {
      original.apply(this, args);
      return;
    }
    const send = (resolved: string) => {
      const verdict = current.policy.checkAddress(address, port, resolved);
      if (!verdict.allowed) {
        const error = new EgressRefusedError(
          address,
          port,
          verdict.reason,
          resolved === address ? undefined : resolved,
        );
        refused(this, args, refuse(error));
        return;
      }
      const next = [...args];
      next[portAt + 1] = resolved;
      original.apply(this, next);
    };
    if (net.isIP(address)) {
      send(address);
      return;
    }
    defaultLookup()(address, { family: udpFamily(this) }, (error, resolved) => {
      if (error || typeof resolved !== "string") {
        const callback = args.find((a, i) => i > portAt && typeof a === "function") as
          | ((e: Error) => void)
          | undefined;
        callback?.(error ?? new Error("lookup failed"));
        return;
      }
      send(resolved);
    });
  };
}

/** Port and address of `socket.send(msg, [offset, length,] port, address, [callback])`. */
function sendTarget(args: unknown[]): { portAt: number; port: number; address: unknown } {
  const offsetForm = typeof args[1] === "number" && typeof args[2] === "number" && args.length >= 4;
  const portAt = offsetForm ? 3 : 1;
  return { portAt, port: Number(args[portAt]), address: args[portAt + 1] };
}

function wrapUdp(): void {
  const proto = dgram.Socket.prototype as unknown as { send: UdpFn; connect: UdpFn };
  // A refused datagram is dropped (its callback, if any, hears why): a tracker or DHT node is skipped.
  proto.send = guardUdp(proto.send, sendTarget, (_socket, args, error) => {
    const callback = args.find((a, i) => i > sendTarget(args).portAt && typeof a === "function");
    if (typeof callback === "function") process.nextTick(callback as (e: Error) => void, error);
  });
  // connect(port, address, callback): refused like a failed connect.
  proto.connect = guardUdp(
    proto.connect,
    (args) => ({ portAt: 0, port: Number(args[0]), address: args[1] }),
    (socket, args, error) => {
      const callback = args.find((a) => typeof a === "function") as ((e: Error) => void) | undefined;
      if (callback) process.nextTick(callback, error);
      else process.nextTick(() => socket.emit("error", error));
    },
  );
}

/** The policy refusal behind an error, however deeply a client wrapped it. */
export function egressRefusalIn(error: unknown, depth = 0): EgressRefusedError | undefined {
  if (depth > 8 || typeof error !== "object" || error === null) return undefined;
  if (error instanceof EgressRefusedError) return error;
  const { cause, errors } = error as { cause?: unknown; errors?: unknown };
  const inner = egressRefusalIn(cause, depth + 1);
  if (inner) return inner;
  if (Array.isArray(errors))
    for (const e of errors) {
      const found = egressRefusalIn(e, depth + 1);
      if (found) return found;
    }
  return undefined;
}
