// One worker process of the scale simulation (bundled by simulate.ts with
// build.ts, as the image bundles src/main.ts): the real worker process
// (src/main.ts: configuration, pool, queue, leases, health endpoint, SIGTERM
// hand-back) with the transfer stood in for (stand-in.ts). Test tooling only;
// the production entry has no way to select the stand-in.
//
//   node node-worker/test/scale/worker-main.ts <records file> <min ms> <max ms>
//
// with the worker's usual environment (DATABASE_URL, REDIS_URL, ...).
import { main } from "../../src/main.ts";
import { standInAttempts } from "./stand-in.ts";

const [records, minMs, maxMs] = process.argv.slice(2);
if (!records || !minMs || !maxMs) throw new Error("usage: worker-main.ts <records file> <min ms> <max ms>");
await main({ attempts: standInAttempts({ records, minMs: Number(minMs), maxMs: Number(maxMs) }) });
