// Test support for the worker suites: a database, a Redis database number and
// a bucket of their own per file, a tracker with aria2c seeders, jobs created
// the way the edge creates them, and checks of what landed in the bucket.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { createServer, request, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  CreateBucketCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  type S3Client,
} from "@aws-sdk/client-s3";
import {
  columnsOf,
  encryptSecret,
  isTerminal,
  type JobState,
  keys,
  ProgressEvent,
  parseKeyring,
  parseMagnet,
  parseTorrentFile,
  progressField,
  queue,
  type SeedSettings,
  streamFor,
  webhookWakeKey,
} from "@torreclou/contracts";
import {
  type Job,
  type JobFile,
  jobFiles,
  jobs,
  jobTransitions,
  storageProfiles,
  users,
} from "@torreclou/db";
import {
  awaitsMetadata,
  type Db,
  insertJob,
  markEnqueued,
  retryTransition,
  transitionJob,
} from "@torreclou/db/jobs";
import { asc, eq } from "drizzle-orm";
import { Redis } from "ioredis";
import type pg from "pg";
import { type Logger, pino } from "pino";
import { migrate } from "../../drizzle/migrate.ts";
import { dropDatabases, freshDatabase } from "../../drizzle/testing.ts";
import { freePort, quietLog, type Spawned, spawnService } from "../../local/process.ts";
import { s3ClientFor } from "../../local/s3.ts";
import {
  ARIA2_LOOPBACK_FLAGS,
  type MadeTorrent,
  makeTorrent,
  readTorrent,
  seedAll,
  startTracker,
  type TorrentFile,
  type Tracker,
} from "../../local/seeder/index.ts";
import { type Config, loadConfig } from "../src/config.ts";
import { createPool } from "../src/db.ts";
import type { LookupFn } from "../src/egress/index.ts";
import { createMetrics } from "../src/metrics.ts";
import { diskUsage } from "../src/scratch.ts";
import { Worker } from "../src/worker.ts";

export const MiB = 1024 * 1024;

export interface Env {
  db: Db;
  pool: pg.Pool;
  databaseUrl: string;
  redisUrl: string;
  redis: Redis;
  s3: S3Client;
  bucket: string;
  tracker: Tracker;
  dataDir: string;
  scratchDir: string;
  credentialsKeys: string;
  userId: string;
  seeders: Spawned[];
  /** Listen ports for this file's seeders, known up front so workers may reach them. */
  peerPorts: number[];
  /**
   * host:port entries the workers of this file may reach on loopback (the
   * tracker, the seeders, the S3 endpoints of its profiles): the egress policy
   * refuses everything else there, as in production.
   */
  allow: string[];
  cleanup(): Promise<void>;
}

/** Distinct free ports (a port is only ever handed out once per call). */
async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

