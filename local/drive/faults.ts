// Fault injection and counters for the Drive double. Rules are plain JSON so
// a test in another process can post them to `POST /__faults`.

/** Every request the double serves falls into one of these. */
export const routes = [
  "authorize",
  "token",
  "revoke",
  "about",
  "files.create",
  "files.list",
  "files.get",
  "files.media",
  "files.update",
  "files.delete",
  "upload.create",
  "upload.chunk",
  "upload.query",
  "upload.cancel",
  "upload.preflight",
  "control",
  "unknown",
] as const;
export type Route = (typeof routes)[number];

interface Match {
  /** Which requests the rule applies to; any when omitted. */
  route?: Route | Route[];
  method?: string;
  /** Prefix of the URL path (without the query). */
  path?: string;
  /** How many matching requests fail (default 1). */
  times?: number;
  /** Matching requests let through before the rule fires (default 0). */
  skip?: number;
}

export type Fault =
  /** A 5xx or 429 with Google's error JSON. `afterCommit`: a chunk is stored first, then the error is sent. */
  | { kind: "status"; status: 429 | 500 | 502 | 503 | 504; afterCommit?: boolean }
  /** 403 with `errors[].reason` rateLimitExceeded or userRateLimitExceeded. */
  | { kind: "rate-limit"; reason: "rateLimitExceeded" | "userRateLimitExceeded"; afterCommit?: boolean }
  /**
   * Cuts the connection once `afterBytes` bytes of the request body arrived.
   * The session keeps what it received, rounded down to a whole 256 KiB.
   */
  | { kind: "drop"; afterBytes: number }
  /** The session the request names expires first: it answers 404 from now on. */
  | { kind: "expire-session" };

export type FaultRule = Match & Fault;

export interface FiredFault {
  route: Route;
  method: string;
  path: string;
  kind: Fault["kind"];
}

interface Armed {
  rule: FaultRule;
  left: number;
  skip: number;
}

export interface FaultControl {
  /** Arms a rule; rules are tried in the order they were armed. */
  inject(rule: FaultRule): void;
  clear(): void;
  /** Rules armed and not yet used up. */
  pending(): number;
  /** Faults that fired, oldest first. */
  fired(): FiredFault[];
  /** Makes a session (by id or session URI) answer 404 from now on. */
  expireSession(session: string): void;
  /** Makes every access token issued so far invalid (as if an hour had passed). */
  expireAccessTokens(): void;
}

export class Faults {
  #armed: Armed[] = [];
  #fired: FiredFault[] = [];

  inject(rule: FaultRule): void {
    validateRule(rule);
    this.#armed.push({ rule, left: rule.times ?? 1, skip: rule.skip ?? 0 });
  }

  clear(): void {
    this.#armed = [];
    this.#fired = [];
  }

  pending(): number {
    return this.#armed.filter((a) => a.left > 0).length;
  }

  fired(): FiredFault[] {
    return [...this.#fired];
  }

  /** The fault to apply to this request, if a rule fires. */
  take(route: Route, method: string, path: string): Fault | undefined {
    if (route === "control") return undefined;
    for (const armed of this.#armed) {
      if (armed.left <= 0 || !matches(armed.rule, route, method, path)) continue;
      if (armed.skip > 0) {
        armed.skip--;
        continue;
      }
      armed.left--;
      this.#fired.push({ route, method, path, kind: armed.rule.kind });
      return armed.rule;
    }
    return undefined;
  }
}

function matches(rule: FaultRule, route: Route, method: string, path: string): boolean {
  if (rule.route !== undefined) {
    const list = Array.isArray(rule.route) ? rule.route : [rule.route];
    if (!list.includes(route)) return false;
  }
  if (rule.method !== undefined && rule.method.toUpperCase() !== method) return false;
  if (rule.path !== undefined && !path.startsWith(rule.path)) return false;
  return true;
}

export function validateRule(rule: unknown): asserts rule is FaultRule {
  if (!rule || typeof rule !== "object") throw new Error("a fault rule is an object");
  const r = rule as Record<string, unknown>;
  switch (r.kind) {
    case "status":
      if (![429, 500, 502, 503, 504].includes(r.status as number))
        throw new Error("status faults answer 429, 500, 502, 503 or 504");
      break;
    case "rate-limit":
      if (r.reason !== "rateLimitExceeded" && r.reason !== "userRateLimitExceeded")
        throw new Error("rate-limit reason is rateLimitExceeded or userRateLimitExceeded");
      break;
    case "drop":
      if (typeof r.afterBytes !== "number" || r.afterBytes < 0) throw new Error("drop needs afterBytes >= 0");
      break;
    case "expire-session":
      break;
    default:
      throw new Error(`unknown fault kind ${String(r.kind)}`);
  }
  if (r.route !== undefined) {
    const list = Array.isArray(r.route) ? r.route : [r.route];
    for (const route of list)
      if (!(routes as readonly unknown[]).includes(route)) throw new Error(`unknown route ${String(route)}`);
  }
}

// ---------------------------------------------------------------------------

export interface SessionStats {
  /** Body bytes that arrived on chunk requests, whether stored or not. */
  bytesReceived: number;
  /** Bytes stored (the session's committed offset). */
  bytesCommitted: number;
  /** Bytes that arrived for offsets the session had already stored (a client resending). */
  bytesResent: number;
  chunks: number;
  queries: number;
}

export interface DriveStats {
  /** Requests served per route. */
  requests(route?: Route): number;
  /** Counters of one upload session, by id or session URI. */
  session(session: string): SessionStats;
  /** Body bytes received on chunk requests, all sessions. */
  uploadBytesReceived(): number;
  reset(): void;
}

export class Stats implements DriveStats {
  #requests = new Map<Route, number>();
  #sessions = new Map<string, SessionStats>();

  count(route: Route): void {
    this.#requests.set(route, (this.#requests.get(route) ?? 0) + 1);
  }

  requests(route?: Route): number {
    if (route) return this.#requests.get(route) ?? 0;
    let total = 0;
    for (const [r, n] of this.#requests) if (r !== "control") total += n;
    return total;
  }

  of(sessionId: string): SessionStats {
    let s = this.#sessions.get(sessionId);
    if (!s) {
      s = { bytesReceived: 0, bytesCommitted: 0, bytesResent: 0, chunks: 0, queries: 0 };
      this.#sessions.set(sessionId, s);
    }
    return s;
  }

  session(session: string): SessionStats {
    return { ...this.of(sessionIdOf(session)) };
  }

  uploadBytesReceived(): number {
    let total = 0;
    for (const s of this.#sessions.values()) total += s.bytesReceived;
    return total;
  }

  reset(): void {
    this.#requests.clear();
    this.#sessions.clear();
  }

  toJSON(): { requests: Record<string, number>; sessions: Record<string, SessionStats> } {
    return {
      requests: Object.fromEntries(this.#requests),
      sessions: Object.fromEntries(this.#sessions),
    };
  }
}

/** The `upload_id` of a session URI, or the argument itself when it is an id. */
export function sessionIdOf(session: string): string {
  if (!session.includes("upload_id=")) return session;
  return new URL(session, "http://x").searchParams.get("upload_id") ?? session;
}
