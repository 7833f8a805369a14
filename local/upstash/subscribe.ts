// SUBSCRIBE and PSUBSCRIBE over server-sent events, in the line format
// @upstash/redis parses: `data: subscribe,<channel>,<count>`, then
// `data: message,<channel>,<message>` (or `pmessage,<pattern>,<channel>,<message>`).
import type { ServerResponse } from "node:http";
import type { Redis } from "ioredis";

/** Streams messages until the client goes away; `conn` is dropped with the stream. */
export async function openSubscription(
  conn: Redis,
  kind: "subscribe" | "psubscribe",
  names: string[],
  res: ServerResponse,
): Promise<void> {
  // The client may have left while the connection was opening.
  if (res.destroyed) {
    conn.disconnect();
    return;
  }
  res.on("close", () => conn.disconnect());
  res.writeHead(200, {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    connection: "keep-alive",
  });
  const event = (fields: Array<string | number | Buffer>) => res.write(`data: ${fields.join(",")}\n\n`);
  conn.on("messageBuffer", (channel: Buffer, message: Buffer) => event(["message", channel, message]));
  conn.on("pmessageBuffer", (pattern: Buffer, channel: Buffer, message: Buffer) =>
    event(["pmessage", pattern, channel, message]),
  );
  for (const name of names) {
    const count = kind === "subscribe" ? await conn.subscribe(name) : await conn.psubscribe(name);
    event([kind, name, count as number]);
  }
}
