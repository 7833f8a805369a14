// What a worker knows of each kind of destination: how to turn a storage
// profile into a Sink. One module per provider (s3.ts, gdrive.ts,
// onedrive.ts, dropbox.ts); index.ts is the registry. The job runner asks for
// a sink and never branches on the provider.
import type { DestinationKind, DestinationOf, Keyring, NameRules } from "@torreclou/contracts";
import type { Db } from "@torreclou/db/jobs";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import type { Sink } from "../sinks/index.ts";
import type { Outage } from "../sinks/outage.ts";

export interface SinkContext {
  config: Config;
  keyRing: Keyring;
  db: Db;
  log: Logger;
  /** The job's storage outage clock. */
  outage: Outage;
  /** The job's folder: its target folder (`/`-separated) or its id. */
  folder: string;
}

export interface OpenedSink {
  sink: Sink;
  /**
   * The provider refused the grant (ReconnectRequiredError): marks the
   * profile "needs reconnect", unless the user reconnected meanwhile.
   */
  needsReconnect?(): Promise<void>;
}

export interface WorkerDestination<K extends DestinationKind = DestinationKind> {
  kind: K;
  /** For people: "OneDrive". */
  label: string;
  /** How the destination names files (contracts/src/names.ts). */
  names: NameRules;
  /** A sink for the destination, its credentials decrypted; throws PermanentJobError when it cannot be used. */
  open(destination: DestinationOf<K>, ctx: SinkContext): Promise<OpenedSink>;
}
