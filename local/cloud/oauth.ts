// The OAuth 2.0 authorization server part of the OneDrive and Dropbox
// doubles: a consent screen that approves at once, the token endpoint
// (authorization_code with PKCE, refresh_token), access tokens that expire,
// grants that can be revoked. Faithful to RFC 6749/7636 as Microsoft's
// identity platform and Dropbox implement them; what differs per provider
// (refresh token rotation, the offline-access switch, error spellings) is an
// option.
import { createHash, randomBytes } from "node:crypto";

export interface Account {
  id: string;
  email: string;
  /** Bytes the account may store. */
  quota: number;
}

interface Grant {
  refreshToken: string;
  accountId: string;
  clientId: string;
  scope: string;
  revoked: boolean;
}

interface Code {
  accountId: string;
  clientId: string;
  redirectUri: string;
  scope: string;
  challenge: string | undefined;
  method: string | undefined;
  offline: boolean;
  expiresAt: number;
}

export interface OAuthOptions {
  /** Token prefixes, so a test can tell one provider's tokens from another's. */
  prefix: string;
  clientId?: string | undefined;
  clientSecret?: string | undefined;
  accessTokenTtlSeconds?: number;
  /** Microsoft issues a new refresh token with every refresh; Dropbox keeps one. */
  rotateRefreshTokens?: boolean;
  /** Whether a refresh token is issued: always (Microsoft with offline_access), or only when the consent request says so. */
  offline: (query: URLSearchParams) => boolean;
  /** The account the consent screen approves for when the request names none. */
  consentEmail?: string;
  newAccount(email: string): Account;
  /** Called after every change worth keeping (grants, tokens, accounts), e.g. to save a snapshot. */
  onChange?: () => void;
}

/** What an OAuthServer keeps across restarts. */
export interface OAuthSnapshot {
  accounts: Account[];
  grants: Grant[];
  old: [string, string][];
  access: [string, { grant: string; expiresAt: number }][];
}

export class OAuthError extends Error {
  readonly status: number;
  readonly error: string;
  readonly description: string;
  constructor(status: number, error: string, description: string) {
    super(description);
    this.status = status;
    this.error = error;
    this.description = description;
  }
}

const token = (prefix: string, kind: string) => `${prefix}.${kind}.${randomBytes(24).toString("base64url")}`;

export class OAuthServer {
  readonly accounts = new Map<string, Account>();
  readonly #grants = new Map<string, Grant>();
  /** Refresh tokens replaced by rotation: still name their grant, as Microsoft keeps them valid for a while. */
  readonly #old = new Map<string, string>();
  readonly #access = new Map<string, { grant: string; expiresAt: number }>();
  readonly #codes = new Map<string, Code>();
  readonly #opts: OAuthOptions;

  constructor(opts: OAuthOptions) {
    this.#opts = opts;
  }

