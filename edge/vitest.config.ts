// Edge tests run inside workerd. The local services (Postgres behind the Neon
// proxy, Upstash) are started by the test runner, which passes their addresses
// in the environment; here they become the Worker's bindings. The probe server
// (test/probe-server.ts) is started by this project's global setup.
import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

const fromEnv = (name: string) => process.env[name] ?? "";

/** `host:port` of a URL from the environment, or "" when it is not set. */
const hostPortOf = (url: string) => (url ? new URL(url).host : "");

export default defineConfig({
  plugins: [
    cloudflareTest(({ inject }) => ({
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
          // The egress policy's exceptions: exactly the local S3 server, the probe
          // server, and a loopback port nothing listens on (a refused connection).
          EGRESS_ALLOW: [hostPortOf(fromEnv("S3_ENDPOINT")), hostPortOf(inject("probeOrigin")), "127.0.0.1:1"]
            .filter(Boolean)
            .join(","),
          PROBE_ORIGIN: inject("probeOrigin"),
          PROBE_SECRET: inject("probeSecret"),
          // Connecting Google Drive against the test stack's Drive double (local/drive).
          GOOGLE_OAUTH_AUTH_URL: fromEnv("GOOGLE_OAUTH_AUTH_URL"),
          GOOGLE_OAUTH_TOKEN_URL: fromEnv("GOOGLE_OAUTH_TOKEN_URL"),
          GOOGLE_OAUTH_REVOKE_URL: fromEnv("GOOGLE_OAUTH_REVOKE_URL"),
          DRIVE_API_BASE_URL: fromEnv("DRIVE_API_BASE_URL"),
          GOOGLE_DRIVE_REDIRECT_URI: "http://127.0.0.1:8787/api/drive/callback",
          // Connecting OneDrive and Dropbox against the test stack's doubles (local/onedrive, local/dropbox).
          MICROSOFT_CLIENT_ID: "edge-tests-microsoft-client",
          MICROSOFT_CLIENT_SECRET: "edge-tests-microsoft-secret",
          MICROSOFT_OAUTH_AUTH_URL: fromEnv("MICROSOFT_OAUTH_AUTH_URL"),
          MICROSOFT_OAUTH_TOKEN_URL: fromEnv("MICROSOFT_OAUTH_TOKEN_URL"),
          GRAPH_API_BASE_URL: fromEnv("GRAPH_API_BASE_URL"),
          ONEDRIVE_REDIRECT_URI: "http://127.0.0.1:8787/api/onedrive/callback",
          DROPBOX_APP_KEY: "edge-tests-dropbox-app",
          DROPBOX_APP_SECRET: "edge-tests-dropbox-secret",
          DROPBOX_OAUTH_AUTH_URL: fromEnv("DROPBOX_OAUTH_AUTH_URL"),
          DROPBOX_OAUTH_TOKEN_URL: fromEnv("DROPBOX_OAUTH_TOKEN_URL"),
          DROPBOX_API_BASE_URL: fromEnv("DROPBOX_API_BASE_URL"),
          DROPBOX_REDIRECT_URI: "http://127.0.0.1:8787/api/dropbox/callback",
          WEB_ORIGIN: "http://127.0.0.1:5173",
        },
      },
    })),
  ],
  test: {
    name: "edge",
    globalSetup: ["test/probe-server.ts"],
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 30_000,
  },
});
