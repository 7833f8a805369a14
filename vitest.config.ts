// One test run for the whole repo. `local/test.ts` starts the services first
// and passes their addresses in the environment (see local/stack.ts).
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "node",
          include: ["{contracts,drizzle,local,node-worker}/**/*.test.ts"],
          exclude: ["**/node_modules/**"],
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
      // Runs inside workerd through @cloudflare/vitest-plugin.
      "edge/vitest.config.ts",
      // The web app's unit and component tests (jsdom).
      "web/vitest.config.ts",
      // The web app end to end: the whole local stack (local/dev.ts) driven by Chromium.
      {
        test: {
          name: "e2e",
          include: ["web/e2e/**/*.test.ts"],
          exclude: ["**/node_modules/**"],
          testTimeout: 180_000,
          hookTimeout: 240_000,
        },
      },
    ],
  },
});
