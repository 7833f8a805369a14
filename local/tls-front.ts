// A TLS front for a plain-HTTP server, standing in for a provider's HTTPS
// endpoint in tests and benchmarks: the local S3 server speaks HTTP only.
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { type AddressInfo, connect, type Socket } from "node:net";
import { join } from "node:path";
import { createServer } from "node:tls";
import { promisify } from "node:util";
import { freePort, portOpen, quietLog, requireProgram, spawnService } from "./process.ts";

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
  const { keyPath, certPath } = await makeCertificate(dir);
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

/** A self-signed certificate for 127.0.0.1 (EC P-256), made with openssl in `dir`. */
async function makeCertificate(dir: string): Promise<{ keyPath: string; certPath: string }> {
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
  return { keyPath, certPath };
}

/**
 * The same front as a native TLS terminator (HAProxy in TCP mode, installed
 * when missing), for the benchmark: a provider terminates TLS on machines of
 * its own, and a Node front on the benchmark's two cores spent 3-5 CPU-s per
 * GiB passing bytes, which then raced the worker for the cores. HAProxy's
 * process is its own, so its CPU is read apart from everyone else's.
 */
export async function haproxyFront(
  target: URL,
  dir: string,
): Promise<{ url: string; certPath: string; pid: number | undefined; close(): Promise<void> }> {
  const haproxy = requireProgram("haproxy", "haproxy");
  const { keyPath, certPath } = await makeCertificate(dir);
  const pemPath = join(dir, "front.pem");
  await writeFile(pemPath, (await readFile(certPath, "utf8")) + (await readFile(keyPath, "utf8")));
  const port = await freePort();
  const configPath = join(dir, "haproxy.cfg");
  await writeFile(
    configPath,
    [
      "global",
      "  maxconn 256",
      "  nbthread 1",
      "defaults",
      "  mode tcp",
      "  timeout connect 5s",
      "  timeout client 10m",
      "  timeout server 10m",
      "frontend tls",
      `  bind 127.0.0.1:${port} ssl crt ${pemPath}`,
      "  default_backend plain",
      "backend plain",
      `  server target ${target.hostname}:${target.port}`,
      "",
    ].join("\n"),
  );
  const service = await spawnService("tls-front", haproxy, {
    args: ["-db", "-f", configPath],
    log: quietLog,
    ready: () => portOpen(port),
  });
  return { url: `https://127.0.0.1:${port}`, certPath, pid: service.child.pid, close: () => service.stop() };
}
