// The monitoring files in deploy/: Prometheus alert rules that promtool
// accepts and whose unit tests (alerts.test.yml) pass, and a Grafana dashboard
// that parses. That the dashboard and the rules only name metrics a worker
// exports is checked against a worker's registry (node-worker/test/operator.test.ts).
// promtool comes from Debian's `prometheus` package (.ci/run installs it).
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { expect, it } from "vitest";

const dir = resolve(import.meta.dirname, "../deploy");

function promtool(...args: string[]) {
  const run = spawnSync("promtool", args, { cwd: resolve(dir, "prometheus"), encoding: "utf8" });
  if (run.error) throw new Error(`promtool is needed (Debian package "prometheus"): ${run.error.message}`);
  return { status: run.status, output: `${run.stdout}\n${run.stderr}` };
}

it("promtool accepts the alert rules", () => {
  const { status, output } = promtool("check", "rules", "alerts.yml");
  expect(status, output).toBe(0);
  expect(output).toContain("SUCCESS: 5 rules found");
});

it("the alert rules pass their unit tests", () => {
  const { status, output } = promtool("test", "rules", "alerts.test.yml");
  expect(status, output).toBe(0);
  expect(output).toContain("SUCCESS");
});

it("the Grafana dashboard parses, each panel with a query", () => {
  const dashboard = JSON.parse(readFileSync(resolve(dir, "grafana/torreclou.json"), "utf8")) as {
    uid: string;
    panels: { id: number; title: string; targets: { expr: string; refId: string }[] }[];
  };
  expect(dashboard.uid).toBe("torreclou");
  expect(new Set(dashboard.panels.map((p) => p.id)).size).toBe(dashboard.panels.length);
  for (const panel of dashboard.panels) expect(panel.targets.length, panel.title).toBeGreaterThan(0);
});
