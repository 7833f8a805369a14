// A stand-in for Google's OAuth endpoints inside workerd tests. It replaces
// the global fetch for the duration of a test (arctic and jose both call the
// global fetch), answers Google's token endpoint and JWKS the way Google
// documents them, and passes every other request (Upstash, ...) through.
//
// The token endpoint is strict like Google's: client credentials, a known and
// unused code (a replay gets `invalid_grant`), the same redirect_uri, and a
// PKCE verifier matching the challenge sent to the consent screen. ID tokens
// are RS256 JWTs signed with a key published at the JWKS URL.
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { type MockInstance, vi } from "vitest";

export const googleAuthorizeUrl = "https://accounts.google.com/o/oauth2/v2/auth";
export const googleTokenUrl = "https://oauth2.googleapis.com/token";
export const googleJwksUrl = "https://www.googleapis.com/oauth2/v3/certs";

export interface IdTokenClaims {
  iss?: string;
  aud?: string;
  azp?: string;
  sub?: string;
  email?: string;
  email_verified?: boolean | string;
  name?: string;
  picture?: string;
  iat?: number;
  exp?: number;
  [claim: string]: unknown;
}

export interface Approval {
  /** Claims to set or override in the ID token Google will issue for this code. */
  claims?: IdTokenClaims;
  /** "stranger": sign with a key Google does not publish (a forged token). */
  signWith?: "google" | "stranger";
  /** Leave the ID token out of the token response. */
  omitIdToken?: boolean;
}

interface Grant extends Approval {
  clientId: string;
  redirectUri: string;
  challenge: string;
  used: boolean;
}

interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

