// Tracing end to end, against the real parts: the edge in workerd (`wrangler
// dev`, as deployed), a worker process (src/main.ts) downloading from an aria2c
// seeder into the local S3, and an OTLP/HTTP receiver in this process that
// decodes what both send (JSON). One trace per job: the edge's create request,
// the queue hop (the entry carries the context), the worker's claim, its run,
// the metadata fetch (a magnet's only), the download and an upload span per
// stored file, each the child it should be; the job's log lines carry the
// trace id. With tracing off nothing is sent, no entry carries a context, no
// log line a trace id.
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { JobMessage, queue, spanAttributes, spanNames } from "@torreclou/contracts";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { answers, spawnEdge } from "../../local/edge.ts";
import { freePort, type Spawned, spawnService } from "../../local/process.ts";
import type { MadeTorrent } from "../../local/seeder/index.ts";
import { startUpstashServer } from "../../local/upstash/server.ts";
import {
  type Env,
  expectStoredExactly,
  MiB,
  makeFixture,
  seedFixtures,
  setupEnv,
  waitFor,
  waitForState,
  workerEnv,
} from "./helpers.ts";

const root = resolve(import.meta.dirname, "..", "..");
/** The receiver's API key: sent with every export, written to no log. */
const EXPORT_SECRET = `trace-key-${randomBytes(8).toString("hex")}`;
const SPAN_KIND = { internal: 1, server: 2, producer: 4, consumer: 5 } as const;

interface CapturedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  status: number;
  attributes: Record<string, string | number | boolean>;
}

interface OtlpValue {
  stringValue?: string;
  intValue?: number | string;
  doubleValue?: number;
  boolValue?: boolean;
}
interface OtlpAttribute {
  key: string;
  value: OtlpValue;
}
interface OtlpRequest {
  resourceSpans?: {
    resource?: { attributes?: OtlpAttribute[] };
    scopeSpans?: {
      spans?: {
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        name: string;
        kind: number;
        status?: { code?: number };
        attributes?: OtlpAttribute[];
      }[];
    }[];
  }[];
}

function attributesOf(list: OtlpAttribute[] = []): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const { key, value } of list) {
    const v = value.stringValue ?? value.boolValue ?? value.doubleValue ?? value.intValue;
    if (v !== undefined) out[key] = value.intValue !== undefined ? Number(v) : v;
  }
  return out;
}

/** An OTLP/HTTP receiver (JSON encoding) on loopback: every span it was sent, and each request's headers. */
interface Receiver {
  url: string;
  spans: CapturedSpan[];
  requests: { path: string; headers: IncomingHttpHeaders }[];
  close(): Promise<void>;
}