function hostPort(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || (u.protocol === "https:" ? 443 : 80)}`;
}

/** Everything one test file needs; `redisDb` must differ between files running in parallel. */
export interface EnvServices {
  /** A Postgres server of the test's own (admin URL), instead of the suite's. */
  postgres?: string;
  /** A Redis server of the test's own, instead of the suite's. */
  redis?: string;
}

export async function setupEnv(redisDb: number, services: EnvServices = {}): Promise<Env> {
  const databaseUrl = await freshDatabase(services.postgres);
  await migrate(databaseUrl);
  // The pool the worker's main makes (outside the egress policy, errors handled, lock timeouts).
  const { pool, db } = createPool({ connectionString: databaseUrl, max: 4, log: pino({ level: "silent" }) });
  const base = services.redis ?? process.env.REDIS_URL;
  if (!base) throw new Error("REDIS_URL must be set (run the suite with npm test)");
  const url = new URL(base);
  url.pathname = `/${redisDb}`;
  const redisUrl = url.toString();
  const redis = new Redis(redisUrl);
  // A test that restarts Redis sees this client reconnect; that is not an error to print.
  redis.on("error", () => {});
  await redis.flushdb();
  const s3 = s3ClientFor(process.env);
  const bucket = `worker-${randomBytes(4).toString("hex")}`;
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  const tracker = await startTracker({ port: await freePort(), log: quietLog });
  const dataDir = await mkdtemp(join(tmpdir(), "torreclou-worker-test-"));
  const credentialsKeys = `k1:${randomBytes(32).toString("base64")}`;
  const [user] = await db
    .insert(users)
    .values({ googleSub: `sub-${randomUUID()}`, email: "worker-test@example.com" })
    .returning();
  const env: Env = {
    db,
    pool,
    databaseUrl,
    redisUrl,
    redis,
    s3,
    bucket,
    tracker,
    dataDir,
    scratchDir: join(dataDir, "scratch"),
    credentialsKeys,
    userId: user!.id,
    seeders: [],
    peerPorts: await freePorts(12),
    allow: [hostPort(tracker.announceUrl), hostPort(process.env.S3_ENDPOINT!)],
    async cleanup() {
      for (const seeder of env.seeders.splice(0)) await seeder.stop().catch(() => {});
      await tracker.stop();
      redis.disconnect();
      s3.destroy();
      await pool.end();
      await dropDatabases();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return env;
}

export interface ProfileOptions {
  endpoint?: string;
  bucket?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  prefix?: string;
  name?: string;
  /** False: the workers are not told they may reach this endpoint (the egress tests aim profiles at loopback). */
  allowed?: boolean;
  /** The owner (default: the environment's user). */
  userId?: string;
}

/** A storage profile with its secret encrypted exactly as the edge stores it. */
export async function createProfile(env: Env, opts: ProfileOptions = {}): Promise<string> {
  // The tests' own S3 endpoints (a recording proxy) are destinations the workers may reach.
  if (opts.endpoint && opts.allowed !== false) env.allow.push(hostPort(opts.endpoint));
  const ring = parseKeyring(env.credentialsKeys);
  // As the edge does: the id first, since the ciphertext is bound to it.
  const id = randomUUID();
  const secret = await encryptSecret(
    ring,
    {
      accessKeyId: opts.accessKeyId ?? process.env.S3_ACCESS_KEY_ID,
      secretAccessKey: opts.secretAccessKey ?? process.env.S3_SECRET_ACCESS_KEY,
    },
    id,
  );
  const [profile] = await env.db
    .insert(storageProfiles)
    .values({
      id,
      userId: opts.userId ?? env.userId,
      kind: "s3",
      name: opts.name ?? `profile-${id}`,
      config: {
        endpoint: opts.endpoint ?? process.env.S3_ENDPOINT,
        region: process.env.S3_REGION ?? "us-east-1",
        bucket: opts.bucket ?? env.bucket,
        prefix: opts.prefix,
        forcePathStyle: true,
      },
      ...columnsOf(secret),
    })
    .returning();
  return profile!.id;
}

export async function makeFixture(
  env: Env,
  name: string,
  files: TorrentFile[],
  pieceLength?: number,
): Promise<MadeTorrent> {
  return makeTorrent({
    dir: join(env.dataDir, "seed"),
    name,
    files,
    announce: [env.tracker.announceUrl],
    pieceLength,
  });
}

/** aria2c seeding the torrents, optionally throttled (bytes per second, e.g. "2M"). */
export async function seedFixtures(env: Env, made: MadeTorrent[], uploadLimit?: string): Promise<Spawned> {
  const peerPort = env.peerPorts[env.seeders.length];
  if (peerPort === undefined) throw new Error(`at most ${env.peerPorts.length} seeders per test file`);
  const self = `127.0.0.1:${peerPort}`;
  const hashes = made.map((m) => m.infoHash);
  const ready = async () => hashes.every((h) => env.tracker.seeders(h).includes(self));
  let spawned: Spawned;
  if (!uploadLimit) {
    spawned = await seedAll({
      torrents: made.map((m) => ({ torrentPath: m.torrentPath, dir: join(env.dataDir, "seed") })),
      peerPort,
      log: quietLog,
      ready,
    });
  } else {
    const args = [
      ...ARIA2_LOOPBACK_FLAGS,
      `--listen-port=${peerPort}`,
      "--check-integrity=true",
      "--bt-seed-unverified=false",
      "--seed-ratio=0.0",
      "--auto-file-renaming=false",
      "--allow-overwrite=false",
      `--max-overall-upload-limit=${uploadLimit}`,
      `--stop-with-process=${process.pid}`,
      `--dir=${join(env.dataDir, "seed")}`,
      ...made.map((m) => m.torrentPath),
    ];
    spawned = await spawnService("seeder", "aria2c", { args, log: quietLog, ready, readyTimeoutMs: 60_000 });
  }
  env.seeders.push(spawned);
  return spawned;
}

export interface SubmitOptions {
  made: MadeTorrent;
  profileId: string;
  selected?: number[];
  magnet?: boolean;
  /** The magnet link to submit (default: the fixture's, with its dn and tracker). */
  magnetUri?: string;
  /** The submitter (default: the environment's user). */
  userId?: string;
  targetFolder?: string;
  /** Leave the job out of the queue (default: enqueue it, as the edge does). */
  enqueue?: boolean;
  /** A magnet job that waits for its submitter to choose files once resolved. */
  chooseFiles?: boolean;
  /** Who transfers it (default the fleet); a browser job is never enqueued. */
  runner?: "fleet" | "browser";
  /** Seeding back once stored (as the edge stores it, already bounded). */
  seed?: SeedSettings;
}

/** Creates a job as the edge does: parse, insert (source encrypted), then `enqueue` it. */
export async function submitJob(env: Env, opts: SubmitOptions): Promise<Job> {
  const bytes = new Uint8Array(await readFile(opts.made.torrentPath));
  const keyring = parseKeyring(env.credentialsKeys);
  const common = {
    userId: opts.userId ?? env.userId,
    storageProfileId: opts.profileId,
    selected: opts.selected,
    targetFolder: opts.targetFolder,
    chooseFiles: opts.chooseFiles,
    runner: opts.runner,
    seed: opts.seed,
  };
  let created: Awaited<ReturnType<typeof insertJob>>;
  if (opts.magnet) {
    const magnet = opts.magnetUri ?? opts.made.magnet;
    const info = parseMagnet(magnet);
    created = await insertJob(env.db, keyring, {
      ...common,
      name: info.name,
      source: { kind: "magnet", magnet },
      torrent: { infoHash: info.infoHash, files: null },
    });
  } else {
    const info = await parseTorrentFile(bytes);
    created = await insertJob(env.db, keyring, {
      ...common,
      name: info.name,
      source: { kind: "torrent", torrent: bytes },
      torrent: { infoHash: info.infoHash, facts: info, files: info.files },
    });
  }
  const { job } = created;
  if (opts.enqueue !== false && opts.runner !== "browser") await enqueue(env, job);
  return job;
}

/** As the edge does after saving a job: XADD the message (to the stream its state calls for), mark it enqueued, record the owner. */
export async function enqueue(env: Env, job: Pick<Job, "id" | "userId">): Promise<void> {
  const [row] = await env.db.select({ awaitsMetadata }).from(jobs).where(eq(jobs.id, job.id));
  await env.redis.xadd(
    streamFor({ awaitsMetadata: row?.awaitsMetadata ?? false }),
    "*",
    "job",
    JSON.stringify({ jobId: job.id }),
  );
  await markEnqueued(env.db, job.id);
  await env.redis.set(keys.owner(job.id), job.userId);
}

/** Another signed-up user, with an S3 profile of their own on the same bucket. */
export async function otherUser(
  env: Env,
  profile: ProfileOptions = {},
): Promise<{ userId: string; profileId: string }> {
  const [user] = await env.db
    .insert(users)
    .values({ googleSub: `sub-${randomUUID()}`, email: "other@example.com" })
    .returning();
  return { userId: user!.id, profileId: await createProfile(env, { ...profile, userId: user!.id }) };
}

/** What the edge does when the user cancels: the row, the flag naming the attempt, a clean-up entry. */
export async function cancelJob(env: Env, jobId: string): Promise<void> {
  const job = await transitionJob(env.db, {
    jobId,
    to: "cancelled",
    cause: "user",
    reason: "cancelled by the user",
  });
  if (!job) throw new Error(`job ${jobId} could not be cancelled`);
  const tx = env.redis
    .multi()
    .set(keys.cancel(jobId), String(job.attempt))
    .xadd(queue.stream, "*", "job", JSON.stringify({ jobId, cleanup: true }));
  if (job.webhookDeliveries > 0) tx.lpush(webhookWakeKey, "1");
  await tx.exec();
}

/** What the edge does when the user retries: queued again as a new attempt, and a queue message. */
export async function retryJob(env: Env, jobId: string): Promise<void> {
  const job = await retryTransition(env.db, jobId);
  if (!job) throw new Error(`job ${jobId} could not be retried`);
  const [row] = await env.db.select({ awaitsMetadata }).from(jobs).where(eq(jobs.id, jobId));
  await env.redis.xadd(
    streamFor({ awaitsMetadata: row?.awaitsMetadata ?? false }),
    "*",
    "job",
    JSON.stringify({ jobId }),
  );
}

export async function jobRow(env: Env, jobId: string): Promise<Job> {
  const [row] = await env.db.select().from(jobs).where(eq(jobs.id, jobId));
  if (!row) throw new Error(`job ${jobId} not found`);
  return row;
}

export async function filesOf(env: Env, jobId: string): Promise<JobFile[]> {
  return env.db.select().from(jobFiles).where(eq(jobFiles.jobId, jobId)).orderBy(asc(jobFiles.fileIndex));
}

export async function transitionsOf(env: Env, jobId: string) {
  return env.db
    .select()
    .from(jobTransitions)
    .where(eq(jobTransitions.jobId, jobId))
    .orderBy(asc(jobTransitions.id));
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  timeoutMs = 60_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

export async function waitForState(
  env: Env,
  jobId: string,
  states: JobState[],
  timeoutMs = 60_000,
): Promise<Job> {
  let last: Job | undefined;
  try {
    return await waitFor(
      `job ${jobId} to reach ${states.join("/")}`,
      async () => {
        last = await jobRow(env, jobId);
        return states.includes(last.state) ? last : undefined;
      },
      timeoutMs,
    );
  } catch (error) {
    throw new Error(`${(error as Error).message} (last state ${last?.state}, reason ${last?.failureReason})`);
  }
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

export async function sha256Object(s3: S3Client, bucket: string, key: string): Promise<string> {
  const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const hash = createHash("sha256");
  for await (const chunk of got.Body as AsyncIterable<Uint8Array>) hash.update(chunk);
  return hash.digest("hex");
}

export async function listKeys(s3: S3Client, bucket: string, prefix?: string): Promise<string[]> {
  const out: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const o of page.Contents ?? []) if (o.Key) out.push(o.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out.sort();
}

/**
 * Every object the job stored, byte for byte against the seeder's copy of the
 * torrent content; returns the keys.
 */
export async function expectStoredExactly(
  env: Env,
  made: MadeTorrent,
  folder: string,
  indexes?: number[],
): Promise<string[]> {
  const summary = readTorrent(await readFile(made.torrentPath));
  const chosen = summary.files.filter((_, i) => !indexes || indexes.includes(i));
  // "" is the bucket's top: a multi-file torrent's own top folder is then the place to look.
  const under = folder === "" ? "" : `${folder}/`;
  const expected = chosen.map((f) => `${under}${f.path}`).sort();
  const actual = await listKeys(env.s3, env.bucket, folder === "" ? `${summary.name}/` : under);
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(
      `bucket holds ${JSON.stringify(actual.slice(0, 10))}…, expected ${JSON.stringify(expected.slice(0, 10))}…`,
    );
  }
  const seedRoot = join(env.dataDir, "seed");
  for (const file of chosen) {
    const local = await sha256File(join(seedRoot, ...file.path.split("/")));
    const remote = await sha256Object(env.s3, env.bucket, `${under}${file.path}`);
    if (local !== remote) throw new Error(`${file.path}: stored bytes differ from the torrent's`);
  }
  return actual;
}

