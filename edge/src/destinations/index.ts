// The edge's registry of destinations: one module per provider. Adding a
// provider is its module plus one line here (and its kind in
// contracts/src/destinations.ts).
import type { Destination, DestinationKind, DestinationOf, Keyring } from "@torreclou/contracts";
import type { Config } from "../config.ts";
import { dropbox } from "./dropbox.ts";
import { gdrive } from "./gdrive.ts";
import { onedrive } from "./onedrive.ts";
import { s3 } from "./s3.ts";
import type { DestinationSettingsView, EdgeDestination } from "./types.ts";

export const destinations: { [K in DestinationKind]: EdgeDestination<K> } = {
  s3,
  gdrive,
  onedrive,
  dropbox,
};

export function destinationModule<K extends DestinationKind>(kind: K): EdgeDestination<K> {
  return destinations[kind];
}

/** The owner's view of a destination's settings, from its own module. */
export function settingsView(destination: Destination, keyring: Keyring): Promise<DestinationSettingsView> {
  const module = destinations[destination.kind] as EdgeDestination<typeof destination.kind>;
  return module.view(destination as DestinationOf<typeof destination.kind>, keyring);
}

/** Download links for stored files of a destination whose files carry none of their own. */
export async function downloadLinks(
  destination: Destination,
  config: Config,
  cloudIds: string[],
): Promise<Map<string, string>> {
  const module = destinations[destination.kind] as EdgeDestination<typeof destination.kind>;
  if (!module.links || cloudIds.length === 0) return new Map();
  return module.links(destination as DestinationOf<typeof destination.kind>, config, cloudIds);
}

export type { EdgeDestination, OAuthProvider } from "./types.ts";
export { dropbox, gdrive, onedrive, s3 };
