// Connecting an OAuth destination (Google Drive, OneDrive, Dropbox): one flow
// for every provider, each mounted at its own base path (`/api/drive`,
// `/api/onedrive`, `/api/dropbox`) from the provider's module.
//
//   GET  <base>/connect                  → the provider's consent screen (signed state binding + PKCE in cookies)
//   GET  <base>/callback                 ← the provider; saves a storage profile of its kind
//   POST <base>/{profileId}/disconnect   revokes the grant at the provider, deletes the profile
//
// The grant's refresh token is encrypted before it reaches the database
// (contracts/src/credentials.ts, bound to the profile id) and never leaves
// the server. Connecting the same account again (after "needs reconnect",
// say) renews the existing profile instead of adding a second. arctic's
// generic OAuth2Client is used with each provider's endpoints, which are
// overridable so the local stack runs every flow offline against its doubles.
import { createRoute, z } from "@hono/zod-openapi";
import {
  CredentialsError,
  columnsOf,
  decryptOAuthSecret,
  destinationOf,
  encryptSecret,
  type OAuthDestinationKind,
  type OAuthSecret,
} from "@torreclou/contracts";
import { type StorageProfile, storageProfiles, users } from "@torreclou/db";
import {
  ArcticFetchError,
  CodeChallengeMethod,
  generateCodeVerifier,
  generateState,
  OAuth2Client,
  OAuth2RequestError,
  type OAuth2Tokens,
} from "arctic";
import { and, asc, eq } from "drizzle-orm";
import type { Context } from "hono";
import { requireUser } from "../auth/index.ts";
import { FlowCookies, isNavigation, readBinding, sameText, signBinding } from "../auth/oauth-flow.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors/index.ts";
import { rateLimit } from "../limits/index.ts";
import { router } from "../routes/openapi.ts";
import {
  csrfRefused,
  errorResponses,
  registerAuthSchemes,
  sessionOnly,
  signedIn,
} from "../security/openapi.ts";
import { lockUser, passDefaultOn } from "../storage/defaults.ts";
import type { EdgeDestination, OAuthProvider } from "./types.ts";

/** Where the web app lists storage profiles; every flow ends there. */
const storagePage = "/storage";

/** A connection that cannot go on; a browser is sent back to the storage page with `?<key>_error=`. */
class ConnectError extends ApiError {}

const log = (fields: Record<string, unknown>) => console.log(JSON.stringify({ level: "info", ...fields }));

/** The grant as stored: the refresh token and the first access token (workers reuse it). */
function secretOf(tokens: OAuth2Tokens): OAuthSecret {
  const secret: OAuthSecret = { refreshToken: tokens.refreshToken() };
  const data = tokens.data as { access_token?: unknown; expires_in?: unknown };
  if (typeof data.access_token === "string" && data.access_token && typeof data.expires_in === "number") {
    secret.accessToken = data.access_token;
    secret.accessTokenExpiresAt = new Date(Date.now() + data.expires_in * 1000).toISOString();
  }
  return secret;
}

const redirect = { description: "Redirect.", headers: { Location: { schema: { type: "string" as const } } } };

