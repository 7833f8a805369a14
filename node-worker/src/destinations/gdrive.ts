// Google Drive on the worker: the profile's grant into a DriveSink (Drive's
// resumable upload protocol; sinks/drive.ts), with refreshed access tokens
// written back to the profile.
import { destinationNameRules } from "@torreclou/contracts";
import { DriveSink } from "../sinks/drive.ts";
import { PermanentJobError } from "../sinks/index.ts";
import { openGrant } from "./grant.ts";
import type { WorkerDestination } from "./types.ts";

export const gdrive: WorkerDestination<"gdrive"> = {
  kind: "gdrive",
  label: "Google Drive",
  names: destinationNameRules.gdrive,
  async open(destination, ctx) {
    const { config, outage, folder, log } = ctx;
    let refreshToken = "";
    const grant = await openGrant(destination, "Google Drive", ctx, () => refreshToken);
    const { GOOGLE_CLIENT_ID: clientId, GOOGLE_CLIENT_SECRET: clientSecret } = config;
    if (!clientId || !clientSecret) {
      throw new PermanentJobError(
        "This worker cannot upload to Google Drive: its operator has not set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET.",
      );
    }
    refreshToken = grant.secret.refreshToken;
    const sink = new DriveSink({
      oauth: {
        clientId,
        clientSecret,
        refreshToken,
        tokenUrl: config.GOOGLE_OAUTH_TOKEN_URL,
        accessToken: grant.stored,
        // Other attempts and workers reuse the token instead of each refreshing its own.
        onAccessToken: (token) => grant.save(refreshToken, token),
        log,
      },
      outage,
      rootFolderId: destination.config.rootFolderId,
      folder,
      chunkSize: config.WORKER_DRIVE_CHUNK_BYTES,
      apiBaseUrl: config.DRIVE_API_BASE_URL,
      log,
    });
    return { sink, needsReconnect: () => grant.needsReconnect() };
  },
};
