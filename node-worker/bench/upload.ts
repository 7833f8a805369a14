// The benchmark's upload-only baseline, in a process of its own as the worker
// is: the worker's S3 uploader sends files already on disk, two at a time as
// in a job. S3_* variables name the server; argv[2] is a JSON UploadPlan. The
// last line printed is the CPU seconds it used.
//
//   node node-worker/bench/upload.ts '{"bucket":"b","folder":"f","files":[...],...}'
import { pino } from "pino";
import { S3Sink } from "../src/sinks/s3.ts";

export interface UploadPlan {
  bucket: string;
  folder: string;
  partSize: number;
  concurrency: number;
  files: { path: string; size: number; localPath: string }[];
}

const plan = JSON.parse(process.argv[2] ?? "{}") as UploadPlan;
const sink = new S3Sink({
  config: {
    endpoint: process.env.S3_ENDPOINT,
    region: process.env.S3_REGION ?? "us-east-1",
    bucket: plan.bucket,
    forcePathStyle: true,
  },
  secret: {
    accessKeyId: process.env.S3_ACCESS_KEY_ID ?? "",
    secretAccessKey: process.env.S3_SECRET_ACCESS_KEY ?? "",
  },
  folder: plan.folder,
  partSize: plan.partSize,
  concurrency: plan.concurrency,
  log: pino({ level: "warn" }),
});
const signal = new AbortController().signal;
const queue = [...plan.files];
const lane = async () => {
  for (let file = queue.shift(); file; file = queue.shift()) {
    await sink.upload(
      { ...file, uploadSession: null },
      {
        signal,
        ready: async () => {},
        onSession: async () => {},
        onPart: async () => {},
        journal: async () => [],
        clearSession: async () => {},
        onBytes: () => {},
      },
    );
  }
};
await Promise.all([lane(), lane()]);
sink.close();
const cpu = process.cpuUsage();
process.stdout.write(`${(cpu.user + cpu.system) / 1e6}\n`);
