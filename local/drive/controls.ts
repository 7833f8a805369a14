import { rmSync } from "node:fs";
import type { DriveEnv } from "./env.ts";
import { type FaultRule, sessionIdOf, validateRule } from "./faults.ts";
import { type Ctx, drain, readBody, readJson, resource } from "./http.ts";
import type { MintedGrant } from "./server.ts";

export function controlHandlers(env: DriveEnv) {
  const { store, faults, stats, send, now } = env;
  // -- test controls ----------------------------------------------------------

  const expireSession = (sessionOrUri: string) => {
    const session = store.sessions.get(sessionIdOf(sessionOrUri));
    if (!session) return;
    session.expired = true;
    rmSync(store.sessionPath(session.id), { force: true });
    store.save();
  };

  const expireAccessTokens = () => {
    for (const t of store.accessTokens.values()) t.expiresAt = Math.min(t.expiresAt, now() - 1);
    store.save();
  };

  const mintRefreshToken = (email = "user@example.com"): MintedGrant => {
    const account = store.createAccount(email);
    const refresh = store.mintRefreshToken(account.id);
    return { accountId: account.id, email, rootFolderId: account.rootId, refreshToken: refresh.token };
  };

  const filesOf = (accountId: string) =>
    [...store.files.values()]
      .filter((f) => f.accountId === accountId && f.parents.length > 0)
      .sort((a, b) => a.seq - b.seq);

  const handleControl = async (ctx: Ctx) => {
    const path = ctx.url.pathname;
    const method = ctx.req.method ?? "GET";
    if (path === "/__faults") {
      if (method === "POST") {
        const body = JSON.parse((await readBody(ctx.req)).toString("utf8") || "null") as unknown;
        const rules = Array.isArray(body) ? body : [body];
        try {
          for (const rule of rules) validateRule(rule);
        } catch (error) {
          return send(ctx, 400, { error: (error as Error).message });
        }
        for (const rule of rules as FaultRule[]) faults.inject(rule);
        return send(ctx, 204);
      }
      if (method === "DELETE") {
        faults.clear();
        return send(ctx, 204);
      }
      if (method === "GET") return send(ctx, 200, { pending: faults.pending(), fired: faults.fired() });
    }
    if (path === "/__stats") {
      if (method === "GET") return send(ctx, 200, stats.toJSON());
      if (method === "DELETE") {
        stats.reset();
        return send(ctx, 204);
      }
    }
    if (path === "/__accounts" && method === "POST") {
      const body = await readJson(ctx.req);
      return send(ctx, 200, mintRefreshToken(typeof body.email === "string" ? body.email : undefined));
    }
    if (path === "/__files" && method === "GET") {
      const account = ctx.url.searchParams.get("account") ?? "";
      return send(ctx, 200, { files: filesOf(account).map(resource) });
    }
    if (path === "/__sessions/expire" && method === "POST") {
      const body = await readJson(ctx.req);
      expireSession(String(body.session ?? ""));
      return send(ctx, 204);
    }
    if (path === "/__tokens/expire" && method === "POST") {
      await drain(ctx.req);
      expireAccessTokens();
      return send(ctx, 204);
    }
    await drain(ctx.req);
    send(ctx, 404, { error: "no such control" });
  };

  return { expireSession, expireAccessTokens, mintRefreshToken, filesOf, handleControl };
}
