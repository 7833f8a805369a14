// Drive uploads from a browser tab: the edge finds or makes the job's folders
// (as the worker does), opens the file's resumable session with the web app's
// Origin, and hands the tab the session URI; the tab PUTs the chunks itself.
// The session goes in job_files.upload_session, where a worker resumes it.
import { destinationNameRules, storagePath } from "@torreclou/contracts";
import { ApiError } from "../errors/index.ts";
import {
  type DriveApi,
  DriveCallError,
  type DriveFile,
  driveApi,
  driveFile,
  driveFolder,
  driveSessionState,
  startDriveSession,
} from "../storage/drive.ts";
import type { BrowserTransfer, StoredObject, TransferContext, TransferFile } from "./types.ts";

type Ctx = TransferContext<"gdrive">;

/** Bytes per PUT the tab sends: a multiple of Drive's 256 KiB (the worker's default chunk). */
export const DRIVE_CHUNK_BYTES = 8 * 1024 * 1024;

/** The OAuth client the grant was made for (a 503 ApiError when none is configured). */
type ClientOf = (ctx: Ctx) => { clientId: string; clientSecret: string; tokenUrl: string };

/** The file's folder id and stored name, the folders made as needed. */
async function placeOf(
  ctx: Ctx,
  api: DriveApi,
  file: TransferFile,
): Promise<{ parent: string; name: string }> {
  const names = storagePath(ctx.folder, file.path, destinationNameRules.gdrive);
  const name = names.pop()!;
  const parent = await driveFolder(api, ctx.destination.config.rootFolderId ?? "root", names);
  return { parent, name };
}

function storedOf(file: DriveFile): StoredObject {
  return {
    cloudId: file.id,
    cloudUrl: file.webViewLink ?? `https://drive.google.com/file/d/${file.id}/view`,
    checksum: `md5:${file.md5Checksum ?? ""}`,
  };
}

function providerError(error: unknown): never {
  if (error instanceof DriveCallError) {
    throw new ApiError(502, "storage_refused", `Google Drive refused the request (HTTP ${error.status}).`, {
      status: error.status,
    });
  }
  throw error;
}

export function driveTransfer(clientOf: ClientOf): BrowserTransfer<"gdrive"> {
  return {
    async open(ctx, file) {
      try {
        const api = await driveApi(ctx.config, ctx.destination, clientOf(ctx));
        let session = file.uploadSession;
        let state = session ? await driveSessionState(session, file.size) : undefined;
        if (!session || state?.kind === "gone") {
          const place = await placeOf(ctx, api, file);
          session = await startDriveSession(
            api,
            { ...place, size: file.size },
            new URL(ctx.config.WEB_ORIGIN).origin,
          );
          // An empty file is finished by its status query alone.
          state = file.size === 0 ? await driveSessionState(session, 0) : { kind: "partial", committed: 0 };
        }
        const done = state?.kind === "done" ? state.file : undefined;
        return {
          upload: {
            kind: "gdrive",
            sessionUrl: session,
            chunkSize: DRIVE_CHUNK_BYTES,
            offset: done ? file.size : state?.kind === "partial" ? state.committed : 0,
          },
          session,
          stored: done ? storedOf(done) : undefined,
        };
      } catch (error) {
        providerError(error);
      }
    },
    async complete(ctx, file, driveFileId) {
      if (!driveFileId) {
        throw new ApiError(
          422,
          "drive_file_id_required",
          "Send `driveFileId`: the id Google Drive answered the session's last chunk with.",
        );
      }
      try {
        const api = await driveApi(ctx.config, ctx.destination, clientOf(ctx));
        const stored = await driveFile(api, driveFileId);
        const place = await placeOf(ctx, api, file);
        // The file the tab names must be this one: in the job's folder, under its name, whole.
        if (
          !stored ||
          stored.trashed ||
          stored.name !== place.name ||
          !(stored.parents ?? []).includes(place.parent) ||
          Number(stored.size ?? -1) !== file.size
        ) {
          throw new ApiError(
            409,
            "drive_file_mismatch",
            `Google Drive has no file "${place.name}" of ${file.size} bytes with this id in the job's folder.`,
          );
        }
        return storedOf(stored);
      } catch (error) {
        providerError(error);
      }
    },
  };
}
