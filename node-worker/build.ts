// Bundles the worker into one file, node-worker/dist/main.mjs, which is what
// the image runs: no node_modules beside it, no TypeScript stripping at start,
// and ~40 MiB less resident memory than running src/ (resolving drizzle-orm's
// many internal imports re-reads its 180 KB package.json each time, and the
// heap that grows for it is slow to shrink).
//
//   node node-worker/build.ts
import { resolve } from "node:path";
import { build } from "esbuild";

const here = import.meta.dirname;

/**
 * Bundles the worker process into `outfile`. Test tooling may bundle an entry
 * of its own that starts `main()` itself (node-worker/test/scale/worker-main.ts);
 * in such a bundle import.meta is that entry's, so src/main.ts's own start
 * (`if (import.meta.main)`) is turned off.
 */
export async function buildWorker(outfile = resolve(here, "dist/main.mjs"), entry?: string): Promise<string> {
  await build({
    entryPoints: [entry ?? resolve(here, "src/main.ts")],
    ...(entry ? { define: { "import.meta.main": "false" } } : {}),
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node24",
    logLevel: "warning",
    // CommonJS dependencies call require() for Node's own modules.
    banner: {
      js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
    },
    // uTP is a native addon the worker never turns on (TCP peers only); without
    // this alias webtorrent would try to load it and warn at every start.
    alias: { "utp-native": resolve(here, "no-utp.cjs") },
  });
  return outfile;
}

if (import.meta.main) {
  process.stdout.write(`${await buildWorker()}\n`);
}
