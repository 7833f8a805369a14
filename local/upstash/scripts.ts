// Upstash accepts Lua shebang flags that a stock redis-server 7.0 rejects, such
// as `#!lua flags=allow-key-locking` in @upstash/ratelimit's scripts ("ERR
// Unexpected flag in script shebang"). Scripts are passed on without the flags
// Redis does not know. The client addresses a script by the SHA-1 of the text
// *it* sent (EVALSHA, SCRIPT LOAD's reply), so each original SHA-1 is mapped
// to the rewritten script's.
import { createHash } from "node:crypto";
import type { Arg, RedisCommand } from "./commands.ts";

const redisFlags = new Set(["no-writes", "allow-oom", "allow-stale", "no-cluster", "allow-cross-slot-keys"]);
const shas = new Map<string, string>();

const sha1 = (text: Arg) => createHash("sha1").update(text).digest("hex");

/** The script without flags Redis does not know; unchanged when it has none. */
export function withKnownFlags(script: string): string {
  const match = /^#!lua flags=([^\n]*)/.exec(script);
  if (!match) return script;
  const kept = match[1]!.split(",").filter((flag) => redisFlags.has(flag.trim()));
  const shebang = kept.length > 0 ? `#!lua flags=${kept.join(",")}` : "#!lua";
  return shebang + script.slice(match[0].length);
}

export interface AdaptedCommand {
  command: RedisCommand;
  /** A reply to give instead of Redis's (SCRIPT LOAD answers the client's SHA-1). */
  reply?: Buffer;
}

export function adaptScripts(command: RedisCommand): AdaptedCommand {
  const [name, ...args] = command;
  const upper = name.toUpperCase();
  const rewrite = (script: Arg): string => {
    const original = script.toString();
    const adapted = withKnownFlags(original);
    if (adapted !== original) shas.set(sha1(original), sha1(adapted));
    return adapted;
  };
  if ((upper === "EVAL" || upper === "EVAL_RO") && args[0] !== undefined) {
    return { command: [name, rewrite(args[0]), ...args.slice(1)] };
  }
  if ((upper === "EVALSHA" || upper === "EVALSHA_RO") && args[0] !== undefined) {
    const mapped = shas.get(args[0].toString().toLowerCase());
    return { command: mapped ? [name, mapped, ...args.slice(1)] : command };
  }
  if (upper === "SCRIPT" && args[0]?.toString().toUpperCase() === "LOAD" && args[1] !== undefined) {
    return { command: [name, args[0], rewrite(args[1])], reply: Buffer.from(sha1(args[1])) };
  }
  return { command };
}
