// The guard against real sockets on loopback: a listener counts every
// connection and datagram that reaches it, and must count none of those a job
// was not allowed to make.
import dgram from "node:dgram";
import type { LookupAddress, LookupOptions } from "node:dns";
import { once } from "node:events";
import http from "node:http";
import net from "node:net";
import tls from "node:tls";
import { EgressPolicy, type EgressRefusedError, isEgressRefused } from "@torreclou/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asJob, egressRefusalIn, infraSocket, installEgressGuard, Refusals } from "./index.ts";

let tcp: net.Server;
let tcpPort: number;
let tcpConnections = 0;
let udp: dgram.Socket;
let udpPort: number;
const datagrams: string[] = [];
const refused: EgressRefusedError[] = [];
const lookups: string[] = [];

/** A resolver of our own: `rebind.test` resolves to loopback, as a rebinding name would at connect time. */
function lookup(
  hostname: string,
  options: LookupOptions,
  callback: (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
): void {
  lookups.push(hostname);
  const table: Record<string, string> = { "rebind.test": "127.0.0.1", localhost: "127.0.0.1" };
  const address = table[hostname];
  if (!address) {
    const error: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${hostname}`);
    error.code = "ENOTFOUND";
    callback(error, "");
    return;
  }
  if (options.all) callback(null, [{ address, family: 4 }]);
  else callback(null, address, 4);
}

beforeAll(async () => {
  tcp = net.createServer((socket) => {
    tcpConnections++;
    socket.destroy();
  });
  tcp.listen(0, "127.0.0.1");
  await once(tcp, "listening");
  tcpPort = (tcp.address() as net.AddressInfo).port;
  udp = dgram.createSocket("udp4");
  udp.on("message", (message) => datagrams.push(message.toString()));
  udp.bind(0, "127.0.0.1");
  await once(udp, "listening");
  udpPort = udp.address().port;
  installEgressGuard({
    policy: EgressPolicy.fromSpec(`localhost:${tcpPort},localhost:${udpPort}`),
    onRefused: (error) => refused.push(error),
    lookup,
  });
});

afterAll(async () => {
  tcp.close();
  udp.close();
});

/** Runs `work` as a job; resolves with the error its socket ended on. */
function socketError(socket: net.Socket): Promise<Error> {
  return new Promise((resolve, reject) => {
    socket.once("error", resolve);
    socket.once("connect", () => reject(new Error("connected")));
  });
}

describe("egress guard, inside a job", () => {
  it("refuses a loopback IP before any connection, and counts it for the job", async () => {
    const refusals = new Refusals();
    const before = tcpConnections;
    const error = await asJob(refusals, () => socketError(net.connect(tcpPort, "127.0.0.1")));
    expect(isEgressRefused(error)).toBe(true);
    expect(error.message).toContain(
      `127.0.0.1:${tcpPort} refused by the egress policy: it is a loopback address`,
    );
    expect(refusals.count).toBe(1);
    expect(refusals.summary()).toContain(`127.0.0.1:${tcpPort}: a loopback address`);
    expect(tcpConnections).toBe(before);
  });

  it("refuses the IPv4-mapped and IPv4-compatible forms of loopback", async () => {
    for (const host of ["::ffff:127.0.0.1", "::ffff:7f00:1"]) {
      const error = await asJob(new Refusals(), () => socketError(net.connect({ host, port: tcpPort })));
      expect(isEgressRefused(error), host).toBe(true);
    }
  });

  it("checks the address a name resolves to at connect time (rebinding)", async () => {
    const before = tcpConnections;
    const error = await asJob(new Refusals(), () =>
      socketError(net.connect({ host: "rebind.test", port: tcpPort })),
    );
    expect(error.message).toContain(`rebind.test (127.0.0.1):${tcpPort} refused`);
    expect(lookups).toContain("rebind.test");
    expect(tcpConnections).toBe(before);
  });

  it("refuses TLS connections the same way", async () => {
    const error = await asJob(new Refusals(), () =>
      socketError(tls.connect({ host: "rebind.test", port: tcpPort, servername: "rebind.test" })),
    );
    expect(isEgressRefused(error)).toBe(true);
  });

  it("refuses fetch (trackers, web seeds, xs sources) and node:http agents (storage SDKs)", async () => {
    const before = tcpConnections;
    const fetched = await asJob(new Refusals(), () =>
      fetch(`http://127.0.0.1:${tcpPort}/announce?passkey=secret`).catch((error: unknown) => error),
    );
    expect(egressRefusalIn(fetched)?.reason).toBe("a loopback address");
    const requested = await asJob(
      new Refusals(),
      () =>
        new Promise<Error>((resolve) => {
          http
            .get(`http://rebind.test:${tcpPort}/bucket`, () => resolve(new Error("answered")))
            .on("error", resolve);
        }),
    );
    expect(egressRefusalIn(requested)?.address).toBe("127.0.0.1");
    expect(tcpConnections).toBe(before);
  });

  it("connects to an exact host:port the operator allows", async () => {
    const before = tcpConnections;
    await asJob(new Refusals(), async () => {
      const socket = net.connect({ host: "localhost", port: tcpPort });
      await once(socket, "connect");
      socket.destroy();
    });
    await waitUntil(() => tcpConnections === before + 1);
    // The same address on its own, or another port of that host, is not allowed.
    const error = await asJob(new Refusals(), () => socketError(net.connect(tcpPort + 1, "localhost")));
    expect(isEgressRefused(error)).toBe(true);
  });

  it("drops refused datagrams (UDP trackers, DHT) and sends allowed ones", async () => {
    const socket = dgram.createSocket("udp4");
    const refusals = new Refusals();
    const sendError = await asJob(
      refusals,
      () =>
        new Promise<Error | null>((resolve) =>
          socket.send(Buffer.from("refused-ip"), udpPort, "127.0.0.1", (error) => resolve(error)),
        ),
    );
    expect(isEgressRefused(sendError)).toBe(true);
    await asJob(refusals, () => {
      socket.send(Buffer.from("refused-name"), 0, 12, udpPort, "rebind.test");
      socket.send(Buffer.from("allowed"), udpPort, "localhost");
    });
    // The allowed datagram arriving proves the socket sent in order; the refused ones never left.
    await waitUntil(() => datagrams.includes("allowed"));
    expect(datagrams).toEqual(["allowed"]);
    expect(refusals.count).toBe(2);
    socket.close();
  });
});

describe("egress guard, outside a job", () => {
  it("leaves the worker's own infrastructure alone", async () => {
    const before = tcpConnections;
    const socket = net.connect(tcpPort, "127.0.0.1");
    await once(socket, "connect");
    socket.destroy();
    // An infrastructure socket (pg's `stream`) made inside a job is not checked either.
    await asJob(new Refusals(), async () => {
      const infra = infraSocket();
      infra.connect(tcpPort, "127.0.0.1");
      await once(infra, "connect");
      infra.destroy();
    });
    await waitUntil(() => tcpConnections === before + 2);
  });

  it("reported every refusal to the process hook", () => {
    expect(refused.length).toBeGreaterThanOrEqual(8);
    expect(refused.every((e) => isEgressRefused(e))).toBe(true);
  });
});

/** Waits for a condition the test's own events make true (no clock involved). */
async function waitUntil(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setImmediate(resolve));
}
