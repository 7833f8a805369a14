// Dropbox on the edge. The Dropbox app is an "App folder" app (files go to
// Apps/<app name>, nothing else of the user's Dropbox is visible), asking for
// `files.content.write`, `files.content.read` and `files.metadata.read`
// (upload, check what landed) and `account_info.read` (the account's email,
// to tell connections apart), with `token_access_type=offline` for a refresh
// token. Disconnecting revokes the grant (`/2/auth/token/revoke` disables the
// refresh token and every access token of it).
//
// Endpoints are Dropbox's by default and overridable (DROPBOX_OAUTH_*_URL,
// DROPBOX_API_BASE_URL) so the local stack runs against its Dropbox double
// (local/dropbox).
import { CredentialsError, decryptOAuthSecret, type OAuthSecret } from "@torreclou/contracts";
import type { Config } from "../config.ts";
import { ApiError } from "../errors/index.ts";
import type { EdgeDestination, OAuthClientSettings } from "./types.ts";

export const dropboxScopes = [
  "files.content.write",
  "files.content.read",
  "files.metadata.read",
  "account_info.read",
];
export const dropboxCallbackPath = "/api/dropbox/callback";

function client(config: Config, requestUrl: string): OAuthClientSettings {
  const { DROPBOX_APP_KEY: clientId, DROPBOX_APP_SECRET: clientSecret } = config;
  if (!clientId || !clientSecret) {
    throw new ApiError(
      503,
      "dropbox_unavailable",
      "Dropbox is not configured on this server (no app: set DROPBOX_APP_KEY and DROPBOX_APP_SECRET).",
    );
  }
  return {
    clientId,
    clientSecret,
    redirectUri: config.DROPBOX_REDIRECT_URI ?? new URL(dropboxCallbackPath, requestUrl).toString(),
    authUrl: config.DROPBOX_OAUTH_AUTH_URL,
    tokenUrl: config.DROPBOX_OAUTH_TOKEN_URL,
  };
}

const api = (config: Config, path: string) => `${config.DROPBOX_API_BASE_URL.replace(/\/+$/, "")}${path}`;

/** An access token of the grant: the stored one while valid, else a fresh one from the refresh token. */
async function accessTokenOf(
  secret: OAuthSecret,
  settings: OAuthClientSettings,
): Promise<string | "revoked" | undefined> {
  if (
    secret.accessToken &&
    secret.accessTokenExpiresAt &&
    Date.parse(secret.accessTokenExpiresAt) > Date.now() + 60_000
  )
    return secret.accessToken;
  const response = await fetch(settings.tokenUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/x-www-form-urlencoded",
      Authorization: `Basic ${btoa(`${settings.clientId}:${settings.clientSecret}`)}`,
    },
    body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: secret.refreshToken }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = (await response.json().catch(() => ({}))) as { access_token?: unknown; error?: unknown };
  if (response.ok && typeof body.access_token === "string") return body.access_token;
  // The grant is already gone: nothing left to revoke.
  if (response.status === 400 && body.error === "invalid_grant") return "revoked";
  return undefined;
}

export const dropbox: EdgeDestination<"dropbox"> = {
  kind: "dropbox",
  label: "Dropbox",
  async view({ config }) {
    return { accountEmail: config.accountEmail ?? null };
  },
  /**
   * Dropbox files have no web link of their own an app folder app may give:
   * each gets a temporary link (four hours, Dropbox's own) when the job is shown.
   */
  async links(destination, config, cloudIds) {
    const links = new Map<string, string>();
    let secret: OAuthSecret;
    try {
      secret = await decryptOAuthSecret(config.CREDENTIALS_KEYS, destination.sealed, destination.id);
    } catch (error) {
      if (error instanceof CredentialsError) return links; // keys rotated away: no links rather than a failed page
      throw error;
    }
    if (destination.status === "needs_reconnect") return links;
    let settings: OAuthClientSettings;
    try {
      settings = client(config, config.WEB_ORIGIN);
    } catch {
      return links; // no Dropbox app configured any more
    }
    const token = await accessTokenOf(secret, settings).catch(() => undefined);
    if (!token || token === "revoked") return links;
    await Promise.all(
      cloudIds.map(async (id) => {
        try {
          const response = await fetch(api(config, "/2/files/get_temporary_link"), {
            method: "POST",
            headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
            body: JSON.stringify({ path: id }),
            signal: AbortSignal.timeout(5000),
          });
          if (!response.ok) {
            await response.body?.cancel();
            return;
          }
          const body = (await response.json()) as { link?: unknown };
          if (typeof body.link === "string" && /^https?:\/\//.test(body.link)) links.set(id, body.link);
        } catch {
          // A link that cannot be made now is left out; the job page still lists the file.
        }
      }),
    );
    return links;
  },
  oauth: {
    basePath: "/api/dropbox",
    queryKey: "dropbox",
    cookiePrefix: "tc_dropbox",
    company: "Dropbox",
    codePrefix: "dropbox",
    scopes: dropboxScopes,
    required: ["files.content.write"],
    client,
    authorize(url) {
      url.searchParams.set("token_access_type", "offline");
      url.searchParams.set("force_reapprove", "true");
    },
    granted: (data) => (typeof data.scope === "string" ? data.scope.split(" ") : undefined),
    async account(config, accessToken) {
      try {
        const response = await fetch(api(config, "/2/users/get_current_account"), {
          method: "POST",
          headers: { Authorization: `Bearer ${accessToken}` },
          signal: AbortSignal.timeout(5000),
        });
        if (!response.ok) {
          await response.body?.cancel();
          return {};
        }
        const me = (await response.json()) as { account_id?: unknown; email?: unknown };
        return {
          id: typeof me.account_id === "string" && me.account_id.length <= 200 ? me.account_id : undefined,
          email:
            typeof me.email === "string" && /^[^@\s]+@[^@\s]+$/.test(me.email) && me.email.length <= 254
              ? me.email
              : undefined,
        };
      } catch {
        return {};
      }
    },
    async revoke(config, secret, settings) {
      try {
        const token = await accessTokenOf(secret, settings());
        if (token === "revoked") return true;
        if (!token) return false;
        const response = await fetch(api(config, "/2/auth/token/revoke"), {
          method: "POST",
          headers: { Authorization: `Bearer ${token}` },
          signal: AbortSignal.timeout(10_000),
        });
        await response.body?.cancel();
        // 401: the token no longer works, which is what revoking is for.
        return response.ok || response.status === 401;
      } catch {
        return false;
      }
    },
    configOf: (account) => ({
      ...(account.email ? { accountEmail: account.email } : {}),
      ...(account.id ? { accountId: account.id } : {}),
    }),
    sameAccount: (config, account) =>
      account.id !== undefined
        ? config.accountId === account.id
        : account.email !== undefined && config.accountEmail === account.email,
  },
};
