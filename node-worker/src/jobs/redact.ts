// Keeps a job's source out of the worker's logs. Magnet links and announce
// URLs carry private-tracker passkeys, and they surface in errors: a tracker
// error names its announce URL ("Non-200 response code 404 from https://…"),
// and a tracker's own failure text may echo the path it was asked for. Every
// logged error has its URLs cut to scheme and host and the job's own tracker
// URLs (and their longer path segments and query values) masked wherever they
// appear; structured fields that would hold a source are redacted outright.
import { parseMagnet, parseTorrentFile } from "@torreclou/contracts";
import { type Logger, stdSerializers } from "pino";

const MASK = "[redacted]";
/** Shorter path segments and query values are words like "announce", not keys. */
const MIN_SECRET_CHARS = 8;
const NOT_SECRET = new Set(["announce", "announce.php", "scrape.php"]);

/** Fields that could carry a source if anyone logged one. */
const REDACTED_FIELDS = [
  "source",
  "magnet",
  "magnetUri",
  "torrentFile",
  "announce",
  "announceUrl",
  "trackers",
];

/** The strings of a tracker URL that may be secret: the URL, its path and query, and their longer parts. */
function secretsOfUrl(raw: string): string[] {
  const out = [raw];
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return out;
  }
  const tail = `${url.pathname}${url.search}`;
  if (tail !== "/" && tail !== "/announce") out.push(tail);
  if (url.username) out.push(url.username);
  if (url.password) out.push(url.password);
  for (const segment of url.pathname.split("/")) out.push(segment, safeDecode(segment));
  for (const value of url.searchParams.values()) out.push(value, encodeURIComponent(value));
  return out.filter((s) => s.length >= MIN_SECRET_CHARS && !NOT_SECRET.has(s.toLowerCase()));
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** What must never appear in a log line about a job with this source. */
export async function secretsOfSource(source: string | Uint8Array): Promise<string[]> {
  let trackers: string[] = [];
  try {
    trackers =
      typeof source === "string" ? parseMagnet(source).trackers : (await parseTorrentFile(source)).trackers;
  } catch {
    // Unparseable here means webtorrent will refuse it too; URLs are still cut below.
  }
  const out = typeof source === "string" ? [source] : [];
  for (const tracker of trackers) out.push(...secretsOfUrl(tracker));
  // Longest first, so a URL is masked whole before its parts are.
  return [...new Set(out)].sort((a, b) => b.length - a.length);
}

const MAGNET = /magnet:\?[^\s"'<>]*/gi;
const URL_TAIL = /\b([a-z][a-z0-9+.-]*:\/\/[^/\s"'<>?#]+)[/?#][^\s"'<>]*/gi;

/** `text` with every one of the secrets masked. */
export function maskSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) if (out.includes(secret)) out = out.split(secret).join(MASK);
  return out;
}

/** `text` with the secrets masked, magnet links cut to their scheme and URLs to scheme and host. */
export function redactText(text: string, secrets: readonly string[]): string {
  return maskSecrets(text, secrets).replace(MAGNET, `magnet:?${MASK}`).replace(URL_TAIL, `$1/${MASK}`);
}

function redactDeep(value: unknown, secrets: readonly string[], depth = 0): unknown {
  if (typeof value === "string") return redactText(value, secrets);
  if (depth > 6 || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((v) => redactDeep(v, secrets, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) out[key] = redactDeep(v, secrets, depth + 1);
  return out;
}

/**
 * A child logger for one job whose errors and failure reasons are redacted.
 * `secrets` is read at each log call, so the caller can add the job's
 * tracker URLs once it has decrypted the source.
 */
export function redactingLogger(
  log: Logger,
  bindings: Record<string, unknown>,
  secrets: readonly string[],
): Logger {
  return log.child(bindings, {
    serializers: {
      err: (error: unknown) =>
        redactDeep(error instanceof Error ? stdSerializers.err(error) : error, secrets),
      reason: (reason: unknown) => redactDeep(reason, secrets),
    },
    redact: { paths: REDACTED_FIELDS, censor: MASK },
  });
}
