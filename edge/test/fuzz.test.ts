// Mutated .torrent files through POST /api/torrents/analyze: bit flips,
// truncations, spliced bencode, huge lengths, deep nesting, garbage. Every
// answer must be a 200 whose content is safe, or a clean 4xx in the error
// shape: never a 5xx, never a hang. Then the same for the cursors and limits
// of the job list and progress reads, as the caller and as a stranger. The
// PRNG seed is printed so a failure can be replayed (FUZZ_SEED is not read in
// workerd; edit `seed` below).
import { describe, expect, it } from "vitest";
import { seededRandom as prng } from "../../local/random.ts";
import { publishProgress, submitJob, userWithStorage } from "./fixtures/jobs.ts";
import { bencode, makeTorrent } from "./fixtures/torrents.ts";
import { call, fromWebApp, signIn } from "./helpers.ts";

const CASES = 2500;
const CONCURRENCY = 16;
/** The analyze route allows 60 requests a minute per user. */
const PER_USER = 55;
const REQUEST_TIMEOUT_MS = 10_000;
const TOTAL_BUDGET_MS = 150_000;

const enc = new TextEncoder();

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

type Mutator = (bytes: Uint8Array, rand: () => number, pool: Uint8Array[]) => Uint8Array;

const int = (rand: () => number, n: number) => Math.floor(rand() * n);
const special = enc.encode("dlei0123456789:-");

const mutators: [string, Mutator][] = [
  [
    "bit flips",
    (b, rand) => {
      const out = b.slice();
      for (let i = 0, n = 1 + int(rand, 8); i < n; i++) out[int(rand, out.length)]! ^= 1 << int(rand, 8);
      return out;
    },
  ],
  [
    "structural bytes",
    (b, rand) => {
      const out = b.slice();
      for (let i = 0, n = 1 + int(rand, 4); i < n; i++)
        out[int(rand, out.length)] = special[int(rand, special.length)]!;
      return out;
    },
  ],
  ["truncation", (b, rand) => b.slice(0, int(rand, b.length))],
  [
    "splice",
    (b, rand, pool) => {
      const other = pool[int(rand, pool.length)]!;
      const from = int(rand, other.length);
      const piece = other.slice(from, from + 1 + int(rand, 200));
      const at = int(rand, b.length);
      return concat(b.slice(0, at), piece, b.slice(at + int(rand, 50)));
    },
  ],
  [
    "huge length",
    (b, rand) => {
      const text = new TextDecoder("latin1").decode(b);
      const lengths = [...text.matchAll(/(\d+):/g)];
      if (lengths.length === 0) return b;
      const m = lengths[int(rand, lengths.length)]!;
      const huge = ["99999999999", "4294967296", "9007199254740993", "-1", "00", "1e9"][int(rand, 6)]!;
      return concat(b.slice(0, m.index), enc.encode(huge), b.slice(m.index + m[1]!.length));
    },
  ],
  [
    "huge integer",
    (b, rand) => {
      const text = new TextDecoder("latin1").decode(b);
      const ints = [...text.matchAll(/i(-?\d+)e/g)];
      if (ints.length === 0) return b;
      const m = ints[int(rand, ints.length)]!;
      const value = ["-1", "0", "99999999999999999999", "-0", "007", "", "1.5", "9007199254740992"][
        int(rand, 8)
      ]!;
      return concat(b.slice(0, m.index! + 1), enc.encode(value), b.slice(m.index! + 1 + m[1]!.length));
    },
  ],
  [
    "deep nesting",
    (b, rand) => {
      const depth = [65, 1000, 100_000][int(rand, 3)]!;
      const open = enc.encode((rand() < 0.5 ? "l" : "d1:a").repeat(depth));
      const at = int(rand, b.length);
      return concat(b.slice(0, at), open, b.slice(at));
    },
  ],
  [
    "duplicated span",
    (b, rand) => {
      const from = int(rand, b.length);
      const span = b.slice(from, from + 1 + int(rand, 400));
      const at = int(rand, b.length);
      return concat(b.slice(0, at), span, span, b.slice(at));
    },
  ],
  [
    "garbage",
    (_b, rand) => {
      const out = new Uint8Array(int(rand, 2048));
      for (let i = 0; i < out.length; i++) out[i] = int(rand, 256);
      return out;
    },
  ],
];

