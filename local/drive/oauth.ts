// The Drive double's Google OAuth: the consent screen (approved at once),
// the token endpoint (authorization_code with PKCE, refresh_token) and revoke.

import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { DriveEnv } from "./env.ts";
import { type Ctx, drain, readForm } from "./http.ts";

export function oauthHandlers(env: DriveEnv) {
  const { store, accessTtl, send, opts, now } = env;
  /** Authorization codes the consent screen handed out (single use, ten minutes). */
  const codes = new Map<
    string,
    {
      accountId: string;
      clientId: string;
      redirectUri: string;
      scope: string;
      offline: boolean;
      challenge: { method: "S256" | "plain"; value: string } | undefined;
      expiresAt: number;
    }
  >();

  /**
   * Google's consent screen, already answered "Allow" by a local account:
   * checks the request as Google does, then sends the browser straight back
   * to `redirect_uri` with a code and the state. Problems Google shows on its
   * own error page (unknown client, no redirect URI) are a 400 page here.
   */
  const handleAuthorize = async (ctx: Ctx) => {
    await drain(ctx.req);
    const p = ctx.url.searchParams;
    const page = (message: string) => {
      const html = `<!doctype html><title>Error 400: invalid_request</title><h1>Access blocked: Authorization Error</h1><p>${message.replace(/[<>&"]/g, "")}</p>`;
      ctx.res.writeHead(400, {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Length": Buffer.byteLength(html),
      });
      ctx.res.end(html);
    };
    const clientId = p.get("client_id") ?? "";
    if (!clientId) return page("Missing required parameter: client_id");
    if (opts.clientId !== undefined && clientId !== opts.clientId)
      return page("The OAuth client was not found. Error 401: invalid_client");
    const redirectUri = p.get("redirect_uri") ?? "";
    let target: URL;
    try {
      target = new URL(redirectUri);
      if (target.protocol !== "http:" && target.protocol !== "https:") throw new Error("scheme");
    } catch {
      return page(`Invalid parameter value for redirect_uri: ${redirectUri || "(missing)"}`);
    }
    const back = (params: Record<string, string>) => {
      for (const [k, v] of Object.entries(params)) target.searchParams.set(k, v);
      ctx.res.writeHead(302, { Location: target.toString(), "Content-Length": "0" });
      ctx.res.end();
    };
    const state = p.get("state");
    const withState = (params: Record<string, string>) => (state === null ? params : { ...params, state });
    if (p.get("response_type") !== "code") return back(withState({ error: "unsupported_response_type" }));
    const scope = (p.get("scope") ?? "").trim();
    if (!scope)
      return back(
        withState({ error: "invalid_request", error_description: "Missing required parameter: scope" }),
      );
    const method = p.get("code_challenge_method") ?? (p.get("code_challenge") ? "plain" : null);
    const challengeValue = p.get("code_challenge");
    if (method !== null && (!challengeValue || (method !== "S256" && method !== "plain")))
      return back(
        withState({ error: "invalid_request", error_description: "Invalid code_challenge_method" }),
      );
    const hint = p.get("login_hint") ?? "";
    const email = /^[^@\s]+@[^@\s]+$/.test(hint) ? hint : (opts.consentEmail ?? "drive-user@example.com");
    const account = store.createAccount(email);
    const code = `4/0A${randomBytes(24).toString("base64url")}`;
    codes.set(code, {
      accountId: account.id,
      clientId,
      redirectUri,
      scope,
      offline: p.get("access_type") === "offline",
      challenge:
        method && challengeValue ? { method: method as "S256" | "plain", value: challengeValue } : undefined,
      expiresAt: now() + 10 * 60_000,
    });
    back(withState({ code, scope }));
  };

  /** The client's id and secret: HTTP Basic (as arctic sends them) or form fields. */
  const clientOf = (ctx: Ctx, form: URLSearchParams): { id: string; secret: string } => {
    const basic = /^Basic\s+(.+)$/i.exec(String(ctx.req.headers.authorization ?? ""))?.[1];
    if (basic) {
      const decoded = Buffer.from(basic, "base64").toString("utf8");
      const at = decoded.indexOf(":");
      // RFC 6749 form-encodes both before Basic; many clients (arctic) do not.
      const formDecode = (text: string) => {
        try {
          return decodeURIComponent(text.replace(/\+/g, " "));
        } catch {
          return text;
        }
      };
      return { id: formDecode(decoded.slice(0, Math.max(at, 0))), secret: formDecode(decoded.slice(at + 1)) };
    }
    return { id: form.get("client_id") ?? "", secret: form.get("client_secret") ?? "" };
  };

  const verifierMatches = (challenge: { method: "S256" | "plain"; value: string }, verifier: string) => {
    const expected =
      challenge.method === "S256" ? createHash("sha256").update(verifier).digest("base64url") : verifier;
    const a = Buffer.from(expected);
    const b = Buffer.from(challenge.value);
    return a.length === b.length && timingSafeEqual(a, b);
  };

  const handleToken = async (ctx: Ctx) => {
    const form = await readForm(ctx.req);
    const oauthError = (status: number, error: string, description: string) =>
      send(ctx, status, { error, error_description: description }, { "Cache-Control": "no-store" });
    const client = clientOf(ctx, form);
    if (
      (opts.clientId !== undefined && client.id !== opts.clientId) ||
      (opts.clientSecret !== undefined && client.secret !== opts.clientSecret)
    )
      return oauthError(401, "invalid_client", "Unauthorized");
    const grant = form.get("grant_type");
    if (grant === "authorization_code") {
      const code = form.get("code") ?? "";
      const issued = codes.get(code);
      // Single use, even when the rest of the request is wrong.
      codes.delete(code);
      if (!issued || issued.expiresAt <= now() || (client.id && client.id !== issued.clientId))
        return oauthError(400, "invalid_grant", "Malformed auth code.");
      if (form.get("redirect_uri") !== issued.redirectUri)
        return oauthError(400, "redirect_uri_mismatch", "Bad Request");
      const verifier = form.get("code_verifier");
      if (issued.challenge && (!verifier || !verifierMatches(issued.challenge, verifier)))
        return oauthError(400, "invalid_grant", "Invalid code verifier.");
      if (!issued.challenge && verifier) return oauthError(400, "invalid_grant", "Invalid code verifier.");
      const refresh = store.mintRefreshToken(issued.accountId);
      const access = store.mintAccessToken(refresh, accessTtl);
      // As at Google: a refresh token only for offline access.
      if (!issued.offline) store.refreshTokens.delete(refresh.token);
      return send(
        ctx,
        200,
        {
          access_token: access.token,
          expires_in: accessTtl,
          ...(issued.offline ? { refresh_token: refresh.token } : {}),
          scope: issued.scope,
          token_type: "Bearer",
        },
        { "Cache-Control": "no-store" },
      );
    }
    if (grant !== "refresh_token")
      return oauthError(400, "unsupported_grant_type", `Invalid grant_type: ${grant ?? ""}`);
    const token = form.get("refresh_token");
    if (!token) return oauthError(400, "invalid_request", "Missing required parameter: refresh_token");
    const refresh = store.refreshTokens.get(token);
    if (!refresh || refresh.revoked)
      return oauthError(400, "invalid_grant", "Token has been expired or revoked.");
    const access = store.mintAccessToken(refresh, accessTtl);
    send(
      ctx,
      200,
      {
        access_token: access.token,
        expires_in: accessTtl,
        scope: "https://www.googleapis.com/auth/drive.file",
        token_type: "Bearer",
      },
      { "Cache-Control": "no-store" },
    );
  };

  const handleRevoke = async (ctx: Ctx) => {
    const form = await readForm(ctx.req);
    const token = ctx.url.searchParams.get("token") ?? form.get("token") ?? "";
    const refresh = store.refreshTokens.get(token);
    const access = store.accessTokens.get(token);
    // Revoking an access token revokes its refresh token too, and the other way round.
    const grant = refresh ?? (access ? store.refreshTokens.get(access.refreshToken) : undefined);
    if (!grant || grant.revoked || access?.revoked)
      return send(ctx, 400, { error: "invalid_token", error_description: "Token expired or revoked" });
    store.revokeGrant(grant.token);
    send(ctx, 200, {});
  };

  return { handleAuthorize, handleToken, handleRevoke };
}
