// Vitest global setup (runs in Node, not workerd): a local HTTP server that
// stands in for whatever might answer at an address a user names as a storage
// endpoint — a metadata service, an internal admin page, an API — and puts a
// secret in every answer. The storage tests check that the secret never comes
// back in a response. The path-style bucket name picks the answer; one bucket
// speaks S3 properly, as a control; another (`silent`) never answers at all.
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    probeOrigin: string;
    probeSecret: string;
  }
}

type Answer = { status: number; type?: string; body?: string; headers?: Record<string, string> };

function answerFor(bucket: string, method: string, secret: string): Answer {
  const html = `<!doctype html><html><body><h1>Admin</h1><p>${secret}</p></body></html>`;
  const ok: Answer = { status: 200, type: "application/xml", body: "<ListBucketResult></ListBucketResult>" };
  switch (bucket) {
    case "html-page":
      return { status: 403, type: "text/html; charset=utf-8", body: html };
    case "json-doc":
      return { status: 404, type: "application/json", body: JSON.stringify({ token: secret }) };
    case "plain-text":
      return { status: 400, type: "text/plain", body: secret };
    case "untyped-text":
      return { status: 401, body: `token=${secret}` };
    case "empty-body":
      return { status: 403 };
    case "html-with-code":
      return {
        status: 404,
        type: "text/html",
        body: `<html><Code>${secret}</Code><Message>${secret}</Message></html>`,
      };
    case "xml-other":
      return {
        status: 403,
        type: "application/xml",
        body: `<?xml version="1.0"?><Credentials><Code>${secret}</Code><Message>${secret}</Message></Credentials>`,
      };
    case "error-bad-code":
      return { status: 403, type: "application/xml", body: `<Error><Code>${secret} x</Code></Error>` };
    case "bad-region":
      return {
        status: 301,
        type: "application/xml",
        headers: { "x-amz-bucket-region": `eu ${secret}` },
        body: `<Error><Code>PermanentRedirect</Code><Region>${secret}!</Region></Error>`,
      };
    case "server-error":
      return { status: 502, type: "text/html", body: html };
    case "redirect":
      return {
        status: 302,
        type: "text/html",
        headers: { location: `http://${secret}.example/` },
        body: html,
      };
    case "write-html":
      return method === "PUT" ? { status: 403, type: "text/html", body: html } : ok;
    case "delete-html":
      return method === "DELETE" ? { status: 500, type: "text/html", body: html } : { ...ok, body: "" };
    case "s3-error":
      return {
        status: 403,
        type: "application/xml",
        body: '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>1</RequestId></Error>',
      };
    default:
      return { status: 404, type: "text/plain", body: secret };
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const secret = `probe-secret-${randomBytes(12).toString("hex")}`;
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const bucket = new URL(request.url ?? "/", "http://probe").pathname.split("/")[1] ?? "";
    // An endpoint that accepts the connection and never answers: timeouts are tested against it.
    if (bucket === "silent") return;
    const answer = answerFor(bucket, request.method ?? "GET", secret);
    request.resume();
    request.on("end", () => {
      response.writeHead(answer.status, {
        ...(answer.type ? { "content-type": answer.type } : {}),
        ...answer.headers,
      });
      response.end(answer.body ?? "");
    });
  });
  await new Promise<void>((listening) => server.listen(0, "127.0.0.1", listening));
  const { port } = server.address() as AddressInfo;
  project.provide("probeOrigin", `http://127.0.0.1:${port}`);
  project.provide("probeSecret", secret);
  return () =>
    new Promise<void>((closed) => {
      server.close(() => closed());
      server.closeAllConnections();
    });
}
