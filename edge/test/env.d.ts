// Bindings the edge tests receive (see edge/vitest.config.ts), typed for
// `import { env } from "cloudflare:workers"`.
declare namespace Cloudflare {
  interface Env {
    DATABASE_URL: string;
    NEON_LOCAL_PROXY: string;
    UPSTASH_REDIS_REST_URL: string;
    UPSTASH_REDIS_REST_TOKEN: string;
    S3_ENDPOINT: string;
    S3_REGION: string;
    S3_BUCKET: string;
    S3_ACCESS_KEY_ID: string;
    S3_SECRET_ACCESS_KEY: string;
    SESSION_SECRET: string;
    CREDENTIALS_KEYS: string;
    DEV_SIGN_IN: string;
    GOOGLE_CLIENT_ID: string;
    GOOGLE_CLIENT_SECRET: string;
    GOOGLE_REDIRECT_URI: string;
    EGRESS_ALLOW: string;
    /** The probe server (test/probe-server.ts): an HTTP server whose every answer carries PROBE_SECRET. */
    PROBE_ORIGIN: string;
    PROBE_SECRET: string;
    GOOGLE_OAUTH_AUTH_URL: string;
    GOOGLE_OAUTH_TOKEN_URL: string;
    GOOGLE_OAUTH_REVOKE_URL: string;
    DRIVE_API_BASE_URL: string;
    GOOGLE_DRIVE_REDIRECT_URI: string;
    MICROSOFT_CLIENT_ID: string;
    MICROSOFT_CLIENT_SECRET: string;
    MICROSOFT_OAUTH_AUTH_URL: string;
    MICROSOFT_OAUTH_TOKEN_URL: string;
    GRAPH_API_BASE_URL: string;
    ONEDRIVE_REDIRECT_URI: string;
    DROPBOX_APP_KEY: string;
    DROPBOX_APP_SECRET: string;
    DROPBOX_OAUTH_AUTH_URL: string;
    DROPBOX_OAUTH_TOKEN_URL: string;
    DROPBOX_API_BASE_URL: string;
    DROPBOX_REDIRECT_URI: string;
    WEB_ORIGIN: string;
  }
}
