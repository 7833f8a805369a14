// What the worker writes to its log while it runs a job: JSON lines with no
// key twice on one line (the root logger's service and worker id, a job's id
// and attempt, each once), and every line about the job naming its id and
// attempt, so one attempt's story can be read from a log search.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import type { Worker } from "../src/worker.ts";
import {
  createProfile,
  type Env,
  MiB,
  makeFixture,
  seedFixtures,
  setupEnv,
  startWorker,
  submitJob,
  waitForState,
  workerEnv,
} from "./helpers.ts";

let env: Env;
let worker: Worker | undefined;

beforeAll(async () => {
  env = await setupEnv(5);
});

afterAll(async () => {
  await worker?.shutdown(5000);
  await env?.cleanup();
});

/** The keys of a JSON object's top level, in order, duplicates kept (JSON.parse keeps only the last). */
function topLevelKeys(line: string): string[] {
  const found: string[] = [];
  let depth = 0;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (ch === '"') {
      let end = i + 1;
      while (end < line.length && line[end] !== '"') end += line[end] === "\\" ? 2 : 1;
      const after = line.slice(end + 1).trimStart();
      if (depth === 1 && after.startsWith(":")) found.push(JSON.parse(line.slice(i, end + 1)) as string);
      i = end;
    } else if (ch === "{" || ch === "[") depth++;
    else if (ch === "}" || ch === "]") depth--;
  }
  return found;
}

describe("worker logs", () => {
  it("finds a repeated key, which JSON.parse would hide", () => {
    expect(topLevelKeys('{"a":1,"b":{"a":2},"c":"x\\":y","a":3}')).toEqual(["a", "b", "c", "a"]);
  });

  it("name the service and worker once per line, and a job's id and attempt on every line about it", async () => {
    const lines: string[] = [];
    const config = loadConfig(workerEnv(env, { LOG_LEVEL: "debug", WORKER_ID: "logs-test-worker" }));
    const log = createLogger(config, { write: (line: string) => void lines.push(line) });
    ({ worker } = await startWorker(env, { LOG_LEVEL: "debug", WORKER_ID: "logs-test-worker" }, log));

    const made = await makeFixture(env, "logged-job", [
      { path: "a.bin", size: 6 * MiB + 3 },
      { path: "b.txt", content: "logged\n" },
    ]);
    await seedFixtures(env, [made]);
    const profileId = await createProfile(env);
    // A magnet with a second tracker on a private address: the egress policy refuses it,
    // and that line too belongs to the job.
    const refused = "http://10.255.255.1:6969/announce";
    const magnetUri = `magnet:?xt=urn:btih:${made.infoHash}&dn=logged-job&tr=${encodeURIComponent(
      env.tracker.announceUrl,
    )}&tr=${encodeURIComponent(refused)}`;
    const job = await submitJob(env, { made, profileId, magnet: true, magnetUri });
    const done = await waitForState(env, job.id, ["completed", "failed"]);
    expect(done.state, done.failureReason ?? "").toBe("completed");
    await worker.shutdown(5000);
    worker = undefined;

    expect(lines.length).toBeGreaterThan(5);
    const parsed = lines.map((line) => ({
      line,
      keys: topLevelKeys(line),
      value: JSON.parse(line) as Record<string, unknown>,
    }));
    for (const { line, keys } of parsed) {
      const repeated = keys.filter((key, i) => keys.indexOf(key) !== i);
      expect(repeated, line).toEqual([]);
    }
    for (const { value } of parsed) {
      expect(value.service).toBe("worker");
      expect(value.worker).toBe("logs-test-worker");
    }
    const aboutJob = parsed.filter(({ line }) => line.includes(job.id));
    expect(aboutJob.map((l) => l.value.msg)).toEqual(
      expect.arrayContaining(["job claimed", "attempt ended"]),
    );
    for (const { line, value } of aboutJob) {
      expect(value.jobId, line).toBe(job.id);
      expect(value, line).toHaveProperty("attempt");
    }
    const refusal = parsed.find(
      ({ value }) => value.msg === "egress refused" && value.host === "10.255.255.1",
    );
    expect(refusal, "the refused tracker in the log").toBeDefined();
    expect(refusal!.value).toMatchObject({ jobId: job.id, attempt: done.attempt });
    // Once claimed, the attempt is a number on every line of it.
    const claimed = aboutJob.findIndex((l) => l.value.msg === "job claimed");
    for (const { line, value } of aboutJob.slice(claimed)) expect(value.attempt, line).toBe(done.attempt);
  });
});
