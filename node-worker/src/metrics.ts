// Prometheus metrics of one worker process.
import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";

/** The queue's backlog, read from Redis when Prometheus scrapes (not on a timer: Upstash bills per command). */
export type QueueLagSource = () => Promise<{
  pending: number;
  oldestAgeSeconds: number;
  undelivered: number;
}>;

/** Fleet-wide numbers from Postgres (drizzle/ops.ts `fleetCounts`), read when Prometheus scrapes. */
export type FleetSource = () => Promise<{
  queued: number;
  oldestQueuedAgeSeconds: number;
  stuck: Record<string, number>;
  exhausted: number;
}>;

export interface MetricsOptions {
  /** Register the fleet gauges (WORKER_FLEET_METRICS): each scrape then reads Postgres. */
  fleet?: boolean | undefined;
}

/** Reads once per scrape however many gauges ask (the first to collect starts it). */
function oncePerScrape<T>(get: () => (() => Promise<T>) | undefined): () => Promise<T | undefined> {
  let reading: Promise<T> | undefined;
  return () => {
    const source = get();
    if (!source) return Promise.resolve(undefined);
    reading ??= source().finally(() => setImmediate(() => (reading = undefined)));
    return reading.catch(() => undefined);
  };
}

export interface Metrics {
  registry: Registry;
  bytesDownloaded: Counter;
  bytesUploaded: Counter;
  activeJobs: Gauge;
  jobOutcomes: Counter<"outcome">;
  queuePending: Gauge;
  queueOldestAgeSeconds: Gauge;
  scratchReservedBytes: Gauge;
  egressRefused: Counter;
  webhookDeliveries: Counter<"outcome">;
  /** Magnet metadata fetched from peers (once per job: it is kept after). */
  metadataFetches: Counter;
  /** Where the queue gauges read from at scrape time. */
  setQueueSource(source: QueueLagSource): void;
  /** Where the workers-seen gauge reads from at scrape time (the heartbeat records, one HGETALL). */
  setWorkersSource(source: () => Promise<number>): void;
  /** Where the fleet gauges read from (only registered with `fleet`). */
  setFleetSource(source: FleetSource): void;
}

export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  let source: QueueLagSource | undefined;
  let workersSource: (() => Promise<number>) | undefined;
  let fleetSource: FleetSource | undefined;
  // Both queue gauges come from one read per scrape; so do the fleet gauges.
  const lag = oncePerScrape(() => source);
  const fleet = oncePerScrape(() => fleetSource);
  new Gauge({
    name: "torreclou_workers_seen",
    help: "Workers whose heartbeat record is at most three heartbeats old (all workers)",
    registers: [registry],
    async collect() {
      const seen = await workersSource?.().catch(() => undefined);
      if (seen !== undefined) this.set(seen);
    },
  });
  if (options.fleet) {
    new Gauge({
      name: "torreclou_jobs_queued",
      help: "Jobs in state queued, waiting their turn or in the stream (Postgres)",
      registers: [registry],
      async collect() {
        const now = await fleet();
        if (now) this.set(now.queued);
      },
    });
    new Gauge({
      name: "torreclou_jobs_oldest_queued_age_seconds",
      help: "How long the oldest queued job has waited since it was (last) queued (Postgres)",
      registers: [registry],
      async collect() {
        const now = await fleet();
        if (now) this.set(now.oldestQueuedAgeSeconds);
      },
    });
    new Gauge({
      name: "torreclou_jobs_stuck",
      help: "Jobs stuck in one state past OPERATOR_STUCK_AFTER_SECONDS (running states) or OPERATOR_QUEUED_TOO_LONG_SECONDS (queued), by state",
      labelNames: ["state"],
      registers: [registry],
      async collect() {
        const now = await fleet();
        if (now) for (const [state, n] of Object.entries(now.stuck)) this.set({ state }, n);
      },
    });
    new Gauge({
      name: "torreclou_jobs_exhausted",
      help: "Failed jobs that used up their attempts and are not retried yet (Postgres)",
      registers: [registry],
      async collect() {
        const now = await fleet();
        if (now) this.set(now.exhausted);
      },
    });
  }
  return {
    setQueueSource: (next) => {
      source = next;
    },
    setWorkersSource: (next) => {
      workersSource = next;
    },
    setFleetSource: (next) => {
      fleetSource = next;
    },
    registry,
    bytesDownloaded: new Counter({
      name: "torreclou_worker_downloaded_bytes_total",
      help: "Bytes received from BitTorrent peers",
      registers: [registry],
    }),
    bytesUploaded: new Counter({
      name: "torreclou_worker_uploaded_bytes_total",
      help: "Bytes sent to storage providers",
      registers: [registry],
    }),
    activeJobs: new Gauge({
      name: "torreclou_worker_active_jobs",
      help: "Jobs running in this process",
      registers: [registry],
    }),
    jobOutcomes: new Counter({
      name: "torreclou_worker_job_outcomes_total",
      help: "Attempts that ended, by outcome (completed, awaiting_selection, failed, cancelled, handed_back, stale; exhausted: failed for having used up its attempts)",
      labelNames: ["outcome"],
      registers: [registry],
    }),
    queuePending: new Gauge({
      name: "torreclou_queue_pending_entries",
      help: "Jobs delivered to the consumer group and not yet acknowledged, plus those not yet delivered (all workers)",
      registers: [registry],
      async collect() {
        const now = await lag();
        if (now) this.set(now.pending + now.undelivered);
      },
    }),
    queueOldestAgeSeconds: new Gauge({
      name: "torreclou_queue_oldest_pending_age_seconds",
      help: "Age of the oldest unacknowledged job message",
      registers: [registry],
      async collect() {
        const now = await lag();
        if (now) this.set(now.oldestAgeSeconds);
      },
    }),
    scratchReservedBytes: new Gauge({
      name: "torreclou_worker_scratch_reserved_bytes",
      help: "Scratch disk reserved by running jobs",
      registers: [registry],
    }),
    metadataFetches: new Counter({
      name: "torreclou_worker_metadata_fetches_total",
      help: "Magnet metadata (info dictionaries) fetched from peers",
      registers: [registry],
    }),
    egressRefused: new Counter({
      name: "torreclou_worker_egress_refused_total",
      help: "Connections and datagrams of jobs refused by the egress policy",
      registers: [registry],
    }),
    webhookDeliveries: new Counter({
      name: "torreclou_worker_webhook_tries_total",
      help: "Webhook delivery tries by outcome (delivered, retry, failed: given up)",
      labelNames: ["outcome"],
      registers: [registry],
    }),
  };
}
