// S3-compatible destinations on the worker: the profile's keys into an S3Sink
// (multipart uploads, resumed from the journal; sinks/s3.ts).
import { decryptS3Secret, destinationNameRules } from "@torreclou/contracts";
import { S3Sink } from "../sinks/s3.ts";
import { readable } from "./grant.ts";
import type { WorkerDestination } from "./types.ts";

export const s3: WorkerDestination<"s3"> = {
  kind: "s3",
  label: "S3",
  names: destinationNameRules.s3,
  async open(destination, { config, keyRing, outage, folder, log }) {
    const secret = await decryptS3Secret(keyRing, destination.sealed, destination.id).catch(readable);
    return {
      sink: new S3Sink({
        outage,
        config: destination.config,
        secret,
        folder,
        partSize: config.WORKER_PART_SIZE_BYTES,
        concurrency: config.WORKER_UPLOAD_CONCURRENCY,
        log,
      }),
    };
  },
};
