// Postgres from the Worker through Neon's serverless driver. In production the
// driver's defaults reach Neon; locally NEON_LOCAL_PROXY names the stand-in
// (local/neon/proxy.ts) that serves the same WebSocket and HTTP protocols.
import { type NeonQueryFunction, neon, neonConfig, Pool } from "@neondatabase/serverless";
import { drizzle, type NeonDatabase } from "drizzle-orm/neon-serverless";

export interface DbEnv {
  DATABASE_URL: string;
  /** host:port of the local Neon proxy; unset in production. */
  NEON_LOCAL_PROXY?: string | undefined;
}

export interface Db {
  db: NeonDatabase;
  pool: Pool;
  /** Ends the pool's connections; call it (or `waitUntil` it) before the request ends. */
  close(): Promise<void>;
}

function useLocalProxy(env: DbEnv): void {
  const proxy = env.NEON_LOCAL_PROXY;
  if (!proxy) return;
  // Plain ws:// and http:// to the proxy, and no pipelining: the local Postgres
  // has no TLS and its auth step must be awaited, not guessed.
  neonConfig.wsProxy = (host, port) => `${proxy}/v1?address=${host}:${port}`;
  neonConfig.useSecureWebSocket = false;
  neonConfig.pipelineTLS = false;
  neonConfig.pipelineConnect = false;
  neonConfig.fetchEndpoint = `http://${proxy}/sql`;
}

/**
 * A drizzle instance over a Pool for this request only: workerd ties sockets to
 * the request that opened them, so a Pool must never outlive its request.
 */
export function createDb(env: DbEnv): Db {
  useLocalProxy(env);
  const pool = new Pool({ connectionString: env.DATABASE_URL });
  let closing = false;
  // The server closes each connection after `end()`, which workerd reports as
  // "Network connection lost". Without a listener that would be an uncaught
  // error; once we are closing it is expected, before that it is worth a log.
  pool.on("error", (err: Error) => {
    if (!closing) console.error(JSON.stringify({ level: "error", msg: `postgres pool: ${err.message}` }));
  });
  const close = () => {
    closing = true;
    return pool.end();
  };
  return { db: drizzle({ client: pool }), pool, close };
}

/** One-shot queries over HTTP (`neon()`): no connection to hold or close. */
export function createHttpSql(env: DbEnv): NeonQueryFunction<false, false> {
  useLocalProxy(env);
  return neon(env.DATABASE_URL);
}
