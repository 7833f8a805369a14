// drizzle-kit settings: `drizzle-kit generate` diffs schema.ts against the
// snapshots in migrations/meta and writes the next SQL migration. Run it as
// `pnpm --filter @torreclou/db generate`: schema.ts imports the contracts, whose
// ESM-only dependencies (magnet-uri) drizzle-kit's require() reaches only under
// the "import" condition the script sets.
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./schema.ts",
  out: "./migrations",
  strict: true,
  verbose: true,
});
