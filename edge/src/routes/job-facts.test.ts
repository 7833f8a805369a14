// What one user can learn from another's submission of the same torrent:
// nothing. Names, sources and file lists are per job; the torrents row shared
// by info hash holds only info-dictionary facts and shows in no response; the
// submitted magnet or .torrent (with its tracker passkey) is stored encrypted.
import { torrents } from "@torreclou/db";
import { eq, sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { withDb } from "../../test/fixtures/db.ts";
import { type JobView, send, userWithStorage } from "../../test/fixtures/jobs.ts";
import { bencode, makeTorrent, toBase64 } from "../../test/fixtures/torrents.ts";

const hex = (text: string) =>
  [...new TextEncoder().encode(text)].map((b) => b.toString(16).padStart(2, "0")).join("");

const tracker = (passkey: string) => `https://private-tracker.example/${passkey}/announce`;

function magnetFor(infoHash: string, dn: string | undefined, passkey: string): string {
  const name = dn === undefined ? "" : `&dn=${encodeURIComponent(dn)}`;
  return `magnet:?xt=urn:btih:${infoHash}${name}&tr=${encodeURIComponent(tracker(passkey))}`;
}

/**
 * Answers with what differs between any two runs blanked: ids, times, the
 * caller's profile, and the info hash (each run has a torrent of its own).
 */
function comparable(value: unknown, infoHash: string): unknown {
  if (typeof value === "string") return value.replaceAll(infoHash, "<hash>");
  if (Array.isArray(value)) return value.map((v) => comparable(v, infoHash));
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    const varies = ["id", "storageProfileId", "createdAt", "updatedAt", "enqueuedAt", "at"].includes(key);
    out[key] = varies && v !== null ? "<varies>" : comparable(v, infoHash);
  }
  return out;
}

async function sha1Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-1", bytes.slice()));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Every row of the tables a job touches, as JSON text (bytea as hex). */
function dump(): Promise<string> {
  return withDb(async (db) => {
    const parts: string[] = [];
    for (const table of ["jobs", "torrents", "job_files", "job_transitions"]) {
      const rows = await db.execute<{ j: string }>(
        sql`select row_to_json(t)::text as j from ${sql.identifier(table)} t`,
      );
      for (const row of rows.rows) parts.push(row.j);
    }
    return parts.join("\n");
  });
}

