// Storage profiles: where a user's files go. Saving an S3-compatible profile
// first checks it against the provider with real signed requests (list, write
// and delete a marker); a failing check is a 422 carrying the provider's own
// error code and message. Secrets are encrypted before they reach the database
// (contracts/src/credentials.ts) and never appear in a response: the access key
// id is shown masked, the secret key not at all.
//
// A user's first profile becomes the default; "make default" moves the mark in
// one transaction. Deleting a profile keeps the jobs that used it (their
// storage_profile_id becomes null); deleting the default passes the mark to the
// oldest remaining profile. Other users' profiles are 404 everywhere.
//
// Adding a profile or moving the default changes where files go, so those need
// the browser session; a leaked API token cannot redirect uploads. Listing,
// reading and deleting work with either. An OAuth destination (Google Drive,
// OneDrive, Dropbox) is added by its connect flow (destinations/connect.ts)
// and removed by its disconnect, which also revokes the grant at the
// provider; deleting it here is refused.
import { createRoute, z } from "@hono/zod-openapi";
import { BrowserTransferCheck, columnsOf, encryptSecret } from "@torreclou/contracts";
import { type S3ProfileConfig, storageKinds, storageProfileStatuses, storageProfiles } from "@torreclou/db";
import { and, asc, desc, eq, ne } from "drizzle-orm";
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { requireUser } from "../auth/index.ts";
import { destinations } from "../destinations/index.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors/index.ts";
import { rateLimit } from "../limits/index.ts";
import {
  csrfRefused,
  errorResponses,
  registerAuthSchemes,
  sessionOnly,
  signedIn,
} from "../security/openapi.ts";
import { lockUser, passDefaultOn } from "../storage/defaults.ts";
import { viewOf } from "../storage/profiles.ts";
import { checkEndpoint, checkS3, endpointOf, isIpOrLocalhost } from "../storage/s3.ts";
import { router } from "./openapi.ts";

// --- Schemas -----------------------------------------------------------------

const S3ProfileViewSchema = z
  .object({
    endpoint: z.string().nullable().openapi({ description: "Custom endpoint; null means AWS S3." }),
    region: z.string(),
    bucket: z.string(),
    prefix: z.string().openapi({ description: 'Key prefix of every upload; "" for the bucket root.' }),
    forcePathStyle: z.boolean(),
    accessKeyId: z.string().nullable().openapi({
      example: "AKIA…WXYZ",
      description:
        "Masked. Null when the stored credentials cannot be read with the server's keys (re-enter them).",
    }),
  })
  .openapi("S3ProfileSettings");

const StorageProfileSchema = z
  .object({
    id: z.uuid(),
    kind: z.enum(storageKinds),
    name: z.string().openapi({ example: "Backups on R2" }),
    isDefault: z.boolean(),
    status: z.enum(storageProfileStatuses),
    createdAt: z.iso.datetime(),
    updatedAt: z.iso.datetime(),
    s3: S3ProfileViewSchema.optional(),
    gdrive: z.object({ accountEmail: z.string().nullable(), rootFolderId: z.string().nullable() }).optional(),
    onedrive: z.object({ accountEmail: z.string().nullable() }).optional(),
    dropbox: z.object({ accountEmail: z.string().nullable() }).optional(),
  })
  .openapi("StorageProfile");

const noControl = (value: string) => !/\p{Cc}/u.test(value);