/** Hand-made nasty torrents that are valid bencode. */
async function seeds(): Promise<Uint8Array[]> {
  const pool: Uint8Array[] = [];
  pool.push((await makeTorrent()).bytes);
  pool.push((await makeTorrent({ name: "one.bin", files: [{ path: "one.bin", size: 70_000 }] })).bytes);
  pool.push(
    (
      await makeTorrent({
        files: Array.from({ length: 40 }, (_, i) => ({ path: `d${i % 4}/sub/f${i}.dat`, size: 1 + i * 37 })),
        pieceLength: 1024,
      })
    ).bytes,
  );
  const base = await makeTorrent();
  const info = base.info;
  const variant = (over: Record<string, unknown>) =>
    bencode({ announce: "http://t/a", info: { ...info, ...over } as Parameters<typeof bencode>[0] & object });
  pool.push(variant({ files: [{ length: 5, path: ["..", "x"] }] }));
  pool.push(variant({ files: [{ length: -5, path: ["x"] }] }));
  pool.push(variant({ "piece length": 0 }));
  pool.push(variant({ pieces: new Uint8Array(21) }));
  pool.push(variant({ "meta version": 2, pieces: undefined, "file tree": { a: { "": { length: 1 } } } }));
  pool.push(variant({ name: "a\u0000b" }));
  return pool;
}

interface Outcome {
  status: number;
  body: unknown;
}

async function analyzeOnce(cookie: string, bytes: Uint8Array): Promise<Outcome> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("request hung")), REQUEST_TIMEOUT_MS);
  });
  try {
    const response = await Promise.race([
      call("/api/torrents/analyze", {
        method: "POST",
        headers: fromWebApp(cookie, { "content-type": "application/x-bittorrent" }),
        body: bytes,
      }),
      timeout,
    ]);
    const text = await response.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
    return { status: response.status, body };
  } finally {
    clearTimeout(timer);
  }
}

function problemsWith(outcome: Outcome): string | undefined {
  const { status, body } = outcome;
  if (status === 200) {
    const info = body as { files?: { path: string; size: number }[]; totalSize?: number; infoHash?: string };
    if (!info.files || !/^[0-9a-f]{40}$/.test(info.infoHash ?? "")) return "200 without files or info hash";
    let sum = 0;
    for (const f of info.files) {
      const parts = f.path.split("/");
      if (parts.some((p) => p === "" || p === "." || p === ".." || p.includes("\\") || /\p{Cc}/u.test(p)))
        return `200 with an unsafe path ${JSON.stringify(f.path)}`;
      if (!Number.isSafeInteger(f.size) || f.size < 0) return `200 with a bad size ${f.size}`;
      sum += f.size;
    }
    if (sum !== info.totalSize) return "200 whose sizes do not add up";
    return undefined;
  }
  if (![400, 413, 415, 422].includes(status)) return `status ${status}`;
  const error = (body as { error?: { code?: unknown; message?: unknown } }).error;
  if (typeof error?.code !== "string" || typeof error.message !== "string" || error.message === "")
    return `status ${status} without the error shape: ${JSON.stringify(body).slice(0, 200)}`;
  return undefined;
}

