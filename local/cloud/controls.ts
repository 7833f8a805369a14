// The test controls every OAuth storage double answers (under /__): mint a
// grant, expire access tokens, revoke an account's grants, set an account's
// quota, and list an account's files.
import type { OAuthServer } from "./oauth.ts";
import type { Route } from "./server.ts";

/** What a double lets its controls do to its accounts. */
export interface ControlledDouble {
  mintRefreshToken(email: string): unknown;
  setQuota(email: string, bytes: number): void;
  filesOf(email: string): unknown[];
}

export function controlRoutes(double: ControlledDouble, oauth: OAuthServer): Route[] {
  return [
    {
      name: "control",
      method: "POST",
      path: /^\/__accounts$/,
      async handle(ctx) {
        const { email } = await ctx.json<{ email: string }>();
        ctx.send(200, double.mintRefreshToken(email));
      },
    },
    {
      name: "control",
      method: "POST",
      path: /^\/__tokens\/expire$/,
      handle(ctx) {
        oauth.expireAccessTokens();
        ctx.send(204);
      },
    },
    {
      name: "control",
      method: "POST",
      path: /^\/__revoke$/,
      async handle(ctx) {
        const { email } = await ctx.json<{ email: string }>();
        ctx.send(200, { revoked: oauth.revokeAccount(email) });
      },
    },
    {
      name: "control",
      method: "POST",
      path: /^\/__quota$/,
      async handle(ctx) {
        const { email, bytes } = await ctx.json<{ email: string; bytes: number }>();
        double.setQuota(email, bytes);
        ctx.send(204);
      },
    },
    {
      name: "control",
      method: "GET",
      path: /^\/__files$/,
      handle(ctx) {
        ctx.send(200, { files: double.filesOf(ctx.url.searchParams.get("email") ?? "") });
      },
    },
  ];
}
