// The worker's registry of destinations: one module per provider. Adding a
// provider is its module plus one line here (and its kind in
// contracts/src/destinations.ts).
import {
  DestinationConfigError,
  type DestinationKind,
  type DestinationOf,
  type DestinationRow,
  describeNameClash,
  destinationOf,
  findNameClash,
} from "@torreclou/contracts";
import { PermanentJobError } from "../sinks/index.ts";
import { dropbox } from "./dropbox.ts";
import { gdrive } from "./gdrive.ts";
import { onedrive } from "./onedrive.ts";
import { s3 } from "./s3.ts";
import type { OpenedSink, SinkContext, WorkerDestination } from "./types.ts";

export const destinations: { [K in DestinationKind]: WorkerDestination<K> } = {
  s3,
  gdrive,
  onedrive,
  dropbox,
};

/** The sink for a storage profile, from its destination's module. */
export async function openSink(row: DestinationRow, ctx: SinkContext): Promise<OpenedSink> {
  let destination: ReturnType<typeof destinationOf>;
  try {
    destination = destinationOf(row);
  } catch (error) {
    if (error instanceof DestinationConfigError)
      throw new PermanentJobError(`The storage profile's settings could not be read: ${error.message}.`);
    throw error;
  }
  const module = destinations[destination.kind] as WorkerDestination<typeof destination.kind>;
  return module.open(destination as DestinationOf<typeof destination.kind>, ctx);
}

/**
 * Refuses (PermanentJobError) a job two of whose files the destination would
 * store under one name, naming both: a .torrent's files are checked by the
 * edge when the job is sent, a magnet's only once its metadata is known.
 */
export function checkNames(kind: DestinationKind, paths: readonly string[]): void {
  const rules = destinations[kind].names;
  const clash = findNameClash(paths, rules);
  if (clash) throw new PermanentJobError(describeNameClash(clash, rules));
}

export type { OpenedSink, SinkContext, WorkerDestination } from "./types.ts";
