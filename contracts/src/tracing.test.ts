import { describe, expect, it } from "vitest";
import { z } from "zod";
import { JobMessage } from "./queue.ts";
import { parseOtlpHeaders, tracingOf, tracingSettings } from "./tracing.ts";

const Settings = z.object(tracingSettings);
const jobId = "0b5f0a3e-6c1d-4b8a-9f3e-2d7c1a9e4b60";
const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

describe("tracing settings", () => {
  it("are off without an endpoint (an empty one too)", () => {
    expect(tracingOf(Settings.parse({}), "svc")).toBeUndefined();
    expect(tracingOf(Settings.parse({ OTEL_EXPORTER_OTLP_ENDPOINT: " " }), "svc")).toBeUndefined();
  });

  it("post to <endpoint>/v1/traces, with the headers, the service name and the ratio", () => {
    const settings = Settings.parse({
      OTEL_EXPORTER_OTLP_ENDPOINT: "https://collector.example:4318/",
      OTEL_EXPORTER_OTLP_HEADERS: "Authorization=Bearer%20abc, x-tenant=t1",
      OTEL_TRACES_SAMPLER_ARG: "0.25",
    });
    expect(tracingOf(settings, "svc")).toEqual({
      url: "https://collector.example:4318/v1/traces",
      headers: { Authorization: "Bearer abc", "x-tenant": "t1" },
      serviceName: "svc",
      sampleRatio: 0.25,
    });
    expect(tracingOf({ ...settings, OTEL_SERVICE_NAME: "edge-eu" }, "svc")?.serviceName).toBe("edge-eu");
    expect(Settings.parse({}).OTEL_TRACES_SAMPLER_ARG).toBe(1);
  });

  it("refuse a bad endpoint or ratio, and headers without echoing their values", () => {
    expect(Settings.safeParse({ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" }).success).toBe(false);
    expect(Settings.safeParse({ OTEL_EXPORTER_OTLP_ENDPOINT: "ftp://c.example" }).success).toBe(false);
    expect(Settings.safeParse({ OTEL_TRACES_SAMPLER_ARG: "2" }).success).toBe(false);
    expect(Settings.safeParse({ OTEL_TRACES_SAMPLER_ARG: "half" }).success).toBe(false);
    for (const spec of ["s3cr3t-token", "=s3cr3t-token", "bad name=s3cr3t-token", "k=%E0%A4%A"]) {
      const result = Settings.safeParse({ OTEL_EXPORTER_OTLP_HEADERS: spec });
      expect(result.success, spec).toBe(false);
      expect(JSON.stringify(result.error?.issues)).not.toContain("s3cr3t");
    }
    expect(parseOtlpHeaders("")).toEqual({});
    expect(parseOtlpHeaders("a=1,,b=x=y")).toEqual({ a: "1", b: "x=y" });
  });
});

describe("a jobs-stream entry's trace context", () => {
  it("is optional: entries from before it, or with tracing off, still parse", () => {
    expect(JobMessage.parse({ jobId })).toEqual({ jobId });
    expect(JobMessage.parse({ jobId, traceparent, tracestate: "vendor=1" })).toEqual({
      jobId,
      traceparent,
      tracestate: "vendor=1",
    });
  });

  it("is dropped when malformed, never the entry", () => {
    expect(JobMessage.parse({ jobId, traceparent: 42, tracestate: "x".repeat(600) })).toEqual({ jobId });
    expect(JobMessage.parse({ jobId, traceparent: "x".repeat(100), cleanup: true })).toEqual({
      jobId,
      cleanup: true,
    });
  });
});
