// Reading a torrent or magnet from a request: body limits, content types,
// JSON bodies and the parse into a TorrentSource (413/415/422 on bad input).
// Shared by POST /api/torrents/analyze and POST /api/jobs.
import {
  MAX_TORRENT_BYTES,
  type MagnetInfo,
  parseMagnet,
  parseTorrentFile,
  TorrentError,
  type TorrentInfo,
} from "@torreclou/contracts";
import { bodyLimit } from "hono/body-limit";
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors/index.ts";

// --- Request bodies ------------------------------------------------------------

/** Largest request body carrying one .torrent: its base64 in JSON, plus room for the other fields. */
export const TORRENT_BODY_LIMIT = Math.ceil(MAX_TORRENT_BYTES / 3) * 4 + 64 * 1024;

const mib = (bytes: number) => `${Math.round((bytes / 1024 / 1024) * 10) / 10} MiB`;

/** 413 once the body passes `max` bytes, checked as it streams in (not only by Content-Length). */
export function limitBody(max: number) {
  return bodyLimit({
    maxSize: max,
    onError: () => {
      throw new ApiError(
        413,
        "payload_too_large",
        `The request body is larger than ${mib(max)}; a .torrent file may be at most ${mib(MAX_TORRENT_BYTES)}.`,
        { limit: max },
      );
    },
  });
}

export function mediaType(header: string | undefined): string {
  return (header ?? "").split(";")[0]!.trim().toLowerCase();
}

/** 415 unless the body is one of `types`. */
export function acceptContentTypes(...types: string[]) {
  return createMiddleware<AppEnv>(async (c, next) => {
    const type = mediaType(c.req.header("content-type"));
    if (!types.includes(type)) {
      throw new ApiError(
        415,
        "unsupported_media_type",
        `Send the body as ${types.join(" or ")}${type ? `, not ${type}` : ""}.`,
        { accepted: types },
      );
    }
    await next();
  });
}

/**
 * Parses a JSON body up front so malformed JSON is a 400 in the one error
 * shape; the zod validator that runs next reuses the parsed body.
 */
export const parseJsonBody = createMiddleware<AppEnv>(async (c, next) => {
  try {
    await c.req.json();
  } catch {
    throw new ApiError(400, "invalid_request", "The body is not valid JSON.");
  }
  await next();
});

/** A TorrentError as the API reports it: 413 for size, 422 for everything else. */
export function torrentProblem(err: TorrentError): ApiError {
  const details = { problem: err.code, ...err.details };
  if (err.code === "too_large") return new ApiError(413, "payload_too_large", err.message, details);
  const code = err.code === "invalid_magnet" ? "invalid_magnet" : "invalid_torrent";
  return new ApiError(422, code, err.message, details);
}

/** Bytes from base64 (standard or URL-safe); 400 with `problem` as the message when it is not. */
export function fromBase64(
  text: string,
  problem = "torrent: must be the .torrent file's bytes in base64.",
): Uint8Array<ArrayBuffer> {
  const clean = text.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(clean)) {
    throw new ApiError(400, "invalid_request", problem);
  }
  let binary: string;
  try {
    binary = atob(clean.replaceAll("-", "+").replaceAll("_", "/"));
  } catch {
    throw new ApiError(400, "invalid_request", problem);
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export type TorrentSource =
  | { kind: "torrent"; info: TorrentInfo; bytes: Uint8Array }
  | { kind: "magnet"; info: MagnetInfo; uri: string };

/** Parses a .torrent (bytes or base64) or a magnet; TorrentError becomes 413/422. */
export async function readSource(input: {
  torrent?: Uint8Array | string | undefined;
  magnet?: string | undefined;
}): Promise<TorrentSource> {
  const given = (input.torrent !== undefined ? 1 : 0) + (input.magnet !== undefined ? 1 : 0);
  if (given !== 1) {
    throw new ApiError(
      400,
      "invalid_request",
      "Send exactly one of a .torrent file (torrent) or a magnet link (magnet).",
    );
  }
  try {
    if (input.magnet !== undefined) {
      const uri = input.magnet.trim();
      return { kind: "magnet", info: parseMagnet(uri), uri };
    }
    const bytes = typeof input.torrent === "string" ? fromBase64(input.torrent) : input.torrent!;
    if (bytes.length > MAX_TORRENT_BYTES) {
      throw new ApiError(
        413,
        "payload_too_large",
        `The .torrent file is ${bytes.length} bytes; the limit is ${MAX_TORRENT_BYTES} bytes (${mib(MAX_TORRENT_BYTES)}).`,
        { problem: "too_large", size: bytes.length, limit: MAX_TORRENT_BYTES },
      );
    }
    return { kind: "torrent", info: await parseTorrentFile(bytes), bytes };
  } catch (err) {
    if (err instanceof TorrentError) throw torrentProblem(err);
    throw err;
  }
}
