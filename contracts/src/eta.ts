// Rates and time left for one job, from the byte counters a worker samples a
// few times a second. Pure and clock-free: every sample carries its own time,
// so tests feed it a recorded or synthetic series.
//
// A job's bytes move in bursts. Pieces arrive unevenly from peers; a part is
// sent only once its data is downloaded and counts as stored only when the
// provider confirms it, so between parts the uploader sits idle and "stored"
// jumps by a whole part at a time. Dividing what is left by the last second's
// upload rate therefore swings from minutes to days. Instead:
//
// - the download rate is an exponentially weighted average over time
//   (time constant `timeConstantMs`, 15 s), so a second without a piece moves it a
//   little, not to zero;
// - the upload's rate is measured over windows of at least a MiB sent (a
//   part is reported when it is through), so a part's bytes count over the
//   time they took, not as a spike in the second they were confirmed, and a
//   tiny file stored first does not make the upload look slow;
// - the job ends when its bottleneck is through: the time left is the larger
//   of (bytes left to download ÷ download rate) and (bytes left to store ÷
//   upload capacity). While nothing is known about a side it does not count;
//   with no basis at all the estimate is null (shown as "—");
// - once data has flowed for a time constant, what is shown counts down with
//   the clock and moves away from that by at most a fifth per second, so a
//   clump of pieces or a part confirmed late nudges it instead of making it
//   jump (before that the first estimates settle freely).

export interface EtaSample {
  /** Milliseconds, any clock that only moves forward. */
  at: number;
  total: number;
  downloaded: number;
  /** Confirmed stored by the provider. */
  uploaded: number;
  /** Bytes sent on the wire so far (retries included), for the upload's rate. */
  sent: number;
}

export interface EtaEstimate {
  /** Bytes per second, smoothed. */
  down: number;
  /** Bytes per second on the wire, smoothed over busy and idle time alike. */
  up: number;
  /** Seconds until everything is stored; null without a basis. */
  etaSeconds: number | null;
}

export interface EtaOptions {
  /** Time constant of the averages, ms (default 15 s). */
  timeConstantMs?: number;
}

/** The least an upload-rate sample is made of (a part is at least 5 MiB on S3). */
const MIN_WINDOW_BYTES = 1024 * 1024;

/** How far the shown time left may move from its countdown per second. */
const MAX_CHANGE = 0.2;

export class EtaEstimator {
  readonly #tau: number;
  #last: EtaSample | undefined;
  #shown: { at: number; eta: number } | undefined;
  #windowStart: number | undefined;
  #windowBytes = 0;
  #dataSince = 0;
  readonly #down: Average;
  readonly #up: Average;
  readonly #capacity: Average;

  constructor(options: EtaOptions = {}) {
    this.#tau = options.timeConstantMs ?? 15_000;
    this.#down = new Average(this.#tau);
    this.#up = new Average(this.#tau);
    this.#capacity = new Average(this.#tau);
  }

  /** Feeds one sample; returns the rates and time left as of it. */
  sample(sample: EtaSample): EtaEstimate {
    const last = this.#last;
    if (!last || sample.at < last.at) {
      this.#last = sample;
    } else if (sample.at > last.at) {
      const dt = sample.at - last.at;
      const perSecond = (bytes: number) => (Math.max(0, bytes) * 1000) / dt;
      const sent = sample.sent - last.sent;
      this.#down.add(perSecond(sample.downloaded - last.downloaded), dt);
      this.#up.add(perSecond(sent), dt);
      // The upload's rate over windows of at least MIN_WINDOW_BYTES sent, from the
      // moment data began to arrive: a part is reported once it is through, and
      // a small file stored first says nothing about how fast parts go out.
      if (this.#windowStart === undefined && sample.downloaded > 0) {
        this.#windowStart = last.at;
        this.#dataSince = last.at;
      }
      this.#windowBytes += Math.max(0, sent);
      if (this.#windowStart !== undefined && this.#windowBytes >= MIN_WINDOW_BYTES) {
        const span = sample.at - this.#windowStart;
        this.#capacity.add((this.#windowBytes * 1000) / span, span);
        this.#windowStart = sample.at;
        this.#windowBytes = 0;
      }
      this.#last = sample;
    }
    const estimate = this.estimate(sample);
    // Until the rates have a time constant of history they are still settling: shown as they are.
    const settled = this.#windowStart !== undefined && sample.at - this.#dataSince >= this.#tau;
    estimate.etaSeconds = settled
      ? this.#steady(sample.at, estimate.etaSeconds)
      : this.#fresh(sample.at, estimate.etaSeconds);
    return estimate;
  }

  /** The estimate for these counters with the rates known so far, not steadied. */
  estimate(sample: Pick<EtaSample, "total" | "downloaded" | "uploaded">): EtaEstimate {
    return { down: this.#down.value ?? 0, up: this.#up.value ?? 0, etaSeconds: this.#eta(sample) };
  }

  #fresh(at: number, eta: number | null): number | null {
    this.#shown = eta === null ? undefined : { at, eta };
    return eta === null ? null : Math.round(eta);
  }

  #steady(at: number, eta: number | null): number | null {
    const shown = this.#shown;
    if (eta === null || eta === 0 || !shown || at < shown.at) return this.#fresh(at, eta);
    const seconds = (at - shown.at) / 1000;
    const expected = Math.max(0, shown.eta - seconds);
    const low = expected * (1 - MAX_CHANGE) ** seconds;
    const high = expected * (1 + MAX_CHANGE) ** seconds + seconds;
    const steadied = Math.min(high, Math.max(low, eta));
    this.#shown = { at, eta: steadied };
    return Math.round(steadied);
  }

  #eta(sample: Pick<EtaSample, "total" | "downloaded" | "uploaded">): number | null {
    if (!(sample.total > 0)) return null;
    const leftDown = Math.max(0, sample.total - sample.downloaded);
    const leftUp = Math.max(0, sample.total - sample.uploaded);
    if (leftUp === 0) return 0;
    let eta: number | undefined;
    if (leftDown > 0) {
      // Still downloading: without a download rate there is no basis yet.
      const down = this.#down.value;
      if (down === undefined || down < 1) return null;
      eta = leftDown / down;
    }
    const capacity = this.#capacity.value;
    if (capacity !== undefined && capacity >= 1) eta = Math.max(eta ?? 0, leftUp / capacity);
    return eta === undefined ? null : eta;
  }
}

/**
 * An exponentially weighted average over time, corrected for its start: until
 * `tau` has passed it is close to the plain average so far, not pulled
 * towards zero by the time before the first sample.
 */
class Average {
  readonly #tau: number;
  #raw = 0;
  #elapsed = 0;

  constructor(tau: number) {
    this.#tau = tau;
  }

  add(value: number, dt: number): void {
    const weight = 1 - Math.exp(-dt / this.#tau);
    this.#raw += weight * (value - this.#raw);
    this.#elapsed += dt;
  }

  get value(): number | undefined {
    if (this.#elapsed === 0) return undefined;
    return this.#raw / (1 - Math.exp(-this.#elapsed / this.#tau));
  }
}