describe("fuzzing POST /api/torrents/analyze", () => {
  it(`answers ${CASES} mutated torrents with a 2xx or a clean 4xx, never a 5xx or a hang`, async () => {
    const seed = Date.now() % 2 ** 31;
    console.log(`fuzz seed ${seed}`);
    const rand = prng(seed);
    const pool = await seeds();
    const started = Date.now();

    const users: string[] = [];
    for (let i = 0; i < Math.ceil(CASES / PER_USER); i++) users.push((await signIn()).cookie);

    const failures: string[] = [];
    const statuses = new Map<number, number>();
    let next = 0;
    let done = 0;
    const worker = async () => {
      while (next < CASES && Date.now() - started < TOTAL_BUDGET_MS) {
        const n = next++;
        const source = pool[int(rand, pool.length)]!;
        let bytes = source;
        const applied: string[] = [];
        for (let k = 0, rounds = 1 + int(rand, 3); k < rounds; k++) {
          const [name, mutate] = mutators[int(rand, mutators.length)]!;
          bytes = mutate(bytes, rand, pool);
          applied.push(name);
        }
        try {
          const outcome = await analyzeOnce(users[Math.floor(n / PER_USER)]!, bytes);
          statuses.set(outcome.status, (statuses.get(outcome.status) ?? 0) + 1);
          const problem = problemsWith(outcome);
          if (problem) failures.push(`case ${n} (${applied.join(" + ")}): ${problem}`);
        } catch (err) {
          failures.push(
            `case ${n} (${applied.join(" + ")}): ${err instanceof Error ? err.message : String(err)}`,
          );
        }
        done++;
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    console.log(
      `fuzz: ${done} cases in ${Date.now() - started} ms; statuses ${JSON.stringify(Object.fromEntries(statuses))}`,
    );
    expect(failures.slice(0, 20)).toEqual([]);
    expect(done).toBe(CASES);
    // The corpus exercises both sides: some mutants still parse, most are refused.
    expect(statuses.get(200) ?? 0).toBeGreaterThan(0);
    expect(statuses.get(422) ?? 0).toBeGreaterThan(CASES / 4);
  }, 240_000);
});

// --- Query strings --------------------------------------------------------------

const QUERY_CASES = 600;
const U64_MAX = "18446744073709551615";

const digits = (rand: () => number, n: number) =>
  Array.from({ length: n }, () => String(int(rand, 10))).join("");
/** A date field: in its range most of the time, else any digits (of the width or not). */
const field = (rand: () => number, width: number, low: number, high: number) => {
  const roll = rand();
  if (roll < 0.6) return String(low + int(rand, high - low + 1)).padStart(width, "0");
  if (roll < 0.9) return String(int(rand, 10 ** width)).padStart(width, "0");
  return digits(rand, 1 + int(rand, width + 2));
};
const pick = <T>(rand: () => number, items: readonly T[]): T => items[int(rand, items.length)]!;

function base64url(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** A cursor of the list's shape ([timestamp, id] in base64url) with parts that may be nonsense. */
function listQuery(rand: () => number): string {
  const ts =
    `${field(rand, 4, 1970, 2100)}-${field(rand, 2, 1, 12)}-${field(rand, 2, 1, 31)}` +
    `T${field(rand, 2, 0, 23)}:${field(rand, 2, 0, 59)}:${field(rand, 2, 0, 59)}.${field(rand, 6, 0, 999_999)}Z`;
  const id =
    rand() < 0.8 ? crypto.randomUUID() : pick(rand, ["", "x", "00000000-0000-0000-0000-00000000000g"]);
  const cursor = pick(rand, [
    () => base64url(JSON.stringify([ts, id])),
    () => base64url(JSON.stringify([ts])),
    () => base64url(JSON.stringify({ ts, id })),
    () => base64url(pick(rand, ["[", "null", '["a"', "\u0000", ts])),
    () => digits(rand, 1 + int(rand, 40)),
    () => "=".repeat(1 + int(rand, 5)),
  ])();
  const params = new URLSearchParams({ cursor });
  if (rand() < 0.3) params.set("limit", pick(rand, ["0", "-1", "1e3", "1.5", "100", digits(rand, 25), "x"]));
  if (rand() < 0.2) params.set("status", pick(rand, ["queued", "queued,,", "Queued", ",", "done"]));
  return `/api/jobs?${params}`;
}

/** A progress read with a cursor that may be out of a stream id's range. */
function progressQuery(rand: () => number, jobId: string): string {
  const part = () =>
    pick(rand, [
      () => digits(rand, 1 + int(rand, 25)),
      () => U64_MAX,
      () => "18446744073709551616",
      () => "0",
      () => `0${digits(rand, 19)}`,
    ])();
  const after = pick(rand, [
    () => `${part()}-${part()}`,
    () => part(),
    () => `(${part()}-${part()}`,
    () => pick(rand, ["-", "+", "$", ">", "0-0-0", ""]),
  ])();
  const params = new URLSearchParams({ after });
  if (rand() < 0.3) params.set("limit", pick(rand, ["0", "201", "-5", "1", "200", digits(rand, 22), "NaN"]));
  return `/api/jobs/${jobId}/progress?${params}`;
}

describe("fuzzing the job list cursor and the progress cursor", () => {
  it(`answers ${QUERY_CASES} mutated queries with a 200, 400 or 404 in the error shape, never a 5xx`, async () => {
    const seed = Date.now() % 2 ** 31;
    console.log(`query fuzz seed ${seed}`);
    const rand = prng(seed);
    const owner = await userWithStorage();
    const job = await submitJob(owner);
    await publishProgress(job.id);
    const stranger = await signIn();

    const failures: string[] = [];
    const statuses = new Map<number, number>();
    let next = 0;
    const worker = async () => {
      while (next < QUERY_CASES) {
        const n = next++;
        const who = rand() < 0.7 ? owner.cookie : stranger.cookie;
        const path =
          rand() < 0.5 ? listQuery(rand) : progressQuery(rand, rand() < 0.9 ? job.id : crypto.randomUUID());
        const response = await call(path, { headers: fromWebApp(who) });
        const text = await response.text();
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
        if (![200, 400, 404].includes(response.status)) {
          failures.push(`case ${n} ${path}: status ${response.status} ${text.slice(0, 200)}`);
        } else if (response.status !== 200) {
          const error = (JSON.parse(text) as { error?: { code?: unknown; message?: unknown } }).error;
          if (typeof error?.code !== "string" || typeof error.message !== "string")
            failures.push(`case ${n} ${path}: ${response.status} without the error shape`);
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    console.log(`query fuzz: statuses ${JSON.stringify(Object.fromEntries(statuses))}`);
    expect(failures.slice(0, 20)).toEqual([]);
    expect(statuses.get(200) ?? 0).toBeGreaterThan(0);
    expect(statuses.get(400) ?? 0).toBeGreaterThan(0);
  }, 240_000);
});
