// Progress display shared by the jobs list and the job page: a two-layer bar
// (downloaded behind, stored in front), one headline percentage for the phase
// the job is in, and a row of numbers with reserved widths so nothing moves as
// they change. Downloaded and stored are always two labelled quantities.
import type { JobState } from "@torreclou/contracts";
import { For, Show } from "solid-js";
import { formatBytes, formatDuration, formatPercent, formatRate, fraction } from "../format.ts";

export interface ProgressNumbers {
  total: number;
  downloaded: number;
  uploaded: number;
}

/**
 * The headline: how far the phase the job is in has come. Downloading counts
 * downloaded bytes (uploads overlap, and are shown beside it); uploading
 * counts stored bytes; a finished job says 100 %; an ended one, what was stored.
 */
export function phaseProgress(
  phase: JobState,
  bytes: ProgressNumbers,
): { percent: string; of: "downloaded" | "stored" } {
  if (phase === "completed") return { percent: "100%", of: "stored" };
  if (phase === "queued" || phase === "resolving" || phase === "downloading") {
    return { percent: formatPercent(bytes.downloaded, bytes.total), of: "downloaded" };
  }
  return { percent: formatPercent(bytes.uploaded, bytes.total), of: "stored" };
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
      aria-valuenow={Math.floor(down() * 100)}
      aria-valuetext={`${formatPercent(props.downloaded, props.total)} downloaded, ${formatPercent(props.uploaded, props.total)} stored`}
    >
      <span class="down" style={{ width: `${down() * 100}%` }} />
      <span class="up" style={{ width: `${up() * 100}%` }} />
    </div>
  );
}

export interface LiveStats extends ProgressNumbers {
  phase: JobState;
  down: number;
  up: number;
  etaSeconds: number | null;
  peers: number;
  /** Show rates, ETA and peers (only while the job runs). */
  live: boolean;
  /** Show the phase percentage (off where it is already shown large). */
  showPercent?: boolean;
}

export function StatsRow(props: LiveStats) {
  const of = (bytes: number) =>
    props.total > 0 ? `${formatBytes(bytes)} of ${formatBytes(props.total)}` : formatBytes(bytes);
  return (
    <dl class="stats">
      <Show when={props.showPercent !== false}>
        <div>
          <dt class="visually-hidden">{phaseProgress(props.phase, props).of}</dt>
          <dd class="w-pct" data-testid="percent">
            {phaseProgress(props.phase, props).percent}
          </dd>
        </div>
      </Show>
      <Show when={props.total > 0} fallback={<div class="muted">size not known yet</div>}>
        <div>
          <dt>Downloaded</dt>
          <dd class="w-bytes" data-testid="downloaded">
            {of(props.downloaded)}
          </dd>
        </div>
        <div>
          <dt>Stored</dt>
          <dd class="w-bytes" data-testid="stored">
            {of(props.uploaded)}
          </dd>
        </div>
      </Show>
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
          <dd class="w-eta" data-testid="eta">
            {formatDuration(props.etaSeconds)}
          </dd>
        </div>
        <div>
          <dt>Peers</dt>
          <dd class="w-peers">{props.peers}</dd>
        </div>
      </Show>
    </dl>
  );
}

/** One file's numbers: "45% · 1.35 MiB of 3.00 MiB", the percentage of what is stored once it is. */
export function FileNumbers(props: ProgressNumbers & { stored: boolean }) {
  const done = () => (props.stored ? props.uploaded : props.downloaded);
  return (
    <span class="file-numbers num" data-testid="file-numbers">
      {formatPercent(done(), props.total)} · {formatBytes(done())} of {formatBytes(props.total)}
      <Show when={!props.stored && props.uploaded > 0}>
        <span class="muted"> · {formatBytes(props.uploaded)} stored</span>
      </Show>
    </span>
  );
}

/**
 * A path that wraps only between its names: each name with its "/" is one
 * unit that moves to the next line whole, and breaks inside only when it is
 * wider than the line by itself (so "episode-01.mkv" never becomes "episode-01.mk v").
 */
export function PathText(props: { path: string }) {
  const parts = () => props.path.split("/");
  return (
    <span class="path-text">
      <For each={parts()}>
        {(part, i) => (
          <span class="seg">
            {part}
            {i() < parts().length - 1 ? "/" : ""}
          </span>
        )}
      </For>
    </span>
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
