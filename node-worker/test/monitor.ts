// Redis's MONITOR on a socket of its own, for the tests that count commands.
// ioredis's monitor() marks its connection as monitoring only once the OK's
// promise settles; a command line that arrives in the same read as that OK
// meets an empty command queue and fails the connection ("Command queue state
// error"). On a busy server that is a race, so the lines are read here.
import { connect } from "node:net";

/** One command as the server ran it. `source` is the client's address, or "lua" inside a script. */
export interface Monitored {
  database: string;
  source: string;
  args: string[];
}

export interface Monitor {
  close(): void;
}

/** Calls `onCommand` for every command the server of `redisUrl` runs (on any database) from now until `close`. */
export function monitorRedis(redisUrl: string, onCommand: (command: Monitored) => void): Promise<Monitor> {
  const url = new URL(redisUrl);
  const socket = connect(Number(url.port || 6379), url.hostname);
  socket.setEncoding("utf8");
  const send = (...args: string[]) =>
    socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`);
  const password = decodeURIComponent(url.password);
  const expectedOks = password ? 2 : 1;
  if (password) send("AUTH", decodeURIComponent(url.username) || "default", password);
  send("MONITOR");

  return new Promise((resolve, reject) => {
    let oks = 0;
    let rest = "";
    socket.on("error", reject);
    socket.on("data", (chunk: string) => {
      const lines = (rest + chunk).split("\r\n");
      rest = lines.pop() ?? "";
      for (const line of lines) {
        if (oks < expectedOks) {
          if (line !== "+OK") {
            socket.destroy();
            return reject(new Error(`MONITOR refused: ${line}`));
          }
          if (++oks === expectedOks) resolve({ close: () => socket.destroy() });
          continue;
        }
        const command = parseLine(line);
        if (command) onCommand(command);
      }
    });
  });
}

/** `+1796032725.713061 [19 127.0.0.1:51276] "del" "key"`: arguments quoted and escaped as sdscatrepr does. */
export function parseLine(line: string): Monitored | undefined {
  const head = /^\+\S+ \[(\d+) ([^\]]+)\] /.exec(line);
  if (!head) return undefined;
  const args = [...line.slice(head[0].length).matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => unquote(m[1]!));
  return { database: head[1]!, source: head[2]!, args };
}

const escapes: Record<string, string> = { n: "\n", r: "\r", t: "\t", a: "\x07", b: "\b" };

function unquote(quoted: string): string {
  return quoted.replace(/\\(x[0-9a-fA-F]{2}|.)/g, (_, e: string) =>
    e.length === 3 ? String.fromCharCode(Number.parseInt(e.slice(1), 16)) : (escapes[e] ?? e),
  );
}
