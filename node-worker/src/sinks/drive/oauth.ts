// Access tokens for Google APIs from a stored refresh token: refreshed a
// minute before they expire (or when an API answers 401), one refresh at a
// time, each new token handed to a callback so it can be persisted. The
// refresh itself is google-auth-library's OAuth2Client (its token endpoint
// overridable, so the local Drive double serves it); what is ours is when
// to refresh, one refresh per sink at a time, and writing tokens back.
import { gaxios, OAuth2Client } from "google-auth-library";
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
    const client = new OAuth2Client({
      clientId: this.#opts.clientId,
      clientSecret: this.#opts.clientSecret,
      endpoints: { oauth2TokenUrl: this.#opts.tokenUrl ?? GOOGLE_TOKEN_URL },
    });
    const body = await withRetry(
      async () => {
        // Only the refresh token: the client has no access token to reuse, so it refreshes.
        client.setCredentials({ refresh_token: this.#opts.refreshToken });
        try {
          const { token } = await client.getAccessToken();
          return { access_token: token, expiry_date: client.credentials.expiry_date };
        } catch (error) {
          throw googleErrorOf(error, "Google token refresh");
        }
      },
      { policy: this.#opts.retry ?? defaultRetry, signal, what: "token refresh", log: this.#opts.log },
    ).catch((error: unknown) => {
      throw describeTokenError(error);
    });
    if (typeof body.access_token !== "string" || body.access_token === "")
      throw new Error("Google's token endpoint answered without an access token");
    const token: AccessToken = {
      accessToken: body.access_token,
      expiresAt: new Date(typeof body.expiry_date === "number" ? body.expiry_date : Date.now() + 3600_000),
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

/**
 * A google-auth-library / googleapis failure as the sink reads failures: an
 * answer becomes a GoogleApiError (status, reason, Retry-After), a request
 * that got no answer a TypeError (a network failure, retried).
 */
export function googleErrorOf(error: unknown, what: string): unknown {
  if (!(error instanceof gaxios.GaxiosError)) return error;
  const response = error.response;
  if (!response) {
    if (error.name === "AbortError" || (error.cause as { name?: string } | undefined)?.name === "AbortError")
      return error.cause ?? error;
    return new TypeError(`${what}: ${error.message}`, { cause: error });
  }
  const data = response.data as
    | {
        error?: { message?: string; errors?: { reason?: string; message?: string }[] } | string;
        error_description?: string;
      }
    | string
    | undefined;
  let reason = "";
  let message = typeof data === "string" ? data.slice(0, 300) : error.message;
  if (data && typeof data === "object") {
    if (typeof data.error === "object" && data.error) {
      reason = data.error.errors?.[0]?.reason ?? "";
      message = data.error.message ?? data.error.errors?.[0]?.message ?? message;
    } else if (typeof data.error === "string") {
      reason = data.error;
      message = data.error_description ?? data.error;
    }
  }
  const headers = response.headers as unknown as { get?: (name: string) => string | null } & Record<
    string,
    unknown
  >;
  const after = Number(
    (typeof headers?.get === "function" ? headers.get("retry-after") : headers?.["retry-after"]) ?? "",
  );
  return new GoogleApiError(
    response.status,
    reason,
    `${what}: HTTP ${response.status}${reason ? ` ${reason}` : ""}: ${message}`,
    Number.isFinite(after) && after > 0 ? after : undefined,
  );
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