export const CreateS3Profile = z
  .object({
    kind: z.literal("s3", {
      error:
        'must be "s3" (connect Google Drive with GET /api/drive/connect, OneDrive with GET /api/onedrive/connect or Dropbox with GET /api/dropbox/connect instead)',
    }),
    name: z
      .string()
      .trim()
      .min(1, "give the profile a name")
      .max(100, "must be at most 100 characters")
      .refine(noControl, "must not contain control characters")
      .openapi({ example: "Backups on R2" }),
    endpoint: z
      .string()
      .trim()
      .max(2048, "must be at most 2048 characters")
      .optional()
      .transform((v) => (v === "" ? undefined : v))
      .openapi({
        example: "https://<account>.r2.cloudflarestorage.com",
        description: "An S3-compatible endpoint (https). Leave out for AWS S3.",
      }),
    region: z
      .string()
      .trim()
      .regex(/^[a-z0-9-]{1,40}$/, 'must be a region name like "us-east-1" or "auto"')
      .default("us-east-1"),
    bucket: z
      .string()
      .trim()
      .regex(
        /^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$/,
        "must be a bucket name: 3 to 63 lowercase letters, digits, dots, hyphens or underscores",
      ),
    prefix: z
      .string()
      .max(512, "must be at most 512 characters")
      .refine(noControl, "must not contain control characters")
      .transform((v) => v.trim().split("/").filter(Boolean).join("/"))
      .refine(
        (v) => v.split("/").every((s) => s !== "." && s !== ".."),
        'must not contain "." or ".." segments',
      )
      .default("")
      .openapi({ example: "torreclou/", description: "Folder (key prefix) every upload goes under." }),
    forcePathStyle: z.boolean().default(false).openapi({
      description: "Bucket in the URL path instead of the host name (MinIO and most self-hosted).",
    }),
    accessKeyId: z
      .string()
      .trim()
      .min(1, "is required")
      .max(256, "must be at most 256 characters")
      .regex(/^\S+$/, "must not contain spaces"),
    secretAccessKey: z.string().trim().min(1, "is required").max(512, "must be at most 512 characters"),
    makeDefault: z.boolean().optional().openapi({
      description: "Make this the default destination. A user's first profile is the default anyway.",
    }),
  })
  .openapi("CreateS3StorageProfile");

type CreateS3ProfileInput = z.infer<typeof CreateS3Profile>;

const ProfileParams = z.object({
  id: z.uuid("must be a storage profile id (a UUID)").openapi({ param: { name: "id", in: "path" } }),
});

// --- Routes ------------------------------------------------------------------

/** A body that is not JSON at all is a 400 in the one error shape, like any other bad input. */
const jsonBody = createMiddleware<AppEnv>(async (c, next) => {
  try {
    await c.req.json(); // parsed once; the validator reads the cached result
  } catch {
    throw new ApiError(400, "invalid_request", "The body must be a JSON object.");
  }
  await next();
});

const createProfile = createRoute({
  method: "post",
  path: "/",
  tags: ["Storage"],
  summary: "Add a storage profile",
  description:
    "Checks the destination with the given credentials (lists the bucket, writes and deletes a small marker object under the prefix), then saves the profile with its secrets encrypted. Needs the browser session.",
  security: sessionOnly,
  middleware: [requireUser, rateLimit("storage-create", 20, "1 m"), jsonBody] as const,
  request: { body: { required: true, content: { "application/json": { schema: CreateS3Profile } } } },
  responses: {
    201: {
      description: "Saved. `warnings` lists anything the check noticed that does not stop uploads.",
      content: {
        "application/json": {
          schema: z.object({
            profile: StorageProfileSchema,
            warnings: z.array(z.string()),
            browserTransfer: BrowserTransferCheck.nullable().openapi({
              description:
                "Whether a browser tab can upload into the bucket (a CORS preflight from the web app's origin), and the CORS rule to add when not. Fleet jobs do not need it.",
            }),
          }),
        },
      },
    },
    ...errorResponses({
      400: "The body is not valid.",
      401: "Not signed in.",
      403: `Signed in with an API token; adding a profile needs the browser session (\`session_required\`). Or: ${csrfRefused}`,
      409: "The caller already has a profile with this name.",
      422: "The storage provider refused the check; the message carries its error code and message.",
      429: "Too many profiles added recently.",
    }),
  },
});

