// Personal API tokens for scripts and the CLI: create (the plaintext is shown
// exactly once), list, revoke. Only the SHA-256 of a token is stored. Every
// token belongs to one user and is invisible (404) to everyone else.
//
// Creating a token needs the browser session: a leaked token must not be able
// to mint longer-lived copies of itself. Listing and revoking work with either.
// Creation is rate limited per user, and a user holds at most 25 active tokens.
import { createRoute, z } from "@hono/zod-openapi";
import { apiTokens } from "@torreclou/db";
import { and, count, desc, eq, isNull } from "drizzle-orm";
import { requireUser } from "../auth/index.ts";
import { generateToken, hashToken } from "../auth/tokens.ts";
import { ApiError } from "../errors/index.ts";
import { rateLimit } from "../limits/index.ts";
import {
  csrfRefused,
  errorResponses,
  registerAuthSchemes,
  sessionOnly,
  signedIn,
} from "../security/openapi.ts";
import { router } from "./openapi.ts";

/** Active tokens a user may hold at once. */
export const maxActiveTokens = 25;
/** Characters of the token kept in clear so a user can tell tokens apart (`tc_` + 8). */
const prefixLength = 11;

const ApiTokenSchema = z
  .object({
    id: z.uuid(),
    name: z.string().openapi({ example: "laptop backup script" }),
    prefix: z.string().openapi({ example: "tc_q3VxL0aZ", description: "The token's first characters." }),
    createdAt: z.iso.datetime(),
    lastUsedAt: z.iso.datetime().nullable(),
  })
  .openapi("ApiToken");

const NewApiTokenSchema = ApiTokenSchema.extend({
  token: z.string().openapi({
    example: "tc_q3VxL0aZ…",
    description: "The token itself. It is shown only in this response; store it now.",
  }),
}).openapi("NewApiToken");

const CreateTokenBody = z
  .object({
    name: z
      .string()
      .trim()
      .min(1, "give the token a name")
      .max(100, "must be at most 100 characters")
      .openapi({ example: "laptop backup script" }),
  })
  .openapi("CreateApiToken");

const TokenParams = z.object({
  id: z.uuid("must be a token id (a UUID)").openapi({ param: { name: "id", in: "path" } }),
});

const createToken = createRoute({
  method: "post",
  path: "/",
  tags: ["API tokens"],
  summary: "Create an API token",
  description:
    "Creates a personal API token for scripts (`Authorization: Bearer tc_…`). The plaintext token is in this response only. Needs the browser session.",
  security: sessionOnly,
  middleware: [requireUser, rateLimit("tokens-create", 10, "1 m")] as const,
  request: {
    body: { required: true, content: { "application/json": { schema: CreateTokenBody } } },
  },
  responses: {
    201: {
      description: "The new token, with its plaintext.",
      content: { "application/json": { schema: NewApiTokenSchema } },
    },
    ...errorResponses({
      400: "The body is not valid.",
      401: "Not signed in.",
      403: `Signed in with an API token; creating tokens needs the browser session (\`session_required\`). Or: ${csrfRefused}`,
      409: `The user already has ${maxActiveTokens} active tokens.`,
      429: "More than 10 tokens created in a minute.",
    }),
  },
});

const listTokens = createRoute({
  method: "get",
  path: "/",
  tags: ["API tokens"],
  summary: "List your API tokens",
  description: "The caller's active (not revoked) tokens, newest first. Never includes a token itself.",
  security: signedIn,
  middleware: [requireUser] as const,
  responses: {
    200: {
      description: "The caller's active tokens.",
      content: { "application/json": { schema: z.object({ tokens: z.array(ApiTokenSchema) }) } },
    },
    ...errorResponses({ 401: "Not signed in." }),
  },
});

const revokeToken = createRoute({
  method: "delete",
  path: "/{id}",
  tags: ["API tokens"],
  summary: "Revoke an API token",
  description: "The token stops working at once: any request that presents it gets 401.",
  security: signedIn,
  middleware: [requireUser] as const,
  request: { params: TokenParams },
  responses: {
    204: { description: "Revoked." },
    ...errorResponses({
      400: "The id is not a UUID.",
      401: "Not signed in.",
      403: csrfRefused,
      404: "No active token with this id belongs to the caller.",
    }),
  },
});

const columns = {
  id: apiTokens.id,
  name: apiTokens.name,
  prefix: apiTokens.prefix,
  createdAt: apiTokens.createdAt,
  lastUsedAt: apiTokens.lastUsedAt,
};

function present(row: {
  id: string;
  name: string;
  prefix: string;
  createdAt: Date;
  lastUsedAt: Date | null;
}) {
  return {
    id: row.id,
    name: row.name,
    prefix: row.prefix,
    createdAt: row.createdAt.toISOString(),
    lastUsedAt: row.lastUsedAt?.toISOString() ?? null,
  };
}

const api = router();
registerAuthSchemes(api);

export const tokens = api
  .openapi(createToken, async (c) => {
    const user = c.var.user;
    if (user.via !== "session") {
      throw new ApiError(
        403,
        "session_required",
        "Create API tokens from the web app: an API token cannot create other tokens.",
      );
    }
    const { name } = c.req.valid("json");
    const db = c.var.db();
    const [active] = await db
      .select({ n: count() })
      .from(apiTokens)
      .where(and(eq(apiTokens.userId, user.id), isNull(apiTokens.revokedAt)));
    if ((active?.n ?? 0) >= maxActiveTokens) {
      throw new ApiError(
        409,
        "too_many_tokens",
        `You already have ${maxActiveTokens} active API tokens; revoke one you no longer use first.`,
      );
    }
    const token = generateToken();
    const [row] = await db
      .insert(apiTokens)
      .values({
        userId: user.id,
        name,
        tokenHash: await hashToken(token),
        prefix: token.slice(0, prefixLength),
      })
      .returning(columns);
    return c.json({ ...present(row!), token }, 201);
  })
  .openapi(listTokens, async (c) => {
    const rows = await c.var
      .db()
      .select(columns)
      .from(apiTokens)
      .where(and(eq(apiTokens.userId, c.var.user.id), isNull(apiTokens.revokedAt)))
      .orderBy(desc(apiTokens.createdAt), desc(apiTokens.id));
    return c.json({ tokens: rows.map(present) }, 200);
  })
  .openapi(revokeToken, async (c) => {
    const { id } = c.req.valid("param");
    const [revoked] = await c.var
      .db()
      .update(apiTokens)
      .set({ revokedAt: new Date() })
      .where(and(eq(apiTokens.id, id), eq(apiTokens.userId, c.var.user.id), isNull(apiTokens.revokedAt)))
      .returning({ id: apiTokens.id });
    if (!revoked) throw new ApiError(404, "token_not_found", "You have no active API token with this id.");
    return c.body(null, 204);
  });