export function workerEnv(env: Env, extra: Record<string, string> = {}): Record<string, string> {
  const allow = [...env.allow, ...env.peerPorts.map((port) => `127.0.0.1:${port}`)];
  if (extra.EGRESS_ALLOW) allow.push(extra.EGRESS_ALLOW);
  return {
    DATABASE_URL: env.databaseUrl,
    REDIS_URL: env.redisUrl,
    WORKER_SCRATCH_DIR: env.scratchDir,
    CREDENTIALS_KEYS: env.credentialsKeys,
    WORKER_LEASE_MS: "3000",
    WORKER_DHT: "false",
    WORKER_LSD: "false",
    WORKER_NAT_UPNP: "false",
    WORKER_NAT_PMP: "false",
    WORKER_UTP: "false",
    WORKER_PART_SIZE_BYTES: String(5 * MiB),
    WORKER_NO_PEERS_TIMEOUT_MS: "4000",
    WORKER_HTTP_PORT: "0",
    LOG_LEVEL: process.env.WORKER_TEST_LOG_LEVEL ?? "silent",
    ...extra,
    EGRESS_ALLOW: allow.join(","),
  };
}

/** A worker running in this process (logging to `log` if given, e.g. to read what it logs). */
export async function startWorker(
  env: Env,
  extra: Record<string, string> = {},
  log: Logger = pino({ level: loadConfig(workerEnv(env, extra)).LOG_LEVEL }),
  resolver?: LookupFn,
): Promise<{ worker: Worker; config: Config }> {
  const config = loadConfig(workerEnv(env, extra));
  const worker = new Worker({
    config,
    db: env.db,
    log,
    metrics: createMetrics({ fleet: config.WORKER_FLEET_METRICS }),
    resolver,
  });
  await worker.start();
  return { worker, config };
}

