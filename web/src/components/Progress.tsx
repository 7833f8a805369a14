// Progress display shared by the jobs list and the job page: a two-layer bar
// (downloaded behind, uploaded in front) and a row of numbers with reserved
// widths so nothing moves as they change.
import { Show } from "solid-js";
import { formatBytes, formatDuration, formatPercent, formatRate, fraction } from "../format.ts";

export interface ProgressNumbers {
  total: number;
  downloaded: number;
  uploaded: number;
}

export function ProgressBar(props: ProgressNumbers & { label: string; class?: string }) {
  const down = () => fraction(props.downloaded, props.total);
  const up = () => fraction(props.uploaded, props.total);
  return (
    <div
      class={`bar ${props.class ?? ""}`}
      role="progressbar"
      aria-label={props.label}
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={Math.floor(up() * 100)}
      aria-valuetext={`${formatPercent(props.uploaded, props.total)} stored, ${formatPercent(props.downloaded, props.total)} downloaded`}
    >
      <span class="down" style={{ width: `${down() * 100}%` }} />
      <span class="up" style={{ width: `${up() * 100}%` }} />
    </div>
  );
}

export interface LiveStats extends ProgressNumbers {
  down: number;
  up: number;
  etaSeconds: number | null;
  peers: number;
  /** Show rates, ETA and peers (only while the job runs). */
  live: boolean;
  /** Show the percentage (off where it is already shown large). */
  showPercent?: boolean;
}

export function StatsRow(props: LiveStats) {
  return (
    <dl class="stats">
      <Show when={props.showPercent !== false}>
        <div>
          <dt class="visually-hidden">Stored</dt>
          <dd class="w-pct" data-testid="percent">
            {formatPercent(props.uploaded, props.total)}
          </dd>
        </div>
      </Show>
      <div>
        <dt class="visually-hidden">Size</dt>
        <dd class="w-bytes">
          {props.total > 0
            ? `${formatBytes(props.uploaded)} of ${formatBytes(props.total)}`
            : "size not known yet"}
        </dd>
      </div>
      <Show when={props.live}>
        <div>
          <dt>
            <span aria-hidden="true">↓</span>
            <span class="visually-hidden">Download speed</span>
          </dt>
          <dd class="w-rate">{formatRate(props.down)}</dd>
        </div>
        <div>
          <dt>
            <span aria-hidden="true">↑</span>
            <span class="visually-hidden">Upload speed</span>
          </dt>
          <dd class="w-rate">{formatRate(props.up)}</dd>
        </div>
        <div>
          <dt>ETA</dt>
          <dd class="w-eta">{formatDuration(props.etaSeconds)}</dd>
        </div>
        <div>
          <dt>Peers</dt>
          <dd class="w-peers">{props.peers}</dd>
        </div>
      </Show>
    </dl>
  );
}

export function Legend() {
  return (
    <div class="legend" aria-hidden="true">
      <span>
        <span class="swatch" style={{ background: "var(--bar-down)", opacity: 0.45 }} />
        Downloaded
      </span>
      <span>
        <span class="swatch" style={{ background: "var(--bar-up)" }} />
        Stored in your storage
      </span>
    </div>
  );
}
