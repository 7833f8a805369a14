// Redis replies in the JSON shape of Upstash's REST API. Redis hands us raw
// bytes (ioredis in Buffer mode); the REST API returns them either as UTF-8
// text or, when the client sends `Upstash-Encoding: base64`, base64-encoded so
// that binary values survive JSON.

/** A RESP2 reply as ioredis gives it with Buffer output. */
export type Reply = Buffer | string | number | bigint | null | Error | Reply[];

export type Json = string | number | null | Json[];

export type Encoding = "utf8" | "base64";

/**
 * Converts one command's reply. In base64 mode every string is encoded except a
 * top-level "OK": Upstash sends that one plain and @upstash/redis relies on it
 * (it decodes every other string it receives, including strings inside arrays).
 */
export function replyToJson(reply: Reply, encoding: Encoding): Json {
  if (encoding === "base64" && isOk(reply)) return "OK";
  return convert(reply, encoding);
}

function convert(reply: Reply, encoding: Encoding): Json {
  if (reply === null) return null;
  if (typeof reply === "number") return reply;
  // Integers beyond 2^53 only come back as bigint with special parser options; keep them exact as text.
  if (typeof reply === "bigint") return reply.toString();
  if (Array.isArray(reply)) return reply.map((item) => convert(item, encoding));
  // An error nested in an array (e.g. inside a Lua table) is rendered as its message.
  if (reply instanceof Error) return text(Buffer.from(reply.message), encoding);
  return text(typeof reply === "string" ? Buffer.from(reply) : reply, encoding);
}

function text(bytes: Buffer, encoding: Encoding): string {
  return encoding === "base64" ? bytes.toString("base64") : bytes.toString("utf8");
}

function isOk(reply: Reply): boolean {
  if (typeof reply === "string") return reply === "OK";
  return Buffer.isBuffer(reply) && reply.length === 2 && reply.toString("latin1") === "OK";
}
