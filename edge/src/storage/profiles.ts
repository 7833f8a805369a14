// How a storage profile is shown to its owner: its non-secret settings, from
// its destination's module (destinations/), under a key named by its kind.
// Secrets never leave those modules in clear.
import { destinationOf, type Keyring } from "@torreclou/contracts";
import type { StorageProfile } from "@torreclou/db";
import { settingsView } from "../destinations/index.ts";
import { maskAccessKeyId } from "../destinations/s3.ts";
import type { DestinationViews } from "../destinations/types.ts";

export { maskAccessKeyId } from "../destinations/s3.ts";

export interface StorageProfileView {
  id: string;
  kind: StorageProfile["kind"];
  name: string;
  isDefault: boolean;
  status: StorageProfile["status"];
  createdAt: string;
  updatedAt: string;
  s3?: DestinationViews["s3"];
  gdrive?: DestinationViews["gdrive"];
  onedrive?: DestinationViews["onedrive"];
  dropbox?: DestinationViews["dropbox"];
}

type Row = Pick<
  StorageProfile,
  | "id"
  | "kind"
  | "name"
  | "isDefault"
  | "status"
  | "config"
  | "secretCiphertext"
  | "secretIv"
  | "secretKeyId"
  | "createdAt"
  | "updatedAt"
>;

/** The owner's view of a profile. `accessKeyId` may be passed when it is at hand in clear (just created). */
export async function viewOf(keyring: Keyring, row: Row, accessKeyId?: string): Promise<StorageProfileView> {
  const settings = await settingsView(destinationOf(row), keyring);
  if ("accessKeyId" in settings && accessKeyId !== undefined)
    settings.accessKeyId = maskAccessKeyId(accessKeyId);
  return {
    id: row.id,
    kind: row.kind,
    name: row.name,
    isDefault: row.isDefault,
    status: row.status,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
    [row.kind]: settings,
  };
}
