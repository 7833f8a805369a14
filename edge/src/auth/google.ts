// Google sign-in: OAuth 2.0 authorization code flow with PKCE (arctic), then
// the ID token verified here — signature against Google's published keys,
// issuer, audience (our client id), expiry, and a verified email — before the
// account is trusted. The routes live in routes/auth.ts.
import {
  ArcticFetchError,
  Google,
  generateCodeVerifier,
  generateState,
  OAuth2RequestError,
  UnexpectedErrorResponseBodyError,
  UnexpectedResponseError,
} from "arctic";
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { createRemoteJWKSet, errors as jose, jwtVerify } from "jose";
import type { Config } from "../config.ts";
import { ApiError } from "../errors/index.ts";
import { FlowCookies, sameText } from "./oauth-flow.ts";

export const googleJwksUrl = "https://www.googleapis.com/oauth2/v3/certs";
export const googleIssuers = ["https://accounts.google.com", "accounts.google.com"];
export const googleScopes = ["openid", "email", "profile"];
export const callbackPath = "/api/auth/google/callback";

/**
 * Google's signing keys, fetched on first use and cached by the isolate (jose
 * refetches when a token names a key it has not seen, at most every 30 s).
 */
const googleKeys = createRemoteJWKSet(new URL(googleJwksUrl));

/** What we keep of a Google account, from a verified ID token. */
export interface GoogleProfile {
  sub: string;
  email: string;
  name: string | null;
  picture: string | null;
}

/** A sign-in that cannot go on; the route turns it into a JSON error or a redirect with `?signin_error=`. */
export class SignInError extends ApiError {}

function fail(status: ContentfulStatusCode, code: string, message: string, details?: unknown): never {
  throw new SignInError(status, code, message, details);
}

export function isGoogleConfigured(config: Config): boolean {
  return Boolean(config.GOOGLE_CLIENT_ID && config.GOOGLE_CLIENT_SECRET);
}

/** The arctic client, or a 503 when this deployment has no Google credentials. */
export function googleClient(config: Config, requestUrl: string): Google {
  const { GOOGLE_CLIENT_ID: id, GOOGLE_CLIENT_SECRET: secret } = config;
  if (!id || !secret) {
    throw new ApiError(
      503,
      "google_sign_in_unavailable",
      "Google sign-in is not configured on this server (GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET are unset).",
    );
  }
  const redirectUri = config.GOOGLE_REDIRECT_URI ?? new URL(callbackPath, requestUrl).toString();
  return new Google(id, secret, redirectUri);
}

// The state (CSRF), the PKCE verifier and where to go afterwards live in
// short-lived HttpOnly cookies scoped to the sign-in routes (auth/oauth-flow.ts).
const stateCookie = "tc_google_state";
const verifierCookie = "tc_google_verifier";
const returnCookie = "tc_google_return";
const flowCookies = new FlowCookies("/api/auth/google", [stateCookie, verifierCookie, returnCookie]);

/** Starts a sign-in: sets the flow's cookies and returns Google's consent URL. */
export function beginSignIn(c: Context, google: Google, returnTo: string): URL {
  const state = generateState();
  const verifier = generateCodeVerifier();
  const url = google.createAuthorizationURL(state, verifier, googleScopes);
  url.searchParams.set("prompt", "select_account");
  flowCookies.set(c, { [stateCookie]: state, [verifierCookie]: verifier, [returnCookie]: returnTo });
  return url;
}

/** Reads and clears the flow's cookies: each sign-in attempt is usable once. */
export function takeSignInCookies(c: Context): { state?: string; verifier?: string; returnTo: string } {
  const { [stateCookie]: state, [verifierCookie]: verifier, [returnCookie]: returnTo } = flowCookies.take(c);
  return { state, verifier, returnTo: returnTo && isLocalPath(returnTo) ? returnTo : "/" };
}

/** A path on the web app (`/jobs/1?x=y`), never another origin (`//evil`, `/\evil`). */
export function isLocalPath(value: string): boolean {
  return /^\/(?![/\\])[^\\\s]*$/.test(value) && value.length <= 512;
}

