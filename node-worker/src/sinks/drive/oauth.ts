// Access tokens for Google APIs from a stored refresh token: refreshed a
// minute before they expire (or when an API answers 401), one refresh at a
// time, each new token handed to a callback so it can be persisted.
import { PermanentJobError, ReconnectRequiredError } from "../index.ts";
import { defaultRetry, GoogleApiError, type RetryLog, type RetryPolicy, withRetry } from "./http.ts";

export const GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token";
export const GOOGLE_REVOKE_URL = "https://oauth2.googleapis.com/revoke";

export { ReconnectRequiredError } from "../index.ts";

export interface AccessToken {
  accessToken: string;
  expiresAt: Date;
}

export interface GoogleOAuthOptions {
  clientId: string;
  clientSecret: string;
  refreshToken: string;
  /** Default: Google's token endpoint. */
  tokenUrl?: string;
  /** A token stored by an earlier refresh, used while it is still valid. */
  accessToken?: AccessToken | undefined;
  /** Called with every new access token (e.g. to store it encrypted). Failures are logged, not fatal. */
  onAccessToken?: ((token: AccessToken) => void | Promise<void>) | undefined;
  /** Refresh this long before expiry (default 60 s). */
  refreshMarginMs?: number;
  retry?: RetryPolicy;
  log?: RetryLog;
  fetch?: typeof fetch;
}

export class GoogleTokenSource {
  readonly #opts: GoogleOAuthOptions;
  readonly #fetch: typeof fetch;
  #current: AccessToken | undefined;
  #refreshing: Promise<string> | undefined;

  constructor(opts: GoogleOAuthOptions) {
    this.#opts = opts;
    this.#fetch = opts.fetch ?? fetch;
    this.#current = opts.accessToken;
  }

  /** A valid access token, refreshed first if it is about to expire. */
  async token(signal: AbortSignal): Promise<string> {
    const margin = this.#opts.refreshMarginMs ?? 60_000;
    const current = this.#current;
    if (current && current.expiresAt.getTime() - margin > Date.now()) return current.accessToken;
    this.#refreshing ??= this.#refresh(signal).finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }

  /** The API rejected `token` (401): the next `token()` refreshes. */
  invalidate(token: string): void {
    if (this.#current?.accessToken === token) this.#current = undefined;
  }

  async #refresh(signal: AbortSignal): Promise<string> {
    const body = await withRetry(
      async () => {
        const response = await this.#fetch(this.#opts.tokenUrl ?? GOOGLE_TOKEN_URL, {
          method: "POST",
          headers: { "Content-Type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({
            grant_type: "refresh_token",
            refresh_token: this.#opts.refreshToken,
            client_id: this.#opts.clientId,
            client_secret: this.#opts.clientSecret,
          }),
          signal,
        });
        if (!response.ok) throw await GoogleApiError.from(response, "Google token refresh");
        return (await response.json()) as { access_token?: unknown; expires_in?: unknown };
      },
      { policy: this.#opts.retry ?? defaultRetry, signal, what: "token refresh", log: this.#opts.log },
    ).catch((error: unknown) => {
      throw describeTokenError(error);
    });
    if (typeof body.access_token !== "string" || body.access_token === "")
      throw new Error("Google's token endpoint answered without an access token");
    const seconds = typeof body.expires_in === "number" ? body.expires_in : 3600;
    const token: AccessToken = {
      accessToken: body.access_token,
      expiresAt: new Date(Date.now() + seconds * 1000),
    };
    this.#current = token;
    if (this.#opts.onAccessToken) {
      try {
        await this.#opts.onAccessToken(token);
      } catch (error) {
        this.#opts.log?.warn({ err: error }, "could not store the refreshed Google access token");
      }
    }
    return token.accessToken;
  }
}

function describeTokenError(error: unknown): unknown {
  if (!(error instanceof GoogleApiError)) return error;
  if (error.reason === "invalid_grant") return new ReconnectRequiredError("Google Drive", { cause: error });
  if (error.reason === "invalid_client" || error.reason === "unauthorized_client")
    return new PermanentJobError(
      "The server's Google OAuth client was rejected by Google; an administrator must fix its client id and secret.",
      { cause: error },
    );
  return error;
}