const listProfiles = createRoute({
  method: "get",
  path: "/",
  tags: ["Storage"],
  summary: "List your storage profiles",
  description: "The default first, then oldest first. Never includes secrets.",
  security: signedIn,
  middleware: [requireUser] as const,
  responses: {
    200: {
      description: "The caller's profiles.",
      content: { "application/json": { schema: z.object({ profiles: z.array(StorageProfileSchema) }) } },
    },
    ...errorResponses({ 401: "Not signed in." }),
  },
});

const getProfile = createRoute({
  method: "get",
  path: "/{id}",
  tags: ["Storage"],
  summary: "Read a storage profile",
  security: signedIn,
  middleware: [requireUser] as const,
  request: { params: ProfileParams },
  responses: {
    200: {
      description: "The profile, without secrets.",
      content: { "application/json": { schema: z.object({ profile: StorageProfileSchema }) } },
    },
    ...errorResponses({
      400: "The id is not a UUID.",
      401: "Not signed in.",
      404: "No profile with this id belongs to the caller.",
    }),
  },
});

const makeDefault = createRoute({
  method: "post",
  path: "/{id}/default",
  tags: ["Storage"],
  summary: "Make a storage profile the default",
  description: "The previous default stops being one in the same transaction. Needs the browser session.",
  security: sessionOnly,
  middleware: [requireUser] as const,
  request: { params: ProfileParams },
  responses: {
    200: {
      description: "The profile, now the default.",
      content: { "application/json": { schema: z.object({ profile: StorageProfileSchema }) } },
    },
    ...errorResponses({
      400: "The id is not a UUID.",
      401: "Not signed in.",
      403: `Signed in with an API token; moving the default needs the browser session (\`session_required\`). Or: ${csrfRefused}`,
      404: "No profile with this id belongs to the caller.",
    }),
  },
});

const deleteProfile = createRoute({
  method: "delete",
  path: "/{id}",
  tags: ["Storage"],
  summary: "Delete a storage profile",
  description:
    "Deletes the profile and its encrypted credentials. Jobs that used it stay in the history without a destination. If it was the default, the oldest remaining profile becomes the default. A Google Drive, OneDrive or Dropbox profile is refused with a 409: disconnect it with `POST /api/<drive|onedrive|dropbox>/{id}/disconnect`, which also revokes TorreClou's access at the provider.",
  security: signedIn,
  middleware: [requireUser] as const,
  request: { params: ProfileParams },
  responses: {
    204: { description: "Deleted." },
    ...errorResponses({
      400: "The id is not a UUID.",
      401: "Not signed in.",
      403: csrfRefused,
      404: "No profile with this id belongs to the caller.",
      409: "A Google Drive, OneDrive or Dropbox profile: disconnect it with its `/disconnect` route instead.",
    }),
  },
});

// --- Helpers -----------------------------------------------------------------

const notFound = () =>
  new ApiError(404, "storage_profile_not_found", "You have no storage profile with this id.");

function sessionRequired(c: Context<AppEnv>, action: string): void {
  if (c.var.user.via !== "session") {
    throw new ApiError(
      403,
      "session_required",
      `${action} from the web app: an API token cannot change where files are stored.`,
    );
  }
}

/** A 400 in the same shape as schema failures, for checks that need the configuration. */
function invalid(path: string, message: string): ApiError {
  return new ApiError(400, "invalid_request", `${path}: ${message}`, {
    target: "json",
    issues: [{ path, message }],
  });
}

/** The Postgres unique constraint a query broke, if that is why it failed (drizzle wraps driver errors). */
function uniqueViolation(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; e && typeof e === "object" && depth < 5; depth++) {
    const { code, constraint, cause } = e as { code?: unknown; constraint?: unknown; cause?: unknown };
    if (code === "23505") return typeof constraint === "string" ? constraint : "";
    e = cause;
  }
  return undefined;
}

const duplicateName = (name: string) =>
  new ApiError(409, "storage_profile_exists", `You already have a storage profile named "${name}".`);