async function startReceiver(port = 0): Promise<Receiver> {
  const spans: CapturedSpan[] = [];
  const requests: Receiver["requests"] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      requests.push({ path: req.url ?? "", headers: req.headers });
      if (req.method !== "POST" || req.url !== "/v1/traces") return void res.writeHead(404).end();
      if (!req.headers["content-type"]?.startsWith("application/json")) return void res.writeHead(415).end();
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as OtlpRequest;
      for (const resource of body.resourceSpans ?? []) {
        const service = String(attributesOf(resource.resource?.attributes)["service.name"]);
        for (const scope of resource.scopeSpans ?? []) {
          for (const span of scope.spans ?? []) {
            spans.push({
              service,
              traceId: span.traceId,
              spanId: span.spanId,
              parentSpanId: span.parentSpanId ?? "",
              name: span.name,
              kind: span.kind,
              status: span.status?.code ?? 0,
              attributes: attributesOf(span.attributes),
            });
          }
        }
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((done, fail) => {
    server.once("error", fail);
    server.listen(port, "127.0.0.1", done);
  });
  const address = server.address();
  const bound = typeof address === "object" && address ? address.port : port;
  return {
    url: `http://127.0.0.1:${bound}`,
    spans,
    requests,
    close: () => new Promise((done) => server.close(() => done())),
  };
}

let env: Env;
let dataDir: string;
let upstash: { url: string; token: string; stop(): Promise<void> };
let magnetFixture: MadeTorrent;
let torrentFixture: MadeTorrent;

/** An edge with its tracing settings, the receiver they name (or not), and the edge's output. */
interface Side {
  otel: Record<string, string>;
  receiver: Receiver;
  edge: Spawned & { url: string };
  edgeLines: string[];
}
/** Tracing on, exporting to a receiver of its own. */
let on: Side;
/** Tracing off: every setting but the endpoint. */
let off: Side;
const stopAfterAll: (() => Promise<void>)[] = [];
const stopAfterEach: (() => Promise<void>)[] = [];

beforeAll(async () => {
  env = await setupEnv(21);
  dataDir = await mkdtemp(join(tmpdir(), "torreclou-tracing-"));
  // The edge's Redis: this file's own database, behind an Upstash REST server of its own.
  const port = await freePort();
  const token = randomBytes(16).toString("hex");
  const server = await startUpstashServer({ port, redisUrl: env.redisUrl, token });
  upstash = { url: `http://127.0.0.1:${port}`, token, stop: () => server.stop() };
  magnetFixture = await makeFixture(env, "traced-magnet", [
    { path: "a/first.bin", size: 6 * MiB + 12_345 },
    { path: "a/second.bin", size: 200 * 1024 },
    { path: "third.bin", size: MiB },
  ]);
  torrentFixture = await makeFixture(env, "traced-torrent", [
    { path: "one.bin", size: 700 * 1024 },
    { path: "two.bin", size: 300 * 1024 },
  ]);
  await seedFixtures(env, [magnetFixture, torrentFixture]);

  const onReceiver = await startReceiver();
  // On OTLP/HTTP's default port if it is free: a part that fell back to the
  // default endpoint with tracing off would be caught there too.
  const offReceiver = await startReceiver(4318).catch(() => startReceiver());
  stopAfterAll.push(onReceiver.close, offReceiver.close);
  const headers = `authorization=Bearer%20${EXPORT_SECRET}`;
  const onOtel = { OTEL_EXPORTER_OTLP_ENDPOINT: onReceiver.url, OTEL_EXPORTER_OTLP_HEADERS: headers };
  const offOtel = {
    OTEL_EXPORTER_OTLP_ENDPOINT: "",
    OTEL_EXPORTER_OTLP_HEADERS: headers,
    OTEL_SERVICE_NAME: "not-traced",
  };
  // Both edges at once: starting workerd is most of this file's time.
  const lines: [string[], string[]] = [[], []];
  const [onEdge, offEdge] = await Promise.all([
    startEdge("edge-on", onOtel, lines[0]),
    startEdge("edge-off", offOtel, lines[1]),
  ]);
  on = { otel: onOtel, receiver: onReceiver, edge: onEdge, edgeLines: lines[0] };
  off = { otel: offOtel, receiver: offReceiver, edge: offEdge, edgeLines: lines[1] };
}, 240_000);

// A test's worker stops with it: the next test's jobs are its own worker's.
afterEach(async () => {
  for (const stop of stopAfterEach.splice(0)) await stop().catch(() => {});
});

afterAll(async () => {
  for (const stop of stopAfterAll.splice(0).reverse()) await stop().catch(() => {});
  await upstash?.stop();
  await env?.cleanup();
  await rm(dataDir, { recursive: true, force: true });
});

/** The process environment without OTEL_* settings of whoever runs the tests. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("OTEL_")));
}

/** The edge in workerd with this file's database and Redis, and `otel` settings. */
async function startEdge(
  name: string,
  otel: Record<string, string>,
  lines: string[],
): Promise<Spawned & { url: string }> {
  const dir = join(dataDir, name);
  const edge = await spawnEdge({
    vars: {
      DATABASE_URL: env.databaseUrl,
      NEON_LOCAL_PROXY: process.env.NEON_LOCAL_PROXY,
      UPSTASH_REDIS_REST_URL: upstash.url,
      UPSTASH_REDIS_REST_TOKEN: upstash.token,
      WEB_ORIGIN: "http://127.0.0.1:5173",
      SESSION_SECRET: randomBytes(32).toString("hex"),
      DEV_SIGN_IN: "true",
      CREDENTIALS_KEYS: env.credentialsKeys,
      CLIENT_IP_HEADER: "",
      EGRESS_ALLOW: new URL(process.env.S3_ENDPOINT!).host,
      // A new account's storage: this file's bucket.
      DEV_S3_PROFILE: JSON.stringify({
        name: "traced",
        endpoint: process.env.S3_ENDPOINT,
        region: process.env.S3_REGION ?? "us-east-1",
        bucket: env.bucket,
        forcePathStyle: true,
        accessKeyId: process.env.S3_ACCESS_KEY_ID,
        secretAccessKey: process.env.S3_SECRET_ACCESS_KEY,
      }),
      ...otel,
    },
    port: await freePort(),
    inspectorPort: await freePort(),
    dataDir: await mkdtemp(`${dir}-`),
    log: (_service, line) => void lines.push(line),
  });
  stopAfterAll.push(edge.stop);
  return edge;
}

/** A worker process (src/main.ts, as deployed) with `otel` settings; its log lines land in `lines`. */
async function startWorkerProcess(otel: Record<string, string>, lines: string[]): Promise<Spawned> {
  const port = await freePort();
  const worker = await spawnService("worker", process.execPath, {
    args: [join(root, "node-worker", "src", "main.ts")],
    cwd: root,
    env: { ...cleanEnv(), ...workerEnv(env, { LOG_LEVEL: "info", WORKER_HTTP_PORT: String(port), ...otel }) },
    log: (_service, line) => void lines.push(line),
    ready: () => answers(`http://127.0.0.1:${port}/healthz`),
  });
  stopAfterEach.push(worker.stop);
  return worker;
}

/** Signs in on the edge (dev sign-in, which gives a new account this file's bucket); the session cookie. */
async function signIn(edge: { url: string }, email: string): Promise<string> {
  const response = await fetch(`${edge.url}/api/auth/dev`, {
    method: "POST",
    headers: { "content-type": "application/json", origin: "http://127.0.0.1:5173" },
    body: JSON.stringify({ email }),
  });
  expect(response.status).toBe(200);
  const body: unknown = await response.json();
  expect(body, JSON.stringify(body)).toHaveProperty("storageCreated");
  return (response.headers.get("set-cookie") ?? "").split(";")[0]!;
}

/** POST /api/jobs as the web app sends it; the job's id. */
async function createJob(edge: { url: string }, cookie: string, source: object): Promise<string> {
  const response = await fetch(`${edge.url}/api/jobs`, {
    method: "POST",
    headers: { "content-type": "application/json", origin: "http://127.0.0.1:5173", cookie },
    body: JSON.stringify(source),
  });
  const text = await response.text();
  expect(response.status, text).toBe(201);
  return (JSON.parse(text) as { job: { id: string } }).job.id;
}

/** The job's entry in the jobs stream (written by the edge, not yet taken: no worker runs). */
async function entryOf(jobId: string): Promise<{ id: string; message: JobMessage }> {
  const entries = await env.redis.xrange(queue.stream, "-", "+");
  for (const [id, fields] of entries) {
    const at = fields.indexOf("job");
    if (at < 0) continue;
    const message = JobMessage.parse(JSON.parse(fields[at + 1] ?? "null"));
    if (message.jobId === jobId && !message.cleanup) return { id, message };
  }
  throw new Error(`no entry for job ${jobId}`);
}

async function torrentBase64(made: MadeTorrent): Promise<string> {
  return (await readFile(made.torrentPath)).toString("base64");
}

/** The JSON log lines (pino's) among `lines`. */
function jsonLines(lines: string[]): Record<string, unknown>[] {
  return lines.flatMap((line) => {
    try {
      const parsed: unknown = JSON.parse(line);
      return parsed && typeof parsed === "object" ? [parsed as Record<string, unknown>] : [];
    } catch {
      return [];
    }
  });
}

describe("tracing", () => {
  it("follows each job in one trace from the edge's request through the queue to every file stored", async () => {
    const { receiver, edge, edgeLines } = on;
    const workerLines: string[] = [];
    // Two users, so each job's entry is written by the request that creates it.
    const alice = await signIn(edge, "alice@example.com");
    const bob = await signIn(edge, "bob@example.com");
    const magnetJob = await createJob(edge, alice, { magnet: magnetFixture.magnet });
    const torrentJob = await createJob(edge, bob, { torrent: await torrentBase64(torrentFixture) });
    // Alice's second job waits its fair turn: the worker lets it in once her first is claimed.
    const waitingJob = await createJob(edge, alice, {
      torrent: await torrentBase64(torrentFixture),
      targetFolder: "waited",
    });

    // The queue hop: each entry carries the context of the edge's enqueue span.
    const entries = { [magnetJob]: await entryOf(magnetJob), [torrentJob]: await entryOf(torrentJob) };
    for (const { message } of Object.values(entries)) {
      expect(message.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    }
    await expect(entryOf(waitingJob)).rejects.toThrow(/no entry/);

    // Its exports go to loopback, which the worker's egress policy refuses to jobs: not allowed here.
    await startWorkerProcess(on.otel, workerLines);
    for (const jobId of [magnetJob, torrentJob, waitingJob]) await waitForState(env, jobId, ["completed"]);
    // Under each torrent's own top folder (the default), or the one asked for.
    await expectStoredExactly(env, magnetFixture, "");
    await expectStoredExactly(env, torrentFixture, "");
    await expectStoredExactly(env, torrentFixture, "waited");

    // Each attempt's spans are sent as it ends (a flush, not a batch timer); the edge's after each response.
    const claimOf = (jobId: string) =>
      receiver.spans.find((s) => s.name === spanNames.claim && s.attributes[spanAttributes.jobId] === jobId);
    const spansOf = (jobId: string) => receiver.spans.filter((s) => s.traceId === claimOf(jobId)?.traceId);
    const createdBy = (jobId: string) =>
      receiver.spans.find((s) => s.name === "POST /api/jobs" && s.attributes[spanAttributes.jobId] === jobId);
    const expected = { [magnetJob]: 3, [torrentJob]: 2, [waitingJob]: 2 };
    for (const [jobId, files] of Object.entries(expected)) {
      await waitFor(`the spans of job ${jobId}`, async () => {
        const spans = spansOf(jobId);
        const uploads = spans.filter((s) => s.name === spanNames.upload).length;
        const edgeSpans = spans.filter((s) => s.service === "torreclou-edge").length;
        if (!createdBy(jobId)) return false;
        return (
          uploads === files &&
          spans.some((s) => s.name === spanNames.run) &&
          edgeSpans === (jobId === waitingJob ? 1 : 2)
        );
      });
    }

    for (const [jobId, files] of Object.entries(expected)) {
      const spans = spansOf(jobId);
      const one = (name: string) => {
        const found = spans.filter((s) => s.name === name);
        expect(found, name).toHaveLength(1);
        return found[0]!;
      };
      const claim = one(spanNames.claim);
      expect(claim).toMatchObject({ service: "torreclou-worker", kind: SPAN_KIND.consumer });
      if (jobId === waitingJob) {
        // Let in by the worker, not by a request: its entry carries the context of the
        // request that created it (kept on its row), so the claim hangs under that request.
        const request = one("POST /api/jobs");
        expect(request).toMatchObject({ service: "torreclou-edge", parentSpanId: "" });
        expect(request.attributes[spanAttributes.jobId]).toBe(jobId);
        expect(claim.parentSpanId).toBe(request.spanId);
        expect(spans.filter((s) => s.name === spanNames.enqueue)).toEqual([]);
      } else {
        const request = one("POST /api/jobs");
        expect(request).toMatchObject({
          service: "torreclou-edge",
          kind: SPAN_KIND.server,
          parentSpanId: "",
        });
        expect(request.attributes).toMatchObject({
          "http.request.method": "POST",
          "http.route": "/api/jobs",
          "http.response.status_code": 201,
          [spanAttributes.jobId]: jobId,
        });
        const enqueue = one(spanNames.enqueue);
        expect(enqueue).toMatchObject({
          service: "torreclou-edge",
          kind: SPAN_KIND.producer,
          parentSpanId: request.spanId,
        });
        expect(enqueue.attributes).toMatchObject({
          [spanAttributes.jobId]: jobId,
          "messaging.message.id": entries[jobId]!.id,
        });
        expect(entries[jobId]!.message.traceparent).toBe(`00-${enqueue.traceId}-${enqueue.spanId}-01`);
        expect(claim.parentSpanId).toBe(enqueue.spanId);
        expect(claim.attributes["messaging.message.id"]).toBe(entries[jobId]!.id);
      }
      expect(claim.attributes[spanAttributes.jobId]).toBe(jobId);
      const run = one(spanNames.run);
      expect(run.parentSpanId).toBe(claim.spanId);
      expect(run.attributes).toMatchObject({
        [spanAttributes.jobId]: jobId,
        [spanAttributes.attempt]: 1,
        [spanAttributes.outcome]: "completed",
        [spanAttributes.destination]: "s3",
        [spanAttributes.files]: files,
      });
      const made = jobId === magnetJob ? magnetFixture : torrentFixture;
      expect(run.attributes[spanAttributes.infoHash]).toBe(made.infoHash);

      // A magnet's metadata comes from peers; a .torrent's is known.
      const metadata = spans.filter((s) => s.name === spanNames.metadata);
      if (jobId === magnetJob) {
        expect(metadata).toHaveLength(1);
        expect(metadata[0]!.parentSpanId).toBe(run.spanId);
        expect(metadata[0]!.attributes[spanAttributes.files]).toBe(3);
      } else expect(metadata).toHaveLength(0);
      const download = one(spanNames.download);
      expect(download.parentSpanId).toBe(run.spanId);
      expect(download.attributes[spanAttributes.files]).toBe(files);

      // One upload per stored file, under the run (they overlap the download), by index and size.
      const uploads = spans.filter((s) => s.name === spanNames.upload);
      expect(uploads.map((u) => u.parentSpanId)).toEqual(uploads.map(() => run.spanId));
      expect(uploads.map((u) => u.attributes[spanAttributes.fileIndex]).sort()).toEqual([
        ...Array(files).keys(),
      ]);
      const total = uploads.reduce((sum, u) => sum + Number(u.attributes[spanAttributes.bytes]), 0);
      expect(total).toBe(run.attributes[spanAttributes.bytes]);
      // Nothing else, nothing failed.
      expect(spans.filter((s) => s.status === 2)).toEqual([]);
      expect(spans).toHaveLength((jobId === waitingJob ? 1 : 2) + 3 + metadata.length + uploads.length);

      // Every line the worker wrote about the job carries its trace id, and a span id of it.
      const about = jsonLines(workerLines).filter((l) => l.jobId === jobId);
      expect(about.map((l) => l.msg)).toEqual(expect.arrayContaining(["job claimed", "file uploaded"]));
      expect(about.filter((l) => l.trace_id !== claim.traceId)).toEqual([]);
      const ids = new Set(spans.map((s) => s.spanId));
      expect(about.filter((l) => !ids.has(String(l.span_id)))).toEqual([]);
    }
    // A trace per job.
    expect(new Set(Object.keys(expected).map((jobId) => claimOf(jobId)?.traceId)).size).toBe(3);

    // No names, magnets, tracker URLs or storage settings on any span; the key only in the headers.
    const sent = JSON.stringify(receiver.spans);
    for (const secret of [
      "first.bin",
      "traced-magnet",
      "one.bin",
      "waited",
      env.tracker.announceUrl,
      env.bucket,
      magnetFixture.magnet,
      EXPORT_SECRET,
    ]) {
      expect(sent).not.toContain(secret);
    }
    expect(receiver.requests.length).toBeGreaterThan(0);
    for (const { headers } of receiver.requests)
      expect(headers.authorization).toBe(`Bearer ${EXPORT_SECRET}`);
    for (const line of [...edgeLines, ...workerLines]) expect(line).not.toContain(EXPORT_SECRET);
  }, 180_000);

  it("sends nothing when no endpoint is set: no entry carries a context, no log line a trace id", async () => {
    const { receiver, edge, edgeLines } = off;
    const workerLines: string[] = [];
    const cookie = await signIn(edge, "untraced@example.com");
    const jobId = await createJob(edge, cookie, { torrent: await torrentBase64(torrentFixture) });
    const { message } = await entryOf(jobId);
    expect(message).toEqual({ jobId });

    const worker = await startWorkerProcess(off.otel, workerLines);
    await waitForState(env, jobId, ["completed"]);
    await worker.stop();
    await edge.stop();

    const about = jsonLines(workerLines).filter((l) => l.jobId === jobId);
    expect(about.map((l) => l.msg)).toEqual(expect.arrayContaining(["job claimed", "file uploaded"]));
    expect(about.filter((l) => "trace_id" in l || "span_id" in l)).toEqual([]);
    expect(receiver.requests).toEqual([]);
    for (const line of [...edgeLines, ...workerLines]) expect(line).not.toContain(EXPORT_SECRET);
  }, 180_000);
});