/**
 * Samples the bytes allocated under a scratch folder (from the file system,
 * not the worker's own counter) until stopped; returns the largest seen.
 */
export function sampleScratch(dir: string): { stop(): Promise<number>; rings: Set<string> } {
  let peak = 0;
  let running = true;
  /** Ring files seen (streamed files rewritten in place), by name. */
  const rings = new Set<string>();
  const loop = (async () => {
    while (running) {
      peak = Math.max(peak, await diskUsage(dir));
      const names = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
      for (const name of names) if (name.endsWith(".ring")) rings.add(name);
      await new Promise((resolve) => setImmediate(resolve));
    }
  })();
  return {
    rings,
    async stop() {
      running = false;
      await loop;
      return peak;
    },
  };
}

/** Every progress event of a job still in its (bounded) stream, oldest first. */
/**
 * The job's latest progress snapshot, read as the job page reads it: the read
 * marks the job watched (as the edge's poll does), so its worker publishes at
 * the watched pace from its next lease renewal on.
 */
export async function watchedSnapshot(env: Env, jobId: string): Promise<ProgressEvent | undefined> {
  const [, [, raw]] = (await env.redis
    .multi()
    .set(keys.watched(jobId), "1", "EX", queue.watchedSeconds)
    .get(keys.snapshot(jobId))
    .exec()) as [[unknown, unknown], [unknown, string | null]];
  return raw ? ProgressEvent.parse(JSON.parse(raw)) : undefined;
}

