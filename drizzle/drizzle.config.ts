// drizzle-kit settings: `drizzle-kit generate` diffs schema.ts against the
// snapshots in migrations/meta and writes the next SQL migration.
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./schema.ts",
  out: "./migrations",
  strict: true,
  verbose: true,
});