/** Serializes a user's default-changing writes: two at once must not both see "no default". */

const log = (fields: Record<string, unknown>) => console.log(JSON.stringify({ level: "info", ...fields }));

export async function createS3Profile(
  c: Context<AppEnv>,
  input: CreateS3ProfileInput,
  userId: string = c.var.user.id,
) {
  const { config } = c.var;

  let endpoint: string | undefined;
  if (input.endpoint !== undefined) {
    const checked = checkEndpoint(input.endpoint, config.EGRESS_ALLOW);
    if (!checked.ok) throw invalid("endpoint", checked.reason);
    if (isIpOrLocalhost(checked.host) && !input.forcePathStyle) {
      throw invalid(
        "forcePathStyle",
        "must be true for an endpoint addressed by IP or localhost: the bucket cannot go in its host name",
      );
    }
    endpoint = checked.origin;
  }

  const db = c.var.db();
  const [taken] = await db
    .select({ id: storageProfiles.id })
    .from(storageProfiles)
    .where(and(eq(storageProfiles.userId, userId), eq(storageProfiles.name, input.name)));
  if (taken) throw duplicateName(input.name);

  const target = {
    endpoint,
    region: input.region,
    bucket: input.bucket,
    prefix: input.prefix,
    forcePathStyle: input.forcePathStyle,
  };
  const check = await checkS3(
    target,
    { accessKeyId: input.accessKeyId, secretAccessKey: input.secretAccessKey },
    { webOrigin: new URL(config.WEB_ORIGIN).origin },
  );
  if (!check.ok) {
    const { failure } = check;
    log({
      msg: "storage check failed",
      userId,
      endpoint: endpointOf(target),
      bucket: input.bucket,
      step: failure.step,
      code: failure.code,
      status: failure.status,
      detail: failure.detail,
    });
    throw new ApiError(422, "storage_check_failed", failure.message, {
      step: failure.step,
      endpoint: endpointOf(target),
      bucket: input.bucket,
      provider: {
        code: failure.code,
        message: failure.providerMessage ?? null,
        status: failure.status ?? null,
      },
    });
  }

  // The id is made here because the ciphertext is bound to it (additional data).
  const id = crypto.randomUUID();
  const sealed = await encryptSecret(
    config.CREDENTIALS_KEYS,
    { accessKeyId: input.accessKeyId, secretAccessKey: input.secretAccessKey },
    id,
  );
  const profileConfig: S3ProfileConfig = {
    region: input.region,
    bucket: input.bucket,
    forcePathStyle: input.forcePathStyle,
    ...(endpoint !== undefined ? { endpoint } : {}),
    ...(input.prefix !== "" ? { prefix: input.prefix } : {}),
  };

  let row: typeof storageProfiles.$inferSelect | undefined;
  try {
    row = await db.transaction(async (tx) => {
      await lockUser(tx, userId);
      const [current] = await tx
        .select({ id: storageProfiles.id })
        .from(storageProfiles)
        .where(and(eq(storageProfiles.userId, userId), eq(storageProfiles.isDefault, true)));
      const isDefault = input.makeDefault === true || !current;
      if (isDefault && current) {
        await tx.update(storageProfiles).set({ isDefault: false }).where(eq(storageProfiles.id, current.id));
      }
      const [inserted] = await tx
        .insert(storageProfiles)
        .values({
          id,
          userId,
          kind: "s3",
          name: input.name,
          isDefault,
          config: profileConfig,
          ...columnsOf(sealed),
        })
        .returning();
      return inserted;
    });
  } catch (error) {
    if (uniqueViolation(error) === "storage_profiles_user_id_name_unique") throw duplicateName(input.name);
    throw error;
  }
  log({ msg: "storage profile created", userId, profileId: id, kind: "s3", endpoint: endpointOf(target) });
  return {
    profile: await viewOf(config.CREDENTIALS_KEYS, row!, input.accessKeyId),
    warnings: check.warnings,
    browserTransfer: check.browserTransfer ?? null,
  };
}