export interface CallbackQuery {
  code?: string | undefined;
  state?: string | undefined;
  error?: string | undefined;
  error_description?: string | undefined;
}

/**
 * Finishes a sign-in: checks the state against the cookie, redeems the code
 * (with the PKCE verifier) and verifies the ID token. Throws SignInError.
 */
export async function completeSignIn(
  google: Google,
  clientId: string,
  query: CallbackQuery,
  saved: { state?: string | undefined; verifier?: string | undefined },
): Promise<GoogleProfile> {
  if (query.error) {
    if (query.error === "access_denied") fail(400, "google_denied", "Google sign-in was cancelled.");
    fail(400, "google_error", `Google refused the sign-in: ${query.error_description ?? query.error}.`, {
      error: query.error,
    });
  }
  if (!query.code || !query.state) {
    fail(
      400,
      "invalid_request",
      "The callback needs the `code` and `state` Google sends; start sign-in again.",
    );
  }
  if (!saved.state || !saved.verifier || !sameText(saved.state, query.state)) {
    fail(
      400,
      "invalid_state",
      "This sign-in link is stale or was opened in another browser. Start sign-in again.",
    );
  }
  let idToken: string;
  try {
    const tokens = await google.validateAuthorizationCode(query.code, saved.verifier);
    idToken = tokens.idToken();
  } catch (err) {
    if (err instanceof OAuth2RequestError) {
      fail(
        401,
        "google_exchange_failed",
        `Google did not accept the sign-in code (${err.code}). Start again.`,
        {
          error: err.code,
        },
      );
    }
    if (
      err instanceof ArcticFetchError ||
      err instanceof UnexpectedResponseError ||
      err instanceof UnexpectedErrorResponseBodyError
    ) {
      fail(502, "google_unavailable", "Google could not be reached to finish sign-in. Please try again.");
    }
    fail(401, "invalid_id_token", "Google's answer had no ID token.");
  }
  return verifyGoogleIdToken(idToken, clientId);
}

/** Verifies an ID token as Google documents it and returns the account. Throws SignInError (401/403). */
export async function verifyGoogleIdToken(idToken: string, clientId: string): Promise<GoogleProfile> {
  let claims: Record<string, unknown>;
  try {
    const verified = await jwtVerify(idToken, googleKeys, {
      issuer: googleIssuers,
      audience: clientId,
      algorithms: ["RS256"],
      clockTolerance: 30,
      requiredClaims: ["sub", "iat", "exp"],
    });
    claims = verified.payload;
  } catch (err) {
    if (err instanceof jose.JWKSTimeout) {
      fail(502, "google_unavailable", "Google's signing keys could not be fetched. Please try again.");
    }
    fail(401, "invalid_id_token", `Google's ID token was rejected: ${idTokenProblem(err)}.`);
  }
  const { sub, email, email_verified: verified, name, picture } = claims;
  if (typeof sub !== "string" || !sub) fail(401, "invalid_id_token", "Google's ID token names no account.");
  if (typeof email !== "string" || !email) {
    fail(401, "invalid_id_token", "Google's ID token has no email address; the email scope is required.");
  }
  // Google sends a boolean; very old tokens carried the string "true".
  if (verified !== true && verified !== "true") {
    fail(403, "email_unverified", `Verify ${email} with Google first, then sign in again.`);
  }
  return {
    sub,
    email,
    name: typeof name === "string" && name ? name : null,
    picture: typeof picture === "string" && /^https:\/\//.test(picture) ? picture : null,
  };
}

function idTokenProblem(err: unknown): string {
  if (err instanceof jose.JWTExpired) return "it has expired";
  if (err instanceof jose.JWTClaimValidationFailed) {
    if (err.claim === "aud") return "it was issued to another application";
    if (err.claim === "iss") return "it was not issued by Google";
    return `its "${err.claim}" claim is not valid`;
  }
  if (err instanceof jose.JWSSignatureVerificationFailed || err instanceof jose.JWKSNoMatchingKey) {
    return "its signature does not match Google's keys";
  }
  if (err instanceof jose.JOSEAlgNotAllowed) return "it is not signed with RS256";
  return "it is malformed";
}
