// The local S3 (s3.ts) as a process of its own: `node local/s3-main.ts '<S3Options as JSON>'`.
// Log lines go to stdout; SIGTERM or SIGINT stops it cleanly.
import { type S3Options, startS3 } from "./s3.ts";

const options = JSON.parse(process.argv[2] ?? "{}") as S3Options;
const service = await startS3({
  ...options,
  log: (_name, line) => process.stdout.write(`${line}\n`),
});
const stop = () => {
  service.stop().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
