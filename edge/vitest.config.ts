// Edge tests run inside workerd. The local services (Postgres behind the Neon
// proxy, Upstash) are started by the test runner, which passes their addresses
// in the environment; here they become the Worker's bindings.
import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

const fromEnv = (name: string) => process.env[name] ?? "";

export default defineConfig({
  plugins: [
    cloudflareTest({
      miniflare: {
        compatibilityDate: "2026-11-01",
        compatibilityFlags: ["nodejs_compat"],
        bindings: {
          DATABASE_URL: fromEnv("DATABASE_URL"),
          NEON_LOCAL_PROXY: fromEnv("NEON_LOCAL_PROXY"),
          UPSTASH_REDIS_REST_URL: fromEnv("UPSTASH_REDIS_REST_URL"),
          UPSTASH_REDIS_REST_TOKEN: fromEnv("UPSTASH_REDIS_REST_TOKEN"),
          // Test-only values: nothing outside this run trusts them.
          SESSION_SECRET: "edge-tests-session-secret-0123456789abcdef",
          DEV_SIGN_IN: "true",
          WEB_ORIGIN: "http://127.0.0.1:5173",
        },
      },
    }),
  ],
  test: {
    name: "edge",
    include: ["src/**/*.test.ts"],
    testTimeout: 30_000,
  },
});
