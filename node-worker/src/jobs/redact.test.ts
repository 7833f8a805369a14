import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { redactingLogger, redactText, secretsOfSource } from "./redact.ts";

const passkey = "f3a9c2d1e0b84f6a9c2d1e0b84f6a9c2";
const tracker = `https://tracker.example/${passkey}/announce`;
const magnet = `magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=x&tr=${encodeURIComponent(tracker)}&tr=${encodeURIComponent("http://t2.example/announce?passkey=s3cr3t-value")}`;

describe("redactText", () => {
  it("masks the job's tracker URLs, whole or in parts, wherever they appear", async () => {
    const secrets = await secretsOfSource(magnet);
    for (const text of [
      `Non-200 response code 404 from ${tracker}`,
      `invalid action in HTTP request: /${passkey}/announce?info_hash=%12`,
      `tracker said: unknown passkey ${passkey}`,
      "http://t2.example/announce?passkey=s3cr3t-value&info_hash=1 failed",
      `could not add ${magnet}`,
    ]) {
      const out = redactText(text, secrets);
      expect(out).not.toContain(passkey);
      expect(out).not.toContain("s3cr3t-value");
      expect(out).toContain("[redacted]");
    }
  });

  it("cuts any other URL to its scheme and host, and any magnet link to its scheme", () => {
    expect(redactText("from https://other.example/abc/announce?key=1 now", [])).toBe(
      "from https://other.example/[redacted] now",
    );
    expect(redactText("add magnet:?xt=urn:btih:abc&tr=x failed", [])).toBe("add magnet:?[redacted] failed");
    expect(redactText("No peers are sharing this torrent", [])).toBe("No peers are sharing this torrent");
  });
});

describe("redactingLogger", () => {
  it("redacts errors, failure reasons and source fields in what it writes", async () => {
    const lines: string[] = [];
    const root = pino({ level: "debug" }, { write: (line: string) => lines.push(line) });
    const secrets: string[] = [];
    const log = redactingLogger(root, { jobId: "j1" }, secrets);
    secrets.push(...(await secretsOfSource(magnet)));
    const error = new Error(`invalid action in HTTP request: /${passkey}/announce`);
    log.debug({ err: error }, "torrent warning");
    log.child({ file: "a" }).warn({ err: new Error(`Non-200 response code 404 from ${tracker}`) }, "x");
    log.warn({ reason: `The torrent could not be downloaded: ${tracker}` }, "job failed");
    log.info({ source: magnet, magnet, announce: tracker }, "never like this");
    const all = lines.join("");
    expect(lines).toHaveLength(4);
    expect(all).toContain("invalid action in HTTP request");
    expect(all).toContain('"jobId":"j1"');
    expect(all).not.toContain(passkey);
    expect(all).not.toContain("s3cr3t-value");
    expect(all).not.toContain("magnet:?xt");
  });
});
