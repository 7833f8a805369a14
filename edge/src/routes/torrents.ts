// POST /api/torrents/analyze: what is in a .torrent or a magnet link, before
// any job exists. The browser reads .torrent files itself with the same
// parser (contracts/src/torrent.ts); this route serves scripts and API tokens.
//
// Input: a .torrent as the raw body (`application/x-bittorrent`), as the
// `file` field of a multipart form, or base64 in JSON `{ "torrent": … }`; or a
// magnet link in JSON `{ "magnet": … }` (or a `magnet` form field). Bodies
// over the stated limit get 413 before they are read in full, other content
// types 415, a torrent the parser refuses 422 naming the problem (among them
// `name_clash`: two files a destination would store under one name, both
// named in the message and in details.paths; contracts/src/names.ts).
//
// The body helpers (torrents/input.ts) are shared with POST /api/jobs, which
// takes the same torrent or magnet.
import { createRoute, z } from "@hono/zod-openapi";
import {
  HEALTH_CACHE_SECONDS,
  HEALTH_PENDING_SECONDS,
  HealthRequest,
  healthKeys,
  healthRequest,
  MAX_HEALTH_TRACKERS,
  MAX_TORRENT_BYTES,
  type SwarmHealth,
  TrackerUrl,
} from "@torreclou/contracts";
import { requireUser } from "../auth/index.ts";
import { ApiError } from "../errors/index.ts";
import { rateLimit } from "../limits/index.ts";
import { csrfRefused, errorResponses, registerAuthSchemes, signedIn } from "../security/openapi.ts";
import {
  acceptContentTypes,
  limitBody,
  mediaType,
  readSource,
  TORRENT_BODY_LIMIT,
  type TorrentSource,
} from "../torrents/input.ts";
import { router } from "./openapi.ts";

const torrentTypes = ["application/x-bittorrent", "application/octet-stream"];
const analyzeTypes = [...torrentTypes, "multipart/form-data", "application/json"];

const AnalyzeJson = z.object({
  torrent: z.string().optional(),
  magnet: z.string().optional(),
});

/** Reads the analyze body in whichever of its accepted forms it came. */
async function readAnalyzeBody(request: Request): Promise<TorrentSource> {
  const type = mediaType(request.headers.get("content-type") ?? undefined);
  if (torrentTypes.includes(type))
    return readSource({ torrent: new Uint8Array(await request.arrayBuffer()) });
  if (type === "multipart/form-data") {
    let form: FormData;
    try {
      form = await request.formData();
    } catch {
      throw new ApiError(400, "invalid_request", "The multipart form could not be read.");
    }
    const file = form.get("file");
    const magnet = form.get("magnet");
    if (file !== null && typeof file !== "string") {
      return readSource({ torrent: new Uint8Array(await file.arrayBuffer()) });
    }
    if (typeof magnet === "string") return readSource({ magnet });
    throw new ApiError(
      400,
      "invalid_request",
      'Put the .torrent file in the form field "file" (or a magnet link in "magnet").',
    );
  }
  let json: unknown;
  try {
    json = await request.json();
  } catch {
    throw new ApiError(400, "invalid_request", "The body is not valid JSON.");
  }
  const parsed = AnalyzeJson.safeParse(json);
  if (!parsed.success) {
    throw new ApiError(
      400,
      "invalid_request",
      'Send JSON like {"magnet": "magnet:?xt=urn:btih:…"} or {"torrent": "<base64>"}.',
    );
  }
  return readSource(parsed.data);
}

// --- Schemas -------------------------------------------------------------------

const hex40 = z.string().regex(/^[0-9a-f]{40}$/);
const hex64 = z.string().regex(/^[0-9a-f]{64}$/);

export const TorrentFileSchema = z
  .object({
    index: z
      .number()
      .int()
      .min(0)
      .openapi({ description: "Position in the torrent's file list; select files by it." }),
    path: z.string().openapi({ example: "Album/CD1/01 Intro.flac" }),
    size: z.number().int().min(0),
  })
  .openapi("TorrentFile");

const TorrentAnalysisSchema = z
  .object({
    source: z.literal("torrent"),
    infoHash: hex40.openapi({ description: "BitTorrent v1 info hash (hex SHA-1 of the info dictionary)." }),
    infoHashV2: hex64.optional().openapi({ description: "v2 info hash (hex SHA-256), for hybrid torrents." }),
    name: z.string(),
    files: z.array(TorrentFileSchema),
    totalSize: z.number().int().min(0),
    pieceLength: z.number().int().min(1),
    pieceCount: z.number().int().min(1),
    trackers: z.array(z.string()),
    private: z.boolean(),
  })
  .openapi("TorrentAnalysis");

const MagnetAnalysisSchema = z
  .object({
    source: z.literal("magnet"),
    infoHash: hex40,
    infoHashV2: hex64.optional(),
    name: z.string().nullable().openapi({ description: "The link's display name (dn), if any." }),
    trackers: z.array(z.string()),
    files: z.null().openapi({ description: "Unknown until a worker fetches the metadata from peers." }),
  })
  .openapi("MagnetAnalysis");

const AnalysisSchema = z.discriminatedUnion("source", [TorrentAnalysisSchema, MagnetAnalysisSchema]);

function present(source: TorrentSource): z.infer<typeof AnalysisSchema> {
  if (source.kind === "torrent") return { source: "torrent", ...source.info };
  const { infoHash, infoHashV2, name, trackers } = source.info;
  return {
    source: "magnet",
    infoHash,
    ...(infoHashV2 ? { infoHashV2 } : {}),
    name: name ?? null,
    trackers,
    files: null,
  };
}

