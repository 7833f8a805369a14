// An OAuth destination's grant on the worker: decrypted from the profile,
// its refreshed tokens written back (encrypted) so other attempts and workers
// reuse them, and the profile marked "needs reconnect" when the provider
// refuses it — but only while the profile still holds that grant, so a worker
// with an old grant never undoes the user's reconnecting.
import {
  CredentialsError,
  type DestinationOf,
  decryptOAuthSecret,
  type OAuthDestinationKind,
  type OAuthSecret,
} from "@torreclou/contracts";
import { markNeedsReconnect, saveGrantTokens } from "../jobs/store.ts";
import { PermanentJobError, ReconnectRequiredError } from "../sinks/index.ts";
import type { Tokens } from "./oauth.ts";
import type { SinkContext } from "./types.ts";

/** A secret the worker's keys cannot read fails the job with the reason. */
export function readable(error: unknown): never {
  if (error instanceof CredentialsError) {
    throw new PermanentJobError(`The storage profile's credentials could not be read: ${error.message}.`);
  }
  throw error;
}

export interface Grant {
  secret: OAuthSecret;
  /** The access token stored by an earlier refresh, if any. */
  stored: { accessToken: string; expiresAt: Date } | undefined;
  /** Writes a token answer back; `current` is the refresh token the worker held when it refreshed. */
  save(current: string, tokens: Tokens): Promise<void>;
  /** Marks the profile "needs reconnect" if it still holds the refresh token `current()` names. */
  needsReconnect(): Promise<void>;
}

/**
 * The grant of an OAuth destination, or ReconnectRequiredError if the
 * profile already waits for the user to reconnect. `current` tells which
 * refresh token the worker holds at the moment (providers may rotate it).
 */
export async function openGrant(
  destination: Pick<DestinationOf<OAuthDestinationKind>, "id" | "status" | "sealed">,
  label: string,
  { db, keyRing, log }: SinkContext,
  current: () => string,
): Promise<Grant> {
  if (destination.status === "needs_reconnect") throw new ReconnectRequiredError(label);
  const secret = await decryptOAuthSecret(keyRing, destination.sealed, destination.id).catch(readable);
  const expiresAt = secret.accessTokenExpiresAt ? new Date(secret.accessTokenExpiresAt) : undefined;
  return {
    secret,
    stored: secret.accessToken && expiresAt ? { accessToken: secret.accessToken, expiresAt } : undefined,
    async save(held, tokens) {
      await saveGrantTokens(db, keyRing, destination.id, held, tokens);
    },
    async needsReconnect() {
      await markNeedsReconnect(db, keyRing, destination.id, current()).catch((error: unknown) =>
        log.warn({ err: error }, `could not mark the ${label} profile for reconnecting`),
      );
    },
  };
}
