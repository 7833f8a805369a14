// Google Drive on the edge. Connecting Drive is its own OAuth consent, asked
// separately from sign-in and only when the user wants Drive: the scope is
// `drive.file` alone (files TorreClou creates, nothing else in the Drive),
// with offline access so the workers can upload while the user is away.
// Routes: /api/drive/connect, /api/drive/callback, /api/drive/{id}/disconnect
// (destinations/connect.ts). Google's endpoints by default, overridable
// (GOOGLE_OAUTH_*_URL, DRIVE_API_BASE_URL) so the local stack runs the whole
// flow offline against the Drive double (local/drive).
import type { Config } from "../config.ts";
import { ApiError } from "../errors/index.ts";
import { driveTransfer } from "./gdrive-transfer.ts";
import type { EdgeDestination, OAuthClientSettings } from "./types.ts";

/** The only scope asked for: files this app creates or opens. */
export const driveScope = "https://www.googleapis.com/auth/drive.file";
export const driveCallbackPath = "/api/drive/callback";

function client(config: Config, requestUrl: string): OAuthClientSettings {
  const drive = config.GOOGLE_DRIVE_CLIENT_ID && config.GOOGLE_DRIVE_CLIENT_SECRET;
  const clientId = drive ? config.GOOGLE_DRIVE_CLIENT_ID : config.GOOGLE_CLIENT_ID;
  const clientSecret = drive ? config.GOOGLE_DRIVE_CLIENT_SECRET : config.GOOGLE_CLIENT_SECRET;
  if (!clientId || !clientSecret) {
    throw new ApiError(
      503,
      "google_drive_unavailable",
      "Google Drive is not configured on this server (no OAuth client: set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET).",
    );
  }
  return {
    clientId,
    clientSecret,
    redirectUri: config.GOOGLE_DRIVE_REDIRECT_URI ?? new URL(driveCallbackPath, requestUrl).toString(),
    authUrl: config.GOOGLE_OAUTH_AUTH_URL,
    tokenUrl: config.GOOGLE_OAUTH_TOKEN_URL,
  };
}

/** The Google account's email, from Drive's `about` (works with the drive.file scope); undefined if it cannot be read. */
async function accountEmail(config: Config, accessToken: string): Promise<string | undefined> {
  try {
    const response = await fetch(
      `${config.DRIVE_API_BASE_URL.replace(/\/+$/, "")}/drive/v3/about?fields=user(emailAddress)`,
      { headers: { Authorization: `Bearer ${accessToken}` }, signal: AbortSignal.timeout(5000) },
    );
    if (!response.ok) {
      await response.body?.cancel();
      return undefined;
    }
    const body = (await response.json()) as { user?: { emailAddress?: unknown } };
    const email = body.user?.emailAddress;
    return typeof email === "string" && /^[^@\s]+@[^@\s]+$/.test(email) && email.length <= 254
      ? email
      : undefined;
  } catch {
    return undefined;
  }
}

export const gdrive: EdgeDestination<"gdrive"> = {
  kind: "gdrive",
  label: "Google Drive",
  async view({ config }) {
    return { accountEmail: config.accountEmail ?? null, rootFolderId: config.rootFolderId ?? null };
  },
  // Drive files carry their own web link (cloud_url): no links().
  // A tab sends the chunks itself, to a session opened with the web app's Origin.
  transfer: driveTransfer(({ config }) => {
    const settings = client(config, config.WEB_ORIGIN);
    return { clientId: settings.clientId, clientSecret: settings.clientSecret, tokenUrl: settings.tokenUrl };
  }),
  oauth: {
    basePath: "/api/drive",
    queryKey: "drive",
    cookiePrefix: "tc_drive",
    company: "Google",
    codePrefix: "google",
    scopes: [driveScope],
    client,
    authorize(url, loginHint) {
      url.searchParams.set("access_type", "offline");
      // Always ask: Google sends a refresh token only with a fresh consent.
      url.searchParams.set("prompt", "consent");
      // Google preselects the account the user signed in with; they may pick another.
      if (loginHint) url.searchParams.set("login_hint", loginHint);
    },
    granted: (data) => (typeof data.scope === "string" ? data.scope.split(" ") : undefined),
    async account(config, accessToken) {
      return { email: await accountEmail(config, accessToken) };
    },
    /**
     * Revoking at Google ends the whole grant, any of its tokens will do.
     * Plain fetch: google-auth-library (the workers' token client) does not
     * run in the Workers runtime; this is Google's documented revoke call.
     */
    async revoke(config, secret) {
      try {
        const response = await fetch(config.GOOGLE_OAUTH_REVOKE_URL, {
          method: "POST",
          headers: { "Content-Type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({ token: secret.refreshToken }),
          signal: AbortSignal.timeout(10_000),
        });
        const body = (await response.json().catch(() => ({}))) as { error?: unknown };
        if (response.ok) return true;
        // Already revoked or expired: nothing left to revoke.
        return response.status === 400 && body.error === "invalid_token";
      } catch {
        return false;
      }
    },
    configOf: (account) => (account.email ? { accountEmail: account.email } : {}),
    sameAccount: (config, account) => account.email !== undefined && config.accountEmail === account.email,
  },
};
