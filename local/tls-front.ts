// A TLS front for a plain-HTTP server, standing in for a provider's HTTPS
// endpoint in tests and benchmarks: the local S3 server speaks HTTP only.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { type AddressInfo, connect, type Socket } from "node:net";
import { join } from "node:path";
import { createServer } from "node:tls";
import { promisify } from "node:util";

/**
 * A TLS front for `target`, as a provider's HTTPS endpoint: a certificate for
 * 127.0.0.1 made with openssl in `dir`, each connection passed on to the
 * target, and (unless `record` is false, as for a benchmark) the head of
 * every request it carried: method line and headers.
 */
export async function tlsFront(
  target: URL,
  dir: string,
  record = true,
  /** Cut the first connection once it has carried this many bytes of requests (a network fault). */
  cutFirstAfter?: number,
): Promise<{
  url: string;
  cert: string;
  certPath: string;
  heads: string[];
  /** Connections cut so far (cutFirstAfter). */
  cuts(): number;
  close(): Promise<void>;
}> {
  const [keyPath, certPath] = [join(dir, "front.key"), join(dir, "front.crt")];
  await promisify(execFile)("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=127.0.0.1",
    "-addext",
    "subjectAltName=IP:127.0.0.1",
    "-keyout",
    keyPath,
    "-out",
    certPath,
  ]);
  const [key, cert] = [await readFile(keyPath, "utf8"), await readFile(certPath, "utf8")];
  const heads: string[] = [];
  let connections = 0;
  let cut = 0;
  const sockets = new Set<Socket>();
  const server = createServer({ key, cert }, (client) => {
    const upstream = connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    // Request heads, from the decrypted stream: a line "METHOD /path HTTP/1.1" up to the blank line.
    let text = "";
    if (record)
      client.on("data", (chunk: Buffer) => {
        text = (text + chunk.toString("latin1")).slice(-64 * 1024);
        for (let at = text.search(/(GET|PUT|POST|HEAD|DELETE) \S+ HTTP\/1\.1\r\n/); at >= 0; ) {
          const end = text.indexOf("\r\n\r\n", at);
          if (end < 0) break;
          heads.push(text.slice(at, end + 2));
          text = text.slice(end + 4);
          at = text.search(/(GET|PUT|POST|HEAD|DELETE) \S+ HTTP\/1\.1\r\n/);
        }
      });
    if (cutFirstAfter !== undefined && connections++ === 0) {
      let carried = 0;
      client.on("data", (chunk: Buffer) => {
        carried += chunk.length;
        if (carried >= cutFirstAfter) {
          cut += 1;
          client.destroy();
          upstream.destroy();
        }
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `https://127.0.0.1:${port}`,
    cert,
    certPath,
    heads,
    cuts: () => cut,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