export async function progressEvents(env: Env, jobId: string): Promise<ProgressEvent[]> {
  const entries = await env.redis.xrange(keys.progress(jobId), "-", "+");
  return entries.map(([, fields]) => {
    const json = fields[fields.indexOf(progressField) + 1];
    return ProgressEvent.parse(JSON.parse(json ?? "null"));
  });
}

/**
 * Progress never goes backwards as the job page shows it: events of an
 * attempt older than one already seen are dropped (as the page does), and
 * from one shown event to the next neither downloaded nor stored bytes fall.
 * Only a user's retry of an ended job starts the count afresh.
 */
export function expectProgressNeverBackwards(events: ProgressEvent[]): void {
  if (events.length === 0) throw new Error("the job published no progress");
  let shown: ProgressEvent | undefined;
  for (const event of events) {
    if (shown && event.attempt < shown.attempt) continue;
    const retried = shown && event.attempt > shown.attempt && isTerminal(shown.phase);
    if (shown && !retried) {
      for (const field of ["downloaded", "uploaded"] as const) {
        if (event.bytes[field] < shown.bytes[field]) {
          throw new Error(
            `${field} went back from ${shown.bytes[field]} (attempt ${shown.attempt}, ${shown.phase}) ` +
              `to ${event.bytes[field]} (attempt ${event.attempt}, ${event.phase})`,
          );
        }
      }
    }
    shown = event;
  }
}

