// Prometheus metrics of one worker process.
import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";

/** The queue's backlog, read from Redis when Prometheus scrapes (not on a timer: Upstash bills per command). */
export type QueueLagSource = () => Promise<{
  pending: number;
  oldestAgeSeconds: number;
  undelivered: number;
}>;

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
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  let source: QueueLagSource | undefined;
  // Both queue gauges come from one read per scrape.
  let reading: ReturnType<QueueLagSource> | undefined;
  const lag = () => {
    if (!source) return undefined;
    reading ??= source().finally(() => setImmediate(() => (reading = undefined)));
    return reading.catch(() => undefined);
  };
  return {
    setQueueSource: (next) => {
      source = next;
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
      help: "Attempts that ended, by outcome (completed, awaiting_selection, failed, cancelled, handed_back, stale)",
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
