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
          // The local S3 server, for the storage profile checks.
          S3_ENDPOINT: fromEnv("S3_ENDPOINT"),
          S3_REGION: fromEnv("S3_REGION"),
          S3_BUCKET: fromEnv("S3_BUCKET"),
          S3_ACCESS_KEY_ID: fromEnv("S3_ACCESS_KEY_ID"),
          S3_SECRET_ACCESS_KEY: fromEnv("S3_SECRET_ACCESS_KEY"),
          // Test-only values: nothing outside this run trusts them.
          SESSION_SECRET: "edge-tests-session-secret-0123456789abcdef",
          // The test stack's key ring, so the worker's tests can read what the edge writes.
          CREDENTIALS_KEYS:
            process.env.CREDENTIALS_KEYS || "edge-tests:ZWRnZS10ZXN0cy1jcmVkZW50aWFscy1rZXktMzJiISE=",
          DEV_SIGN_IN: "true",
          // Google sign-in against the test double in test/google.ts.
          GOOGLE_CLIENT_ID: "edge-tests.apps.googleusercontent.com",
          GOOGLE_CLIENT_SECRET: "edge-tests-google-client-secret",
          GOOGLE_REDIRECT_URI: "http://127.0.0.1:8787/api/auth/google/callback",
          ALLOW_PRIVATE_STORAGE_ENDPOINTS: "true",
          // Connecting Google Drive against the test stack's Drive double (local/drive).
          GOOGLE_OAUTH_AUTH_URL: fromEnv("GOOGLE_OAUTH_AUTH_URL"),
          GOOGLE_OAUTH_TOKEN_URL: fromEnv("GOOGLE_OAUTH_TOKEN_URL"),
          GOOGLE_OAUTH_REVOKE_URL: fromEnv("GOOGLE_OAUTH_REVOKE_URL"),
          DRIVE_API_BASE_URL: fromEnv("DRIVE_API_BASE_URL"),
          GOOGLE_DRIVE_REDIRECT_URI: "http://127.0.0.1:8787/api/drive/callback",
          WEB_ORIGIN: "http://127.0.0.1:5173",
        },
      },
    }),
  ],
  test: {
    name: "edge",
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 30_000,
  },
});