describe("one torrent, several users", () => {
  it("shows each user only their own submission, and answers B the same whether or not A submitted first", async () => {
    const passkeyA = `passkey-a-${crypto.randomUUID()}`;
    const passkeyB = `passkey-b-${crypto.randomUUID()}`;
    const scam = "SCAM: pay 1 BTC to get the password";
    // Two torrents alike in all they show, told apart only by an info key nothing
    // reports (as private trackers re-hash torrents): one per run.
    const base = await makeTorrent({ name: "Genuine Album", announce: tracker(passkeyB) });
    const twin = async (tag: string) => {
      const info = { ...base.info, source: tag };
      return {
        bytes: bencode({ announce: tracker(passkeyB), info }),
        infoHash: await sha1Hex(bencode(info)),
      };
    };

    /** Everything user B asks: analysis of their .torrent and magnet, a job from each, then the views. */
    const asB = async (torrent: { bytes: Uint8Array; infoHash: string }) => {
      const b = await userWithStorage();
      const ask = async (method: string, path: string, body?: unknown) => {
        const response = await send(b.cookie, method, path, body);
        return { status: response.status, body: (await response.json()) as Record<string, unknown> };
      };
      const answers = {
        analyzeTorrent: await ask("POST", "/api/torrents/analyze", { torrent: toBase64(torrent.bytes) }),
        analyzeMagnet: await ask("POST", "/api/torrents/analyze", {
          magnet: magnetFor(torrent.infoHash, "B's copy", passkeyB),
        }),
        fromTorrent: await ask("POST", "/api/jobs", { torrent: toBase64(torrent.bytes) }),
        fromMagnet: await ask("POST", "/api/jobs", {
          magnet: magnetFor(torrent.infoHash, "B's copy", passkeyB),
        }),
        fromBareMagnet: await ask("POST", "/api/jobs", {
          magnet: magnetFor(torrent.infoHash, undefined, passkeyB),
        }),
      };
      const jobIds = [answers.fromTorrent, answers.fromMagnet, answers.fromBareMagnet].map(
        (a) => (a.body.job as JobView).id,
      );
      const views = {
        list: await ask("GET", "/api/jobs"),
        details: await Promise.all(jobIds.map((id) => ask("GET", `/api/jobs/${id}`))),
      };
      return { answers, views };
    };

    // B alone: nobody else has submitted this info hash.
    const first = await twin("run 1");
    const alone = await asB(first);
    expect(alone.answers.fromTorrent.status).toBe(201);
    expect(alone.answers.fromTorrent.body.job).toMatchObject({
      name: "Genuine Album",
      source: "torrent",
      fileCount: 3,
    });
    expect(alone.answers.fromMagnet.body.job).toMatchObject({
      name: "B's copy",
      source: "magnet",
      fileCount: null,
      files: [],
    });
    expect(alone.answers.fromBareMagnet.body.job).toMatchObject({ name: first.infoHash, files: [] });

    // A first: a magnet with a hostile name and A's passkey, and the .torrent; then B.
    const second = await twin("run 2");
    const a = await userWithStorage();
    const fromA = await send(a.cookie, "POST", "/api/jobs", {
      magnet: magnetFor(second.infoHash, scam, passkeyA),
    });
    expect(fromA.status).toBe(201);
    const aText = await fromA.text();
    expect(JSON.parse(aText).job).toMatchObject({ name: scam, source: "magnet" });
    // A's own view does not echo the magnet back either.
    expect(aText).not.toContain(passkeyA);
    expect(aText).not.toContain("magnet:");
    expect((await send(a.cookie, "POST", "/api/jobs", { torrent: toBase64(second.bytes) })).status).toBe(201);
    const afterA = await asB(second);

    expect(comparable(afterA, second.infoHash)).toEqual(comparable(alone, first.infoHash));
    const everything = JSON.stringify(afterA);
    expect(everything).not.toContain("SCAM");
    expect(everything).not.toContain(passkeyA);
    // B's own passkey comes back only in the analysis of B's own link and .torrent.
    expect(JSON.stringify(afterA.views)).not.toContain(passkeyB);
    expect(JSON.stringify(afterA.answers.fromMagnet)).not.toContain(passkeyB);
  });

  it("keeps no plaintext magnet or .torrent in the database, and only info-dictionary facts on the shared row", async () => {
    const passkeyA = `passkey-a-${crypto.randomUUID()}`;
    const passkeyB = `passkey-b-${crypto.randomUUID()}`;
    const torrent = await makeTorrent({ announce: tracker(passkeyB) });
    const a = await userWithStorage();
    const b = await userWithStorage();
    const magnet = magnetFor(torrent.infoHash, "SCAM: pay first", passkeyA);
    expect((await send(a.cookie, "POST", "/api/jobs", { magnet })).status).toBe(201);
    const fromB = await send(b.cookie, "POST", "/api/jobs", { torrent: toBase64(torrent.bytes) });
    expect(fromB.status).toBe(201);
    const jobB = ((await fromB.json()) as { job: JobView }).job;

    const all = await dump();
    expect(all).toContain(jobB.id); // the dump does see the new rows
    for (const secret of [passkeyA, passkeyB, "private-tracker.example", "magnet:?"]) {
      expect(all).not.toContain(secret);
      expect(all).not.toContain(hex(secret));
    }
    const [shared] = await withDb((db) =>
      db.select().from(torrents).where(eq(torrents.infoHash, torrent.infoHash)),
    );
    expect(shared).toEqual({
      id: expect.any(String),
      infoHash: torrent.infoHash,
      infoHashV2: null,
      name: torrent.info.name,
      totalSize: 68_000,
      pieceLength: 16_384,
      pieceCount: 5,
      fileCount: 3,
      createdAt: expect.any(Date),
    });
  });
});