async function newKey(kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  return { kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" } };
}

// One Google key per test isolate: the app caches Google's keys as production does.
let keys: Promise<{ google: SigningKey; stranger: SigningKey }> | undefined;
const signingKeys = () => {
  keys ??= Promise.all([newKey("google-test-key-1"), newKey("stranger-key")]).then(([google, stranger]) => ({
    google,
    stranger,
  }));
  return keys;
};

function oauthError(status: number, error: string, description: string): Response {
  return Response.json({ error, error_description: description }, { status });
}

async function s256(verifier: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  let binary = "";
  for (const b of digest) binary += String.fromCharCode(b);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

export class GoogleDouble {
  readonly clientId: string;
  readonly clientSecret: string;
  /** Requests the double answered, by endpoint. */
  readonly calls = { token: 0, jwks: 0 };
  readonly #grants = new Map<string, Grant>();
  readonly #spy: MockInstance<typeof fetch>;

  constructor(clientId: string, clientSecret: string) {
    this.clientId = clientId;
    this.clientSecret = clientSecret;
    const passThrough = globalThis.fetch.bind(globalThis);
    this.#spy = vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
      const url = input instanceof Request ? input.url : String(input);
      const { origin, pathname } = new URL(url);
      if (url.split("?")[0] === googleTokenUrl) return this.#token(new Request(input, init));
      if (url.split("?")[0] === googleJwksUrl) return this.#jwks();
      if (/(^|\.)google(apis)?\.com$/.test(new URL(origin).hostname)) {
        // Nothing may reach the real Google from a test.
        return new Response(`not served by the test double: ${pathname}`, { status: 404 });
      }
      return passThrough(input, init);
    });
  }

  /** Puts the real fetch back. */
  restore(): void {
    this.#spy.mockRestore();
  }

  /**
   * What Google does when the user consents on the page the app redirected
   * to: checks the request and returns the `code` and `state` it would send
   * to the redirect URI.
   */
  approve(authorizationUrl: string, approval: Approval = {}): { code: string; state: string } {
    const url = new URL(authorizationUrl);
    const p = url.searchParams;
    const problems: string[] = [];
    if (`${url.origin}${url.pathname}` !== googleAuthorizeUrl)
      problems.push(`not Google's consent URL: ${url}`);
    if (p.get("response_type") !== "code") problems.push("response_type must be code");
    if (p.get("client_id") !== this.clientId) problems.push(`unknown client_id ${p.get("client_id")}`);
    if (p.get("code_challenge_method") !== "S256") problems.push("PKCE with S256 is required");
    if (!p.get("code_challenge")) problems.push("code_challenge is missing");
    if (!p.get("state")) problems.push("state is missing");
    if (!p.get("redirect_uri")) problems.push("redirect_uri is missing");
    const scopes = (p.get("scope") ?? "").split(" ");
    for (const scope of ["openid", "email", "profile"]) {
      if (!scopes.includes(scope)) problems.push(`scope ${scope} is missing`);
    }
    if (problems.length > 0) throw new Error(`Google would refuse this request: ${problems.join("; ")}`);
    const code = `4/0A${crypto.randomUUID().replaceAll("-", "")}`;
    this.#grants.set(code, {
      ...approval,
      clientId: this.clientId,
      redirectUri: p.get("redirect_uri")!,
      challenge: p.get("code_challenge")!,
      used: false,
    });
    return { code, state: p.get("state")! };
  }

  /** An ID token as Google would sign it (claims may override the defaults). */
  async idToken(claims: IdTokenClaims = {}, signWith: "google" | "stranger" = "google"): Promise<string> {
    const key = (await signingKeys())[signWith];
    const now = Math.floor(Date.now() / 1000);
    const payload: IdTokenClaims = {
      iss: "https://accounts.google.com",
      azp: this.clientId,
      aud: this.clientId,
      sub: String(100_000_000_000 + Math.floor(Math.random() * 1e11)),
      email: `person-${crypto.randomUUID().slice(0, 8)}@gmail.com`,
      email_verified: true,
      name: "Test Person",
      picture: "https://lh3.googleusercontent.com/a/test-picture",
      iat: now,
      exp: now + 3600,
      ...claims,
    };
    return new SignJWT(payload)
      .setProtectedHeader({ alg: "RS256", kid: key.kid, typ: "JWT" })
      .sign(key.privateKey);
  }

  async #token(request: Request): Promise<Response> {
    this.calls.token++;
    if (request.method !== "POST") return oauthError(405, "invalid_request", "Method not allowed.");
    const form = new URLSearchParams(new TextDecoder().decode(await request.arrayBuffer()));
    const basic = /^Basic (.+)$/.exec(request.headers.get("authorization") ?? "")?.[1];
    const [id, secret] = basic
      ? atob(basic).split(":")
      : [form.get("client_id") ?? "", form.get("client_secret") ?? ""];
    if (id !== this.clientId || secret !== this.clientSecret) {
      return oauthError(401, "invalid_client", "The OAuth client was not found.");
    }
    if (form.get("grant_type") !== "authorization_code") {
      return oauthError(400, "unsupported_grant_type", "Invalid grant_type.");
    }
    const grant = this.#grants.get(form.get("code") ?? "");
    if (!grant || grant.used) return oauthError(400, "invalid_grant", "Malformed auth code.");
    grant.used = true; // single use, even when the rest of the request is wrong
    if (form.get("redirect_uri") !== grant.redirectUri) {
      return oauthError(400, "redirect_uri_mismatch", "Bad Request");
    }
    if ((await s256(form.get("code_verifier") ?? "")) !== grant.challenge) {
      return oauthError(400, "invalid_grant", "Invalid code verifier.");
    }
    const body: Record<string, unknown> = {
      access_token: `ya29.${crypto.randomUUID()}`,
      expires_in: 3599,
      scope:
        "openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile",
      token_type: "Bearer",
    };
    if (!grant.omitIdToken) body.id_token = await this.idToken(grant.claims, grant.signWith);
    return Response.json(body, {
      headers: { "cache-control": "no-cache, no-store, max-age=0, must-revalidate" },
    });
  }

  async #jwks(): Promise<Response> {
    this.calls.jwks++;
    const { google } = await signingKeys();
    return Response.json(
      { keys: [google.publicJwk] },
      { headers: { "cache-control": "public, max-age=21600, must-revalidate" } },
    );
  }
}
