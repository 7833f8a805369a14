// The local stack's first-run help: with DEV_S3_PROFILE set, the dev sign-in
// gives an account without storage the local bucket, checked like any other.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { addStorageProfile } from "../../test/fixtures/db.ts";
import { webOrigin } from "../../test/helpers.ts";
import { app } from "../app.ts";

const profile = {
  name: "Local S3 (dev stack)",
  endpoint: env.S3_ENDPOINT,
  region: env.S3_REGION || "us-east-1",
  bucket: env.S3_BUCKET,
  forcePathStyle: true,
  accessKeyId: env.S3_ACCESS_KEY_ID,
  secretAccessKey: env.S3_SECRET_ACCESS_KEY,
};

interface SignedIn {
  cookie: string;
  body: { user: { id: string }; storageCreated?: { id: string; name: string } };
}

async function devSignIn(bindings: object, email: string): Promise<SignedIn> {
  const response = await app.request(
    "/api/auth/dev",
    {
      method: "POST",
      headers: { "content-type": "application/json", origin: webOrigin },
      body: JSON.stringify({ email }),
    },
    bindings,
  );
  expect(response.status).toBe(200);
  const cookie = (response.headers.get("set-cookie") ?? "").split(";")[0]!;
  return { cookie, body: (await response.json()) as SignedIn["body"] };
}

async function profilesOf(bindings: object, cookie: string) {
  const response = await app.request("/api/storage", { headers: { cookie } }, bindings);
  expect(response.status).toBe(200);
  return ((await response.json()) as { profiles: { id: string; name: string; isDefault: boolean }[] })
    .profiles;
}

describe("dev sign-in with DEV_S3_PROFILE", () => {
  const bindings = { ...env, DEV_S3_PROFILE: JSON.stringify(profile) };

  it("gives a new account the local bucket as its default storage, once", async () => {
    const email = `new-${crypto.randomUUID()}@example.com`;
    const first = await devSignIn(bindings, email);
    expect(first.body.storageCreated?.name).toBe("Local S3 (dev stack)");
    const profiles = await profilesOf(bindings, first.cookie);
    expect(profiles).toMatchObject([
      { id: first.body.storageCreated!.id, name: profile.name, isDefault: true },
    ]);
    // Signing in again adds nothing.
    const again = await devSignIn(bindings, email);
    expect(again.body.storageCreated).toBeUndefined();
    expect(await profilesOf(bindings, again.cookie)).toHaveLength(1);
  });

  it("leaves an account that has storage alone", async () => {
    const email = `has-${crypto.randomUUID()}@example.com`;
    const plain = await devSignIn(env, email);
    await addStorageProfile(plain.body.user.id, { name: "Mine" });
    const later = await devSignIn(bindings, email);
    expect(later.body.storageCreated).toBeUndefined();
    expect((await profilesOf(bindings, later.cookie)).map((p) => p.name)).toEqual(["Mine"]);
  });

  it("does nothing without it", async () => {
    const signedIn = await devSignIn(env, `none-${crypto.randomUUID()}@example.com`);
    expect(signedIn.body.storageCreated).toBeUndefined();
    expect(await profilesOf(env, signedIn.cookie)).toEqual([]);
  });
});