/** The connect, callback and disconnect routes of one OAuth destination. */
export function connectRoutes<K extends OAuthDestinationKind>(
  destination: EdgeDestination<K> & { oauth: OAuthProvider<K> },
) {
  const { kind, label } = destination;
  const provider = destination.oauth;
  const { company, codePrefix, queryKey } = provider;
  const bindingCookie = `${provider.cookiePrefix}_flow`;
  const verifierCookie = `${provider.cookiePrefix}_verifier`;
  const cookies = new FlowCookies<string>(
    provider.basePath,
    [bindingCookie, verifierCookie],
    [
      // Cookies of earlier versions of the Drive flow, cleared at the callback.
      ...(kind === "gdrive" ? ["tc_drive_state", "tc_drive_user"] : []),
    ],
  );
  const audience = `torreclou:${queryKey}-connect`;
  const required = provider.required ?? provider.scopes;

  function storageUrl(c: Context<AppEnv>, params: Record<string, string>): string {
    const url = new URL(storagePage, c.var.config.WEB_ORIGIN);
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    return url.toString();
  }

  /**
   * Saves the grant: renews the user's profile for the same account if there
   * is one (status back to active), else adds a profile, the default if the
   * user has none. Returns the profile and whether it is new.
   */
  async function saveGrant(
    c: Context<AppEnv>,
    secret: OAuthSecret,
    account: { id?: string | undefined; email?: string | undefined },
  ): Promise<{ profile: StorageProfile; created: boolean }> {
    const { config } = c.var;
    const userId = c.var.user.id;
    return c.var.db().transaction(async (tx) => {
      await lockUser(tx, userId);
      const mine = await tx
        .select()
        .from(storageProfiles)
        .where(eq(storageProfiles.userId, userId))
        .orderBy(asc(storageProfiles.createdAt));
      const configOf = (p: StorageProfile) => {
        try {
          return destinationOf(p).config as Parameters<typeof provider.sameAccount>[0];
        } catch {
          return undefined;
        }
      };
      const same = mine.find((p) => {
        const settings = p.kind === kind ? configOf(p) : undefined;
        return settings !== undefined && provider.sameAccount(settings, account);
      });
      const sameConfig = same ? configOf(same) : undefined;
      if (same) {
        // The old refresh token is not revoked: at some providers that would end the whole grant, the new token included.
        const sealed = await encryptSecret(config.CREDENTIALS_KEYS, secret, same.id);
        const [renewed] = await tx
          .update(storageProfiles)
          // Settings the user chose (e.g. a Drive folder) stay; the account's are refreshed.
          .set({
            ...columnsOf(sealed),
            config: { ...sameConfig, ...provider.configOf(account) },
            status: "active",
          })
          .where(eq(storageProfiles.id, same.id))
          .returning();
        return { profile: renewed!, created: false };
      }
      const base = account.email ? `${label} (${account.email})` : label;
      const taken = new Set(mine.map((p) => p.name));
      let name = base;
      for (let n = 2; taken.has(name); n++) name = `${base} ${n}`;
      const id = crypto.randomUUID();
      const sealed = await encryptSecret(config.CREDENTIALS_KEYS, secret, id);
      const [inserted] = await tx
        .insert(storageProfiles)
        .values({
          id,
          userId,
          kind,
          name,
          isDefault: !mine.some((p) => p.isDefault),
          config: provider.configOf(account),
          ...columnsOf(sealed),
        })
        .returning();
      return { profile: inserted!, created: true };
    });
  }

  const connect = createRoute({
    method: "get",
    path: "/connect",
    tags: ["Storage"],
    summary: `Connect ${label}`,
    description: `Redirects the browser to ${company}'s consent screen for the scopes ${provider.scopes.map((s) => `\`${s}\``).join(", ")}, with offline access and PKCE. ${company} sends it back to \`${provider.basePath}/callback\`. Needs the browser session.`,
    security: sessionOnly,
    middleware: [requireUser, rateLimit(`${queryKey}-connect`, 20, "1 m")] as const,
    responses: {
      302: { ...redirect, description: `To ${company}'s consent screen.` },
      ...errorResponses({
        401: "Not signed in.",
        403: `Signed in with an API token; connecting ${label} needs the browser session.`,
        429: "Too many attempts.",
        503: `${label} is not configured on this server.`,
      }),
    },
  });

  const callback = createRoute({
    method: "get",
    path: "/callback",
    tags: ["Storage"],
    summary: `${label} consent callback`,
    description: `Where ${company} returns the browser. Checks the state against the flow's signed binding, which must name the signed-in user and be under 10 minutes old, redeems the code (PKCE), requires a refresh token and the scopes ${required.map((s) => `\`${s}\``).join(", ")}, and saves a ${label} storage profile with the grant encrypted. Redirects to the web app's storage page (\`?${queryKey}=connected\`); on failure a browser lands there with \`?${queryKey}_error=<code>\`, other clients get the JSON error.`,
    security: sessionOnly,
    middleware: [requireUser, rateLimit(`${queryKey}-connect`, 20, "1 m")] as const,
    request: {
      query: z.object({
        code: z.string().optional(),
        state: z.string().optional(),
        scope: z.string().optional(),
        error: z.string().optional(),
        error_description: z.string().optional(),
      }),
    },
    responses: {
      302: { ...redirect, description: "Connected (or, for a browser, failed): the web app's storage page." },
      ...errorResponses({
        400: `Missing, stale, expired or another user's state binding, ${company} reported an error (e.g. the user cancelled), the code was refused, or ${company} granted no offline access or not the scopes asked for.`,
        401: "Not signed in.",
        429: "Too many attempts.",
        502: `${company} could not be reached.`,
        503: `${label} is not configured on this server.`,
      }),
    },
  });

  const disconnect = createRoute({
    method: "post",
    path: "/{profileId}/disconnect",
    tags: ["Storage"],
    summary: `Disconnect ${label}`,
    description: `Revokes TorreClou's access at ${company} where ${company} offers it, then deletes the ${label} storage profile and its encrypted grant. Files already stored stay. If ${company} cannot be reached the profile is kept, so disconnecting can be retried.`,
    security: signedIn,
    middleware: [requireUser] as const,
    request: {
      params: z.object({
        profileId: z
          .uuid("must be a storage profile id (a UUID)")
          .openapi({ param: { name: "profileId", in: "path" } }),
      }),
    },
    responses: {
      204: { description: "Revoked and deleted." },
      ...errorResponses({
        400: "The id is not a UUID.",
        401: "Not signed in.",
        403: csrfRefused,
        404: `No ${label} profile with this id belongs to the caller.`,
        502: `${company} could not be reached to revoke access; nothing was deleted.`,
      }),
    },
  });

  const api = router();
  registerAuthSchemes(api);

  return api
    .openapi(connect, async (c) => {
      if (c.var.user.via !== "session") {
        throw new ApiError(
          403,
          "session_required",
          `Connect ${label} from the web app: an API token cannot change where files are stored.`,
        );
      }
      const { config } = c.var;
      const settings = provider.client(config, c.req.url);
      const client = new OAuth2Client(settings.clientId, settings.clientSecret, settings.redirectUri);
      const state = generateState();
      const verifier = generateCodeVerifier();
      const url = client.createAuthorizationURLWithPKCE(
        settings.authUrl,
        state,
        CodeChallengeMethod.S256,
        verifier,
        provider.scopes,
      );
      const [user] = await c.var
        .db()
        .select({ email: users.email })
        .from(users)
        .where(eq(users.id, c.var.user.id));
      provider.authorize(url, user?.email ?? undefined);
      cookies.set(c, {
        [bindingCookie]: await signBinding(config.SESSION_SECRET, audience, c.var.user.id, state),
        [verifierCookie]: verifier,
      });
      c.header("Cache-Control", "no-store");
      return c.redirect(url.toString(), 302);
    })
    .openapi(callback, async (c) => {
      const { config } = c.var;
      const settings = provider.client(config, c.req.url);
      const client = new OAuth2Client(settings.clientId, settings.clientSecret, settings.redirectUri);
      const saved = cookies.take(c, false);
      const binding = await readBinding(config.SESSION_SECRET, audience, saved[bindingCookie]);
      const verifier = saved[verifierCookie];
      c.header("Cache-Control", "no-store");
      const query = c.req.valid("query");
      const fail: (status: 400 | 502, code: string, message: string) => never = (status, code, message) => {
        throw new ConnectError(status, code, message);
      };
      try {
        if (query.error) {
          if (query.error === "access_denied")
            fail(400, `${codePrefix}_denied`, `Connecting ${label} was cancelled.`);
          fail(
            400,
            `${codePrefix}_error`,
            `${company} refused to connect ${label}: ${query.error_description ?? query.error}.`,
          );
        }
        if (!query.code || !query.state) {
          fail(
            400,
            "invalid_request",
            `The callback needs the \`code\` and \`state\` ${company} sends; connect ${label} again.`,
          );
        }
        if ("problem" in binding && binding.problem === "expired") {
          fail(400, "invalid_state", `This ${label} link has expired. Connect ${label} again.`);
        }
        if (
          "problem" in binding ||
          !verifier ||
          binding.userId !== c.var.user.id ||
          !sameText(binding.state, query.state!)
        ) {
          fail(
            400,
            "invalid_state",
            `This ${label} link is stale or was opened in another browser or account. Connect ${label} again.`,
          );
        }
        let tokens: OAuth2Tokens;
        try {
          tokens = await client.validateAuthorizationCode(settings.tokenUrl, query.code!, verifier!);
        } catch (err) {
          if (err instanceof OAuth2RequestError) {
            fail(
              400,
              `${codePrefix}_exchange_failed`,
              `${company} did not accept the ${label} consent (${err.code}). Connect ${label} again.`,
            );
          }
          if (err instanceof ArcticFetchError)
            fail(502, `${codePrefix}_unavailable`, `${company} could not be reached. Please try again.`);
          fail(
            502,
            `${codePrefix}_unavailable`,
            `${company} answered the code exchange unexpectedly. Please try again.`,
          );
        }
        const data = tokens!.data as Record<string, unknown>;
        const granted = provider.granted(data) ?? required;
        if (!required.every((scope) => granted.includes(scope))) {
          // Consent screens may let people untick a permission; this grant is useless without it.
          const token = typeof data.access_token === "string" ? data.access_token : undefined;
          if (token)
            await provider.revoke(config, { refreshToken: token, accessToken: token }, () => settings);
          fail(
            400,
            `${queryKey}_scope_denied`,
            `${label} access was not granted: allow TorreClou to add files to your ${label} and connect again.`,
          );
        }
        if (!tokens!.hasRefreshToken()) {
          fail(
            400,
            `${queryKey}_no_refresh_token`,
            `${company} granted no offline access, so uploads could not run while you are away. Connect ${label} again.`,
          );
        }
        const secret = secretOf(tokens!);
        const account = secret.accessToken ? await provider.account(config, secret.accessToken) : {};
        const { profile, created } = await saveGrant(c, secret, account);
        log({
          msg: created ? "storage profile created" : "storage profile reconnected",
          userId: c.var.user.id,
          profileId: profile.id,
          kind,
        });
        return c.redirect(storageUrl(c, { [queryKey]: "connected", profile: profile.id }), 302);
      } catch (err) {
        if (err instanceof ConnectError && isNavigation(c)) {
          return c.redirect(storageUrl(c, { [`${queryKey}_error`]: err.code }), 302);
        }
        throw err;
      }
    })
    .openapi(disconnect, async (c) => {
      const { profileId } = c.req.valid("param");
      const { config } = c.var;
      const userId = c.var.user.id;
      const db = c.var.db();
      const [row] = await db
        .select()
        .from(storageProfiles)
        .where(
          and(
            eq(storageProfiles.id, profileId),
            eq(storageProfiles.userId, userId),
            eq(storageProfiles.kind, kind),
          ),
        );
      if (!row) {
        throw new ApiError(404, "storage_profile_not_found", `You have no ${label} connection with this id.`);
      }
      let secret: OAuthSecret | undefined;
      try {
        secret = await decryptOAuthSecret(config.CREDENTIALS_KEYS, destinationOf(row).sealed, row.id);
      } catch (err) {
        // Unreadable with the server's keys: there is nothing we could revoke.
        if (!(err instanceof CredentialsError)) throw err;
      }
      if (secret && !(await provider.revoke(config, secret, () => provider.client(config, c.req.url)))) {
        throw new ApiError(
          502,
          `${codePrefix}_unavailable`,
          `${company} could not be reached to revoke TorreClou's access; the connection was kept. Please try again.`,
        );
      }
      await db.transaction(async (tx) => {
        await lockUser(tx, userId);
        const [deleted] = await tx
          .delete(storageProfiles)
          .where(and(eq(storageProfiles.id, profileId), eq(storageProfiles.userId, userId)))
          .returning({ isDefault: storageProfiles.isDefault });
        if (deleted?.isDefault) await passDefaultOn(tx, userId);
      });
      log({ msg: "storage profile deleted", userId, profileId, kind, revoked: Boolean(secret) });
      return c.body(null, 204);
    });
}

/** A destination module with its OAuth provider, for connectRoutes. */
export function oauthOf<K extends OAuthDestinationKind>(
  destination: EdgeDestination<K>,
): EdgeDestination<K> & { oauth: OAuthProvider<K> } {
  const { oauth } = destination;
  if (!oauth) throw new Error(`${destination.label} is not connected with OAuth`);
  return { ...destination, oauth };
}
