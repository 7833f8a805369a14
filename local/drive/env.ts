// What every part of the Drive double shares: its store, faults and stats,
// its address and settings, and how it answers and authenticates.
import type { LogSink } from "../process.ts";
import type { Faults, Stats } from "./faults.ts";
import { type Ctx, errors, HttpError } from "./http.ts";
import type { AccessToken, Account, DriveStore } from "./store.ts";

export interface DriveEnv {
  store: DriveStore;
  faults: Faults;
  stats: Stats;
  base: string;
  log: LogSink;
  accessTtl: number;
  sessionTtl: number;
  /** The double's clock, ms since the epoch: tests move it instead of waiting. */
  now: () => number;
  /** The OAuth client and consent settings the double was started with. */
  opts: {
    clientId?: string | undefined;
    clientSecret?: string | undefined;
    consentEmail?: string | undefined;
  };
  /** One chunk at a time per session. */
  locks: Map<string, Promise<void>>;
  send(ctx: Ctx, status: number, body?: unknown, headers?: Record<string, string>): void;
  authenticate(ctx: Ctx): Account;
}

export function answerer(store: DriveStore, now: () => number = Date.now) {
  const send = (ctx: Ctx, status: number, body?: unknown, headers: Record<string, string> = {}) => {
    if (ctx.override) {
      const fault = errors.fault(ctx.override);
      ctx.override = undefined;
      send(ctx, fault.status, fault.body);
      return;
    }
    if (ctx.res.headersSent || ctx.res.destroyed) return;
    const payload = body === undefined ? "" : JSON.stringify(body);
    ctx.res.writeHead(status, {
      ...(body === undefined ? {} : { "Content-Type": "application/json; charset=UTF-8" }),
      "Content-Length": String(Buffer.byteLength(payload)),
      ...headers,
    });
    ctx.res.end(payload);
  };

  const authenticate = (ctx: Ctx): Account => {
    const header = String(ctx.req.headers.authorization ?? "");
    const match = /^Bearer\s+(.+)$/i.exec(header);
    const token: AccessToken | undefined = match ? store.accessTokens.get(match[1]!.trim()) : undefined;
    const account = token ? store.accounts.get(token.accountId) : undefined;
    if (!token || !account || token.revoked || token.expiresAt <= now()) {
      throw new HttpError(401, errors.unauthenticated());
    }
    return account;
  };

  return { send, authenticate };
}