// --- Route ---------------------------------------------------------------------

const analyze = createRoute({
  method: "post",
  path: "/analyze",
  tags: ["Torrents"],
  summary: "Analyze a .torrent or magnet link",
  description: `Reads a .torrent (at most ${MAX_TORRENT_BYTES} bytes) or a magnet link and returns its info hash(es), name, files, sizes, pieces and trackers. Nothing is stored.`,
  security: signedIn,
  middleware: [
    requireUser,
    rateLimit("torrents-analyze", 60, "1 m"),
    acceptContentTypes(...analyzeTypes),
    limitBody(TORRENT_BODY_LIMIT),
  ] as const,
  // Described here, read by the handler: each form needs its own size handling.
  request: {
    body: {
      required: true,
      content: {
        "application/x-bittorrent": { schema: { type: "string", format: "binary" } },
        "multipart/form-data": {
          schema: {
            type: "object",
            properties: {
              file: { type: "string", format: "binary", description: "The .torrent file." },
              magnet: { type: "string", description: "Or a magnet link." },
            },
          },
        },
        "application/json": {
          schema: {
            type: "object",
            properties: {
              magnet: {
                type: "string",
                example: "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a",
              },
              torrent: { type: "string", format: "byte", description: "Or the .torrent in base64." },
            },
          },
        },
      },
    },
  },
  responses: {
    200: {
      description: "What the torrent holds.",
      content: { "application/json": { schema: AnalysisSchema } },
    },
    ...errorResponses({
      400: "The body is malformed (bad JSON, missing field, bad base64).",
      401: "Not signed in.",
      403: csrfRefused,
      413: `The body or the .torrent is too large (a .torrent may be at most ${MAX_TORRENT_BYTES} bytes).`,
      415: "The body is not a .torrent, a multipart form or JSON.",
      422: "The .torrent or magnet link is invalid or unsafe; the message names the problem and details.problem its code (name_clash: two files a destination would store under one name, in details.paths).",
      429: "Too many requests.",
    }),
  },
});

const HealthBody = z
  .object({
    infoHash: z
      .string()
      .regex(/^[0-9a-fA-F]{40}$/, "must be a v1 info hash (40 hex characters)")
      .openapi({ example: "c12fe1c06bba254a9dc9f519b335aa7c1367a88a" }),
    trackers: z
      .array(TrackerUrl)
      .min(1, "give at least one tracker (the torrent's announce URLs)")
      .max(MAX_HEALTH_TRACKERS, `at most ${MAX_HEALTH_TRACKERS} trackers`),
  })
  .openapi("SwarmHealthRequest");

const TrackerHealthSchema = z.object({
  tracker: z
    .string()
    .openapi({ description: "The tracker's scheme, host and port (its path may hold a passkey)." }),
  seeders: z.number().int().optional(),
  leechers: z.number().int().optional(),
  completed: z.number().int().optional(),
  error: z.string().optional(),
});

const HealthAnswer = z
  .object({
    state: z.enum(["pending", "done"]),
    health: z
      .object({
        checkedAt: z.iso.datetime(),
        trackers: z.array(TrackerHealthSchema),
        seeders: z.number().int().optional(),
        verdict: z
          .string()
          .openapi({ example: "No seeders reported by any tracker: the download may never finish." }),
      })
      .optional(),
  })
  .openapi("SwarmHealth");

const health = createRoute({
  method: "post",
  path: "/health",
  tags: ["Torrents"],
  summary: "Seeders and leechers the trackers report",
  description: `Asks the worker fleet to scrape the trackers (HTTP and UDP, BEP 48 / BEP 15) for the info hash, under the same egress policy as downloads. Answers 202 \`pending\` until a worker has an answer; ask again with the same body (every 2 s or so). Answers are kept ${HEALTH_CACHE_SECONDS} s for the same hash and trackers.`,
  security: signedIn,
  middleware: [requireUser, rateLimit("torrents-health", 120, "1 m")] as const,
  request: { body: { required: true, content: { "application/json": { schema: HealthBody } } } },
  responses: {
    200: { description: "The trackers' counts.", content: { "application/json": { schema: HealthAnswer } } },
    202: {
      description: "Asked; not answered yet.",
      content: { "application/json": { schema: HealthAnswer } },
    },
    ...errorResponses({
      400: "The body is not valid (info hash, tracker URLs).",
      401: "Not signed in.",
      403: csrfRefused,
      429: "Too many requests.",
    }),
  },
});

const api = router();
registerAuthSchemes(api);

export const torrents = api
  .openapi(analyze, async (c) => {
    const source = await readAnalyzeBody(c.req.raw);
    return c.json(present(source), 200);
  })
  .openapi(health, async (c) => {
    const body = c.req.valid("json");
    const request = HealthRequest.parse(await healthRequest(body.infoHash, body.trackers));
    const redis = c.var.redis;
    const cached = await redis.get<SwarmHealth>(healthKeys.result(request.id));
    if (cached) return c.json({ state: "done" as const, health: cached }, 200);
    // Queued once while pending; a worker blocked on the list takes it at once.
    const fresh = await redis.set(healthKeys.pending(request.id), "1", {
      nx: true,
      ex: HEALTH_PENDING_SECONDS,
    });
    if (fresh) await redis.lpush(healthKeys.requests, JSON.stringify(request));
    return c.json({ state: "pending" as const }, 202);
  });
