// Bindings the edge tests receive (see edge/vitest.config.ts), typed for
// `import { env } from "cloudflare:workers"`.
declare namespace Cloudflare {
  interface Env {
    DATABASE_URL: string;
    NEON_LOCAL_PROXY: string;
    UPSTASH_REDIS_REST_URL: string;
    UPSTASH_REDIS_REST_TOKEN: string;
    SESSION_SECRET: string;
    DEV_SIGN_IN: string;
    WEB_ORIGIN: string;
  }
}