// --- Handlers ----------------------------------------------------------------

const api = router();
registerAuthSchemes(api);

export const storage = api
  .openapi(createProfile, async (c) => {
    sessionRequired(c, "Add storage profiles");
    const input = c.req.valid("json");
    // One branch per kind: OAuth destinations are created by their connect flow.
    switch (input.kind) {
      case "s3":
        return c.json(await createS3Profile(c, input), 201);
    }
  })
  .openapi(listProfiles, async (c) => {
    const rows = await c.var
      .db()
      .select()
      .from(storageProfiles)
      .where(eq(storageProfiles.userId, c.var.user.id))
      .orderBy(desc(storageProfiles.isDefault), asc(storageProfiles.createdAt), asc(storageProfiles.id));
    const keyring = c.var.config.CREDENTIALS_KEYS;
    return c.json({ profiles: await Promise.all(rows.map((row) => viewOf(keyring, row))) }, 200);
  })
  .openapi(getProfile, async (c) => {
    const { id } = c.req.valid("param");
    const [row] = await c.var
      .db()
      .select()
      .from(storageProfiles)
      .where(and(eq(storageProfiles.id, id), eq(storageProfiles.userId, c.var.user.id)));
    if (!row) throw notFound();
    return c.json({ profile: await viewOf(c.var.config.CREDENTIALS_KEYS, row) }, 200);
  })
  .openapi(makeDefault, async (c) => {
    const { id } = c.req.valid("param");
    const userId = c.var.user.id;
    const row = await c.var.db().transaction(async (tx) => {
      await lockUser(tx, userId);
      const [target] = await tx
        .select({ id: storageProfiles.id, isDefault: storageProfiles.isDefault })
        .from(storageProfiles)
        .where(and(eq(storageProfiles.id, id), eq(storageProfiles.userId, userId)));
      if (!target) throw notFound();
      if (!target.isDefault) {
        // Clear first: the partial unique index allows one default per user at any moment.
        await tx
          .update(storageProfiles)
          .set({ isDefault: false })
          .where(
            and(
              eq(storageProfiles.userId, userId),
              eq(storageProfiles.isDefault, true),
              ne(storageProfiles.id, id),
            ),
          );
        await tx.update(storageProfiles).set({ isDefault: true }).where(eq(storageProfiles.id, id));
      }
      const [updated] = await tx.select().from(storageProfiles).where(eq(storageProfiles.id, id));
      return updated!;
    });
    return c.json({ profile: await viewOf(c.var.config.CREDENTIALS_KEYS, row) }, 200);
  })
  .openapi(deleteProfile, async (c) => {
    const { id } = c.req.valid("param");
    const userId = c.var.user.id;
    await c.var.db().transaction(async (tx) => {
      await lockUser(tx, userId);
      const [target] = await tx
        .select({ kind: storageProfiles.kind })
        .from(storageProfiles)
        .where(and(eq(storageProfiles.id, id), eq(storageProfiles.userId, userId)));
      if (!target) throw notFound();
      const { label, oauth } = destinations[target.kind];
      if (oauth) {
        // Deleting the row alone would leave TorreClou's grant alive at the provider.
        throw new ApiError(
          409,
          `use_${oauth.queryKey}_disconnect`,
          `This is a ${label} connection: disconnect it with POST ${oauth.basePath}/${id}/disconnect, which also revokes TorreClou's access at ${oauth.company}.`,
        );
      }
      const [deleted] = await tx
        .delete(storageProfiles)
        .where(and(eq(storageProfiles.id, id), eq(storageProfiles.userId, userId)))
        .returning({ isDefault: storageProfiles.isDefault });
      if (!deleted) throw notFound();
      if (deleted.isDefault) await passDefaultOn(tx, userId);
    });
    log({ msg: "storage profile deleted", userId, profileId: id });
    return c.body(null, 204);
  });