  snapshot(): OAuthSnapshot {
    return {
      accounts: [...this.accounts.values()],
      grants: [...this.#grants.values()],
      old: [...this.#old],
      access: [...this.#access],
    };
  }

  restore(snapshot: OAuthSnapshot): void {
    for (const account of snapshot.accounts) this.accounts.set(account.id, account);
    for (const grant of snapshot.grants) this.#grants.set(grant.refreshToken, grant);
    for (const [old, current] of snapshot.old) this.#old.set(old, current);
    for (const [token, access] of snapshot.access) this.#access.set(token, access);
  }

  #changed(): void {
    this.#opts.onChange?.();
  }

  get accessTtl(): number {
    return this.#opts.accessTokenTtlSeconds ?? 3599;
  }

  accountByEmail(email: string): Account {
    for (const account of this.accounts.values()) if (account.email === email) return account;
    const account = this.#opts.newAccount(email);
    this.accounts.set(account.id, account);
    this.#changed();
    return account;
  }

  /** A grant for `email` made without the consent screen (tests, other processes). */
  mint(email: string, scope = ""): { refreshToken: string; accessToken: string; account: Account } {
    const account = this.accountByEmail(email);
    const refreshToken = token(this.#opts.prefix, "rt");
    this.#grants.set(refreshToken, {
      refreshToken,
      accountId: account.id,
      clientId: this.#opts.clientId ?? "",
      scope,
      revoked: false,
    });
    return { refreshToken, accessToken: this.#issueAccess(refreshToken), account };
  }

  #issueAccess(grant: string): string {
    const access = token(this.#opts.prefix, "at");
    this.#access.set(access, { grant, expiresAt: Date.now() + this.accessTtl * 1000 });
    this.#changed();
    return access;
  }

  #grantOf(refreshToken: string): Grant | undefined {
    return this.#grants.get(this.#old.get(refreshToken) ?? refreshToken);
  }

  /** The account an access token speaks for, or undefined (unknown, expired, revoked). */
  authenticate(header: string | undefined): Account | undefined {
    const match = /^Bearer\s+(.+)$/i.exec(header ?? "");
    const access = match ? this.#access.get(match[1]!.trim()) : undefined;
    if (!access || access.expiresAt <= Date.now()) return undefined;
    const grant = this.#grants.get(access.grant);
    if (!grant || grant.revoked) return undefined;
    return this.accounts.get(grant.accountId);
  }

  /** Whether an access token is known but expired (providers say so apart from "invalid"). */
  isExpired(header: string | undefined): boolean {
    const match = /^Bearer\s+(.+)$/i.exec(header ?? "");
    const access = match ? this.#access.get(match[1]!.trim()) : undefined;
    return access !== undefined && access.expiresAt <= Date.now();
  }

  /** Revokes the grant an access or refresh token belongs to: every token of it stops working. */
  revoke(tokenText: string): boolean {
    const grant = this.#grantOf(tokenText) ?? this.#grants.get(this.#access.get(tokenText)?.grant ?? "");
    if (!grant || grant.revoked) return false;
    grant.revoked = true;
    this.#changed();
    return true;
  }

  /** Revokes every grant of an account (the user removed the app). */
  revokeAccount(email: string): number {
    let n = 0;
    for (const grant of this.#grants.values()) {
      const account = this.accounts.get(grant.accountId);
      if (account?.email === email && !grant.revoked) {
        grant.revoked = true;
        n++;
      }
    }
    this.#changed();
    return n;
  }

  /** As if an hour passed: every access token issued so far is expired. */
  expireAccessTokens(): void {
    for (const access of this.#access.values()) access.expiresAt = 0;
    this.#changed();
  }

  /**
   * The consent screen, approved at once: checks the client and redirect URI
   * (an error page otherwise, never a redirect), then the URL to send the
   * browser back to, with `code` and `state` (or `error`).
   */
  authorize(query: URLSearchParams): { redirect: string } | { page: string } {
    const clientId = query.get("client_id") ?? "";
    const redirectUri = query.get("redirect_uri") ?? "";
    if (this.#opts.clientId && clientId !== this.#opts.clientId) return { page: "unknown client_id" };
    let back: URL;
    try {
      back = new URL(redirectUri);
    } catch {
      return { page: "redirect_uri is missing or not a URL" };
    }
    const state = query.get("state");
    const fail = (error: string, description: string) => {
      back.searchParams.set("error", error);
      back.searchParams.set("error_description", description);
      if (state !== null) back.searchParams.set("state", state);
      return { redirect: back.toString() };
    };
    if (query.get("response_type") !== "code")
      return fail("unsupported_response_type", "response_type must be code");
    const method = query.get("code_challenge_method") ?? undefined;
    if (method !== undefined && method !== "S256" && method !== "plain")
      return fail("invalid_request", "code_challenge_method must be S256 or plain");
    const hint = query.get("login_hint");
    const email =
      hint && /^[^@\s]+@[^@\s]+$/.test(hint) ? hint : (this.#opts.consentEmail ?? "cloud-user@example.com");
    const account = this.accountByEmail(email);
    const code = randomBytes(18).toString("base64url");
    this.#codes.set(code, {
      accountId: account.id,
      clientId,
      redirectUri,
      scope: query.get("scope") ?? "",
      challenge: query.get("code_challenge") ?? undefined,
      method,
      offline: this.#opts.offline(query),
      expiresAt: Date.now() + 10 * 60_000,
    });
    back.searchParams.set("code", code);
    if (state !== null) back.searchParams.set("state", state);
    return { redirect: back.toString() };
  }

  /** The token endpoint: a form body and, optionally, HTTP Basic client authentication. */
  token(form: URLSearchParams, authorization: string | undefined): Record<string, unknown> {
    let clientId = form.get("client_id") ?? "";
    let clientSecret = form.get("client_secret") ?? "";
    const basic = /^Basic\s+(.+)$/i.exec(authorization ?? "");
    if (basic) {
      const [id, ...secret] = Buffer.from(basic[1]!, "base64").toString("utf8").split(":");
      clientId = decodeURIComponent(id ?? "");
      clientSecret = decodeURIComponent(secret.join(":"));
    }
    if (this.#opts.clientId && (clientId !== this.#opts.clientId || clientSecret !== this.#opts.clientSecret))
      throw new OAuthError(401, "invalid_client", "client authentication failed");
    const kind = form.get("grant_type");
    if (kind === "authorization_code") {
      const code = this.#codes.get(form.get("code") ?? "");
      this.#codes.delete(form.get("code") ?? "");
      if (!code || code.expiresAt <= Date.now())
        throw new OAuthError(400, "invalid_grant", "code doesn't exist or has expired");
      if (form.get("redirect_uri") !== code.redirectUri)
        throw new OAuthError(400, "invalid_grant", "redirect_uri mismatch");
      if (code.challenge !== undefined) {
        const verifier = form.get("code_verifier") ?? "";
        const expected =
          code.method === "plain" ? verifier : createHash("sha256").update(verifier).digest("base64url");
        if (expected !== code.challenge) throw new OAuthError(400, "invalid_grant", "invalid code verifier");
      }
      const refreshToken = token(this.#opts.prefix, "rt");
      this.#grants.set(refreshToken, {
        refreshToken,
        accountId: code.accountId,
        clientId,
        scope: code.scope,
        revoked: false,
      });
      return {
        access_token: this.#issueAccess(refreshToken),
        token_type: "Bearer",
        expires_in: this.accessTtl,
        scope: code.scope,
        ...(code.offline ? { refresh_token: refreshToken } : {}),
      };
    }
    if (kind === "refresh_token") {
      const presented = form.get("refresh_token") ?? "";
      const grant = this.#grantOf(presented);
      if (!grant || grant.revoked)
        throw new OAuthError(400, "invalid_grant", "refresh token is invalid or revoked");
      const answer: Record<string, unknown> = {
        access_token: this.#issueAccess(grant.refreshToken),
        token_type: "Bearer",
        expires_in: this.accessTtl,
        scope: grant.scope,
      };
      if (this.#opts.rotateRefreshTokens) {
        const next = token(this.#opts.prefix, "rt");
        this.#old.set(grant.refreshToken, next);
        for (const [old, current] of this.#old) if (current === grant.refreshToken) this.#old.set(old, next);
        this.#grants.delete(grant.refreshToken);
        grant.refreshToken = next;
        this.#grants.set(next, grant);
        for (const access of this.#access.values())
          if (this.#old.get(access.grant) === next) access.grant = next;
        answer.refresh_token = next;
      }
      this.#changed();
      return answer;
    }
    throw new OAuthError(
      400,
      "unsupported_grant_type",
      "grant_type must be authorization_code or refresh_token",
    );
  }
}
