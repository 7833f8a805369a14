// OneDrive on the edge (Microsoft Graph). The consent asks for
// `Files.ReadWrite.AppFolder` (the app's own folder, Apps/TorreClou, and
// nothing else of the user's files), `User.Read` (the account's name, to tell
// connections apart) and `offline_access` (a refresh token, so workers upload
// while the user is away). Works with personal Microsoft accounts and work or
// school accounts (the `common` tenant).
//
// Microsoft has no endpoint that revokes one app's refresh token: disconnecting
// deletes the profile and its encrypted grant, and the user may also remove
// the app at https://account.live.com/consent/Manage (or myapps.microsoft.com).
//
// Endpoints are Microsoft's by default and overridable (MICROSOFT_OAUTH_*_URL,
// GRAPH_API_BASE_URL) so the local stack runs against its Graph double
// (local/onedrive).
import type { Config } from "../config.ts";
import { ApiError } from "../errors/index.ts";
import type { EdgeDestination, OAuthClientSettings } from "./types.ts";

export const oneDriveScopes = ["offline_access", "Files.ReadWrite.AppFolder", "User.Read"];
export const oneDriveCallbackPath = "/api/onedrive/callback";

function client(config: Config, requestUrl: string): OAuthClientSettings {
  const { MICROSOFT_CLIENT_ID: clientId, MICROSOFT_CLIENT_SECRET: clientSecret } = config;
  if (!clientId || !clientSecret) {
    throw new ApiError(
      503,
      "onedrive_unavailable",
      "OneDrive is not configured on this server (no OAuth client: set MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET).",
    );
  }
  return {
    clientId,
    clientSecret,
    redirectUri: config.ONEDRIVE_REDIRECT_URI ?? new URL(oneDriveCallbackPath, requestUrl).toString(),
    authUrl: config.MICROSOFT_OAUTH_AUTH_URL,
    tokenUrl: config.MICROSOFT_OAUTH_TOKEN_URL,
  };
}

/** A Graph scope as granted (`https://graph.microsoft.com/Files.ReadWrite.AppFolder` or bare), bare. */
function bare(scope: string): string {
  return scope.replace(/^https:\/\/graph\.microsoft\.com\//i, "");
}

export const onedrive: EdgeDestination<"onedrive"> = {
  kind: "onedrive",
  label: "OneDrive",
  async view({ config }) {
    return { accountEmail: config.accountEmail ?? null };
  },
  // OneDrive items carry their own web link (cloud_url): no links().
  oauth: {
    basePath: "/api/onedrive",
    queryKey: "onedrive",
    cookiePrefix: "tc_onedrive",
    company: "Microsoft",
    codePrefix: "microsoft",
    scopes: oneDriveScopes,
    required: ["Files.ReadWrite.AppFolder"],
    client,
    authorize(url, loginHint) {
      url.searchParams.set("response_mode", "query");
      url.searchParams.set("prompt", "select_account");
      if (loginHint) url.searchParams.set("login_hint", loginHint);
    },
    granted: (data) => (typeof data.scope === "string" ? data.scope.split(" ").map(bare) : undefined),
    async account(config, accessToken) {
      try {
        const response = await fetch(`${config.GRAPH_API_BASE_URL.replace(/\/+$/, "")}/v1.0/me`, {
          headers: { Authorization: `Bearer ${accessToken}` },
          signal: AbortSignal.timeout(5000),
        });
        if (!response.ok) {
          await response.body?.cancel();
          return {};
        }
        const me = (await response.json()) as { id?: unknown; mail?: unknown; userPrincipalName?: unknown };
        const email = typeof me.mail === "string" && me.mail ? me.mail : me.userPrincipalName;
        return {
          id: typeof me.id === "string" && me.id.length <= 200 ? me.id : undefined,
          email:
            typeof email === "string" && /^[^@\s]+@[^@\s]+$/.test(email) && email.length <= 254
              ? email
              : undefined,
        };
      } catch {
        return {};
      }
    },
    // Nothing to revoke per app at Microsoft (see above): the grant is forgotten here.
    revoke: async () => true,
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
