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
          expect: { poll: { timeout: 30_000, interval: 100 } },
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
          // A poll waits for what the page shows after a server round trip; it ends as soon
          // as that holds. The bound is only for failing, so it is generous: a loaded
          // machine must not turn a slow answer into a failure (vitest's own default is 1 s).
          expect: { poll: { timeout: 30_000, interval: 100 } },
        },
      },
    ],
  },
});