export interface S3Request {
  /** put, part, create, complete, abort, listparts, head, headbucket, get, rangedget, other */
  kind: string;
  key: string;
  part?: number;
}

/**
 * A recording HTTP proxy in front of the local S3, so tests can count what a
 * worker really sent (and slow part uploads down).
 */
export async function s3Proxy(opts: { partDelayMs?: number } = {}): Promise<{
  endpoint: string;
  requests: S3Request[];
  count(kind: string, key?: string): number;
  /**
   * Called when S3 has answered a request, before the answer is passed on:
   * a test can kill the worker in the window between a request taking
   * effect and the worker hearing of it.
   */
  onAnswered: ((entry: S3Request, status: number) => void | Promise<void>) | undefined;
  /**
   * Answers every request with this HTTP status (an S3 error body) instead of
   * passing it on, as a provider that is up but failing; undefined: normal again.
   * Such answers are recorded with kind "refused".
   */
  failWith(status: number | undefined): void;
  /** Stops answering (connections refused), as a storage provider that is down. */
  down(): Promise<void>;
  /** Answers again, on the same port. */
  up(): Promise<void>;
  close(): Promise<void>;
}> {
  const target = new URL(process.env.S3_ENDPOINT!);
  const requests: S3Request[] = [];
  let failing: number | undefined;
  const server: Server = createServer((req, res) => {
    if (failing !== undefined) {
      requests.push({ kind: "refused", key: "" });
      req.resume();
      res.writeHead(failing, { "content-type": "application/xml" });
      res.end(
        `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${failing === 503 ? "SlowDown" : "InternalError"}</Code><Message>failing on purpose</Message></Error>`,
      );
      return;
    }
    const url = new URL(req.url ?? "/", "http://proxy");
    const key = decodeURIComponent(url.pathname.split("/").slice(2).join("/"));
    const q = url.searchParams;
    const entry: S3Request = { kind: "other", key };
    if (req.method === "PUT" && q.has("partNumber")) {
      entry.kind = "part";
      entry.part = Number(q.get("partNumber"));
    } else if (req.method === "PUT" && key) entry.kind = "put";
    else if (req.method === "POST" && q.has("uploads")) entry.kind = "create";
    else if (req.method === "POST" && q.has("uploadId")) entry.kind = "complete";
    else if (req.method === "DELETE" && q.has("uploadId")) entry.kind = "abort";
    else if (req.method === "GET" && q.has("uploadId")) entry.kind = "listparts";
    else if (req.method === "HEAD") entry.kind = key ? "head" : "headbucket";
    else if (req.method === "GET" && key) entry.kind = req.headers.range ? "rangedget" : "get";
    requests.push(entry);
    const forward = () => {
      const upstream = request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
        (up) => {
          const pass = () => {
            res.writeHead(up.statusCode ?? 502, up.headers);
            up.pipe(res);
          };
          const hook = proxy.onAnswered;
          if (!hook) return pass();
          up.pause();
          res.on("error", () => {}); // the worker may be gone by now
          Promise.resolve(hook(entry, up.statusCode ?? 0)).then(pass, () => res.destroy());
        },
      );
      upstream.on("error", () => res.destroy());
      req.pipe(upstream);
    };
    if (entry.kind === "part" && opts.partDelayMs) {
      req.pause();
      setTimeout(forward, opts.partDelayMs);
    } else forward();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  const proxy = {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    onAnswered: undefined as ((entry: S3Request, status: number) => void | Promise<void>) | undefined,
    count: (kind: string, key?: string) =>
      requests.filter((r) => r.kind === kind && (key === undefined || r.key === key)).length,
    failWith(status: number | undefined) {
      failing = status;
    },
    async down() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
    async up() {
      await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    },
    async close() {
      if (!server.listening) return;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return proxy;
}
