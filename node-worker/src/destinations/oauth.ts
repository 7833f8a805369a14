// Access tokens from a stored refresh token, for the OneDrive and Dropbox
// sinks: refreshed a minute before they expire (or when the API answers 401),
// one refresh at a time, each answer handed to a callback that writes it back
// to the profile (a rotated refresh token too: Microsoft issues a new one on
// every refresh). A refused grant (`invalid_grant`) means "reconnect".
import { PermanentJobError, ReconnectRequiredError } from "../sinks/index.ts";
import { defaultRetry, ProviderError, type RetryLog, type RetryPolicy, withRetry } from "./http.ts";

export interface Tokens {
  accessToken: string;
  expiresAt: Date;
  /** Set when the provider rotated the refresh token. */
  refreshToken?: string | undefined;
}

export interface OAuthOptions {
  /** For messages: "OneDrive". */
  label: string;
  clientId: string;
  clientSecret: string;
  refreshToken: string;
  tokenUrl: string;
  /** A token stored by an earlier refresh, used while it is still valid. */
  accessToken?: { accessToken: string; expiresAt: Date } | undefined;
  /** Called with every token answer (e.g. to store it encrypted). Failures are logged, not fatal. */
  onTokens?: ((tokens: Tokens) => void | Promise<void>) | undefined;
  /** Refresh this long before expiry (default 60 s). */
  refreshMarginMs?: number;
  retry?: RetryPolicy;
  log?: RetryLog;
  fetch?: typeof fetch;
}

export class OAuthTokenSource {
  readonly #opts: OAuthOptions;
  readonly #fetch: typeof fetch;
  #refreshToken: string;
  #current: { accessToken: string; expiresAt: Date } | undefined;
  #refreshing: Promise<string> | undefined;

  constructor(opts: OAuthOptions) {
    this.#opts = opts;
    this.#fetch = opts.fetch ?? fetch;
    this.#refreshToken = opts.refreshToken;
    this.#current = opts.accessToken;
  }

  /** The refresh token the grant holds now (rotated ones included). */
  get refreshToken(): string {
    return this.#refreshToken;
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
    const { label } = this.#opts;
    const body = await withRetry(
      async () => {
        const response = await this.#fetch(this.#opts.tokenUrl, {
          method: "POST",
          headers: { "Content-Type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({
            grant_type: "refresh_token",
            refresh_token: this.#refreshToken,
            client_id: this.#opts.clientId,
            client_secret: this.#opts.clientSecret,
          }),
          signal,
        });
        if (!response.ok) throw await ProviderError.from(response, `${label} token refresh`);
        return (await response.json()) as {
          access_token?: unknown;
          expires_in?: unknown;
          refresh_token?: unknown;
        };
      },
      {
        policy: this.#opts.retry ?? defaultRetry,
        signal,
        what: "token refresh",
        where: label,
        log: this.#opts.log,
      },
    ).catch((error: unknown) => {
      if (error instanceof ProviderError && error.code === "invalid_grant")
        throw new ReconnectRequiredError(label, { cause: error });
      if (
        error instanceof ProviderError &&
        (error.code === "invalid_client" || error.code === "unauthorized_client")
      )
        throw new PermanentJobError(
          `The server's ${label} OAuth client was rejected; an administrator must fix its client id and secret.`,
          { cause: error },
        );
      throw error;
    });
    if (typeof body.access_token !== "string" || body.access_token === "")
      throw new Error(`${label}'s token endpoint answered without an access token`);
    const seconds = typeof body.expires_in === "number" ? body.expires_in : 3600;
    const tokens: Tokens = {
      accessToken: body.access_token,
      expiresAt: new Date(Date.now() + seconds * 1000),
    };
    if (
      typeof body.refresh_token === "string" &&
      body.refresh_token &&
      body.refresh_token !== this.#refreshToken
    ) {
      tokens.refreshToken = body.refresh_token;
    }
    this.#current = tokens;
    if (this.#opts.onTokens) {
      try {
        await this.#opts.onTokens(tokens);
      } catch (error) {
        this.#opts.log?.warn({ err: error }, `could not store the refreshed ${label} tokens`);
      }
    }
    // Only after writing back: the grant is known by the token the profile holds.
    if (tokens.refreshToken) this.#refreshToken = tokens.refreshToken;
    return tokens.accessToken;
  }
}
