// A magnet's info dictionary as the submitter's browser fetched it from the
// swarm. Trusted only after the checks an uploaded .torrent gets: its SHA-1 is
// the job's info hash (so it is the torrent the magnet names, whoever sent
// it), and the same parser with the same limits reads it.
import {
  checkSelectOnly,
  MAX_TORRENT_BYTES,
  parseTorrentFile,
  TorrentError,
  torrentFromInfo,
} from "@torreclou/contracts";
import type { ResolvedTorrent } from "@torreclou/db/jobs";
import { ApiError } from "../errors/index.ts";
import { fromBase64, torrentProblem } from "./input.ts";

function hex(bytes: ArrayBuffer): string {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Reads `infoDictionary` (base64) for the job whose v1 info hash is
 * `infoHash` and whose magnet pre-selects `selectOnly`. Throws ApiError:
 * 400 not base64, 413 over the .torrent limit, 422 a different torrent
 * (`info_hash_mismatch`) or one the parser refuses (the same problems as an
 * uploaded .torrent), or a so= naming files the torrent does not have.
 */
export async function readInfoDictionary(
  base64: string,
  infoHash: string,
  selectOnly: readonly number[] | undefined,
): Promise<ResolvedTorrent> {
  const bytes = fromBase64(base64, "infoDictionary: must be the info dictionary's bytes in base64.");
  if (bytes.length > MAX_TORRENT_BYTES) {
    throw new ApiError(
      413,
      "payload_too_large",
      `The info dictionary is ${bytes.length} bytes; the limit is ${MAX_TORRENT_BYTES} bytes, as for a .torrent file.`,
      { problem: "too_large", size: bytes.length, limit: MAX_TORRENT_BYTES },
    );
  }
  const sent = hex(await crypto.subtle.digest("SHA-1", bytes));
  if (sent !== infoHash) {
    throw new ApiError(
      422,
      "info_hash_mismatch",
      `This info dictionary hashes to ${sent}, not to the job's info hash ${infoHash}: it is not the torrent the magnet link names.`,
      { problem: "info_hash_mismatch", infoHash, sent },
    );
  }
  try {
    const info = await parseTorrentFile(torrentFromInfo(bytes));
    return {
      name: info.name,
      infoHashV2: info.infoHashV2,
      totalSize: info.totalSize,
      pieceLength: info.pieceLength,
      pieceCount: info.pieceCount,
      files: info.files,
      selected: checkSelectOnly(selectOnly, info.files),
      infoDictionary: bytes,
    };
  } catch (err) {
    if (err instanceof TorrentError) throw torrentProblem(err);
    throw err;
  }
}
