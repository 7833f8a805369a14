// New job: a .torrent (dropped or chosen) or a magnet link, read and checked
// here in the browser with the same parser and limits as the server, then
// the files to fetch, the destination, and off it goes.
import { useNavigate } from "@solidjs/router";
import {
  defaultFolder,
  MAX_TORRENT_BYTES,
  type MagnetInfo,
  parseMagnet,
  parseTorrentFile,
  TorrentError,
  type TorrentInfo,
  webSeedsOf,
} from "@torreclou/contracts";
import { createMemo, createResource, createSignal, For, Match, onCleanup, Show, Switch } from "solid-js";
import { ApiError, api, call, describeError, toBase64 } from "../api/client.ts";
import { FilePicker } from "../components/FilePicker.tsx";
import { S3ProfileForm } from "../components/S3ProfileForm.tsx";
import { SwarmHealth } from "../components/SwarmHealth.tsx";
import { browserTrackers, webrtcSupported } from "../engine/index.ts";
import { startMetadataSearch } from "../engine/searches.ts";
import { startTransfer } from "../engine/transfers.ts";
import { formatBytes, plural } from "../format.ts";
import { seedRequest } from "../seed.ts";
import { selectAll, selectedIndices, selectedSize } from "../tree.ts";

type Source =
  | { kind: "torrent"; fileName: string; bytes: Uint8Array; info: TorrentInfo }
  | { kind: "magnet"; uri: string; info: MagnetInfo };

/** Destinations a tab can upload to itself (presigned S3 parts, a Drive resumable session). */
const browserDestinations: readonly string[] = ["s3", "gdrive"];

/** Where a browser can get the torrent's bytes: WebSocket trackers (WebRTC peers) and HTTP web seeds. */
function browserSources(s: Source): { trackers: string[]; webSeeds: string[] } {
  if (s.kind === "torrent")
    return { trackers: browserTrackers(s.info.trackers), webSeeds: webSeedsOf(s.bytes) };
  const webSeeds = new URL(s.uri).searchParams.getAll("ws").filter((url) => /^https?:\/\//i.test(url));
  return { trackers: browserTrackers(s.info.trackers), webSeeds };
}

/** Paths without the torrent's own name in front (it is shown above the tree). */
function relativeFiles(info: TorrentInfo) {
  const prefix = `${info.name}/`;
  const all = info.files.every((file) => file.path.startsWith(prefix));
  return info.files.map((file) => ({ ...file, path: all ? file.path.slice(prefix.length) : file.path }));
}

export function NewJob() {
  const navigate = useNavigate();
  const [source, setSource] = createSignal<Source>();
  const [readError, setReadError] = createSignal<string>();
  const [reading, setReading] = createSignal(false);
  const [over, setOver] = createSignal(false);
  const [magnet, setMagnet] = createSignal("");
  const [selected, setSelected] = createSignal<Set<number>>(new Set());
  const [profileId, setProfileId] = createSignal<string>();
  const [targetFolder, setTargetFolder] = createSignal("");
  /** A magnet: pick its files once a worker has its metadata, instead of fetching everything. */
  const [chooseLater, setChooseLater] = createSignal(false);
  /** Who moves the bytes: the worker fleet, or this browser tab. */
  const [inBrowser, setInBrowser] = createSignal(false);
  // Seeding back once stored (fleet jobs only): up to a ratio or a time, the operator's limits apply.
  const [seedBack, setSeedBack] = createSignal(false);
  const [seedRatio, setSeedRatio] = createSignal("1");
  const [seedHours, setSeedHours] = createSignal("24");
  const [submitting, setSubmitting] = createSignal(false);
  const [submitError, setSubmitError] = createSignal<string>();
  const [profiles, { refetch: refetchProfiles }] = createResource(() => call(api.api.storage.$get()));
  const noStorage = () => profiles.latest?.profiles.length === 0;
  // Google Drive is connected in another tab (its consent screen is a full
  // page): when this one is looked at again, its storage list is read again.
  const onReturn = () => {
    if (document.visibilityState === "visible" && noStorage()) void refetchProfiles();
  };
  document.addEventListener("visibilitychange", onReturn);
  window.addEventListener("focus", onReturn);
  onCleanup(() => {
    document.removeEventListener("visibilitychange", onReturn);
    window.removeEventListener("focus", onReturn);
  });
  let fileInput: HTMLInputElement | undefined;
  let summaryRef: HTMLHeadingElement | undefined;
  let errorRef: HTMLDivElement | undefined;

  const torrent = () => {
    const s = source();
    return s?.kind === "torrent" ? s : undefined;
  };
  /** The files a magnet's so= selects, if it says. */
  const selectOnly = () => {
    const s = source();
    return s?.kind === "magnet" ? s.info.selectOnly : undefined;
  };
  const files = createMemo(() => {
    const t = torrent();
    return t ? relativeFiles(t.info) : [];
  });
  /** Where the files land with no folder given: a folder named after the torrent. */
  const landing = () => {
    const t = torrent();
    if (!t) return undefined;
    const folder = defaultFolder(t.info.files);
    return folder ? folder : t.info.name;
  };
  const chosenSize = () => selectedSize(files(), selected());
  const defaultProfile = () =>
    profiles.latest?.profiles.find((p) => p.isDefault) ?? profiles.latest?.profiles[0];
  const chosenProfile = () => profileId() ?? defaultProfile()?.id;
  const chosenKind = () => profiles.latest?.profiles.find((p) => p.id === chosenProfile())?.kind;
  const reach = createMemo(() => {
    const s = source();
    return s ? browserSources(s) : { trackers: [], webSeeds: [] };
  });
  /** Why this browser cannot transfer the torrent itself, if it cannot. */
  const browserRefusal = (): string | undefined => {
    const kind = chosenKind();
    if (kind !== undefined && !browserDestinations.includes(kind)) {
      return "Only an S3 bucket or Google Drive takes uploads straight from a browser; this destination is served by the fleet.";
    }
    const { trackers, webSeeds } = reach();
    const webrtc = trackers.length > 0 && webrtcSupported();
    if (!webrtc && webSeeds.length === 0) {
      return trackers.length > 0
        ? "This browser cannot use WebRTC, and the torrent has no web seed (HTTP url-list)."
        : "A browser reaches only WebRTC peers (through WebSocket trackers, wss://) and HTTP web seeds (url-list); this torrent names neither, so its peers are for the fleet.";
    }
    return undefined;
  };
  const browserChosen = () => inBrowser() && browserRefusal() === undefined;

  const accepted = (next: Source) => {
    setSource(next);
    setReadError(undefined);
    setSubmitError(undefined);
    setSelected(next.kind === "torrent" ? selectAll(next.info.files) : new Set<number>());
    setInBrowser(false);
    requestAnimationFrame(() => summaryRef?.focus());
  };

  const refused = (err: unknown) => {
    setSource(undefined);
    setReadError(err instanceof TorrentError ? err.message : `Could not read it: ${describeError(err)}`);
    requestAnimationFrame(() => errorRef?.focus());
  };

  const readFile = async (file: File) => {
    setReading(true);
    setReadError(undefined);
    try {
      if (file.size > MAX_TORRENT_BYTES) {
        throw new TorrentError(
          "too_large",
          `“${file.name}” is ${formatBytes(file.size)}; a .torrent file may be at most ${formatBytes(MAX_TORRENT_BYTES)}.`,
        );
      }
      const bytes = new Uint8Array(await file.arrayBuffer());
      const info = await parseTorrentFile(bytes);
      accepted({ kind: "torrent", fileName: file.name, bytes, info });
    } catch (err) {
      refused(err);
    } finally {
      setReading(false);
      if (fileInput) fileInput.value = "";
    }
  };

  const readMagnet = (event?: SubmitEvent) => {
    event?.preventDefault();
    const uri = magnet().trim();
    if (uri === "") {
      refused(new TorrentError("invalid_magnet", "Paste a magnet link first (it starts with “magnet:?”)."));
      return;
    }
    try {
      accepted({ kind: "magnet", uri, info: parseMagnet(uri) });
    } catch (err) {
      refused(err);
    }
  };

  const onDrop = (event: DragEvent) => {
    event.preventDefault();
    setOver(false);
    const file = event.dataTransfer?.files[0];
    if (file) {
      void readFile(file);
      return;
    }
    const text = event.dataTransfer?.getData("text/plain")?.trim();
    if (text?.startsWith("magnet:")) {
      setMagnet(text);
      readMagnet();
    }
  };

  const submit = async (event: SubmitEvent) => {
    event.preventDefault();
    const s = source();
    if (!s) return;
    setSubmitError(undefined);
    if (s.kind === "torrent" && selected().size === 0) {
      setSubmitError("Pick at least one file to download.");
      return;
    }
    setSubmitting(true);
    try {
      const seed = !browserChosen() && seedBack() ? seedRequest(seedRatio(), seedHours()) : undefined;
      if (typeof seed === "string") {
        setSubmitError(seed);
        setSubmitting(false);
        return;
      }
      const folder = targetFolder().trim();
      const common = {
        ...(chosenProfile() ? { storageProfileId: chosenProfile() } : {}),
        ...(folder ? { targetFolder: folder } : {}),
        ...(seed ? { seed } : {}),
      };
      const everything = s.kind === "torrent" && selected().size === s.info.files.length;
      const browser = browserChosen();

      // A magnet's file list comes from its swarm: a browser job waits for the choice, found by this tab.
      const chooseFiles = chooseLater() || browser;
      const created = await call(
        api.api.jobs.$post({
          json:
            s.kind === "torrent"
              ? {
                  torrent: toBase64(s.bytes),
                  ...(everything ? {} : { files: selectedIndices(selected()) }),
                  ...common,
                  ...(browser ? { runner: "browser" as const } : {}),
                }
              : {
                  magnet: s.uri,
                  ...(chooseFiles ? { chooseFiles: true } : {}),
                  ...common,
                  ...(browser ? { runner: "browser" as const } : {}),
                },
        }),
      );
      // A magnet whose swarm a browser can join: this tab looks for the metadata too.
      const reachable = s.kind === "magnet" ? browserTrackers(s.info.trackers) : [];
      if (s.kind === "magnet" && chooseFiles && reachable.length > 0 && webrtcSupported()) {
        startMetadataSearch(created.job.id, s.uri, reachable);
      }
      // A .torrent for this browser: the tab starts moving it now (a magnet once its files are chosen).
      if (browser && s.kind === "torrent") startTransfer(created.job.id);
      navigate(`/jobs/${created.job.id}`, { state: { started: true } });
    } catch (err) {
      setSubmitError(err instanceof ApiError ? err.message : describeError(err));
      setSubmitting(false);
    }
  };

  const reset = () => {
    setSource(undefined);
    setMagnet("");
    setChooseLater(false);
    setInBrowser(false);
    setReadError(undefined);
    setSubmitError(undefined);
  };

  return (
    <>
      <div class="page-head">
        <div>
          <h1>New job</h1>
          <p class="muted">
            Choose a .torrent file or paste a magnet link. Nothing is sent until you start the job.
          </p>
        </div>
      </div>

      <section class="card stack" aria-labelledby="source-heading">
        <h2 id="source-heading">Torrent</h2>
        <label
          class="dropzone"
          classList={{ over: over() }}
          onDragOver={(e) => {
            e.preventDefault();
            setOver(true);
          }}
          onDragLeave={() => setOver(false)}
          onDrop={onDrop}
        >
          <span class="big">{reading() ? "Reading…" : "Drop a .torrent file here"}</span>
          <span class="muted small">or press to choose one (up to {formatBytes(MAX_TORRENT_BYTES)})</span>
          <input
            ref={fileInput}
            class="visually-hidden"
            type="file"
            accept=".torrent,application/x-bittorrent"
            data-testid="torrent-input"
            aria-label="Choose a .torrent file"
            onChange={(e) => {
              const file = e.currentTarget.files?.[0];
              if (file) void readFile(file);
            }}
          />
        </label>
        <form class="row" onSubmit={readMagnet} style={{ "align-items": "flex-end" }}>
          <div class="field" style={{ flex: "1 1 18rem" }}>
            <label for="magnet">Or a magnet link</label>
            <input
              id="magnet"
              type="text"
              inputmode="url"
              spellcheck={false}
              autocomplete="off"
              placeholder="magnet:?xt=urn:btih:…"
              value={magnet()}
              onInput={(e) => setMagnet(e.currentTarget.value)}
              onPaste={(e) => {
                const text = e.clipboardData?.getData("text/plain")?.trim();
                if (text?.startsWith("magnet:")) {
                  e.preventDefault();
                  setMagnet(text);
                  readMagnet();
                }
              }}
            />
          </div>
          <button type="submit" class="button">
            Read link
          </button>
        </form>
        <Show when={readError()}>
          <div class="alert error" role="alert" tabindex="-1" ref={errorRef} data-testid="torrent-error">
            <p>{readError()}</p>
          </div>
        </Show>
      </section>

      <Show when={noStorage()}>
        <section
          class="card stack"
          aria-labelledby="setup-heading"
          style={{ "margin-top": "1.25rem" }}
          data-testid="storage-setup"
        >
          <h2 id="setup-heading">Where should the files go?</h2>
          <p class="muted">
            You have no storage yet. Add one here;{" "}
            {source() ? "the torrent you chose stays" : "nothing is lost"} while you do.
          </p>
          <div class="row">
            <button
              type="button"
              class="button"
              onClick={() => window.open("/api/drive/connect", "_blank", "noopener")}
            >
              Connect Google Drive
            </button>
            <span class="muted small">opens Google in a new tab; come back here when it is done</span>
          </div>
          <S3ProfileForm
            heading="Or an S3-compatible bucket"
            onSaved={(profile) => {
              setProfileId(profile.id);
              void refetchProfiles();
            }}
          />
        </section>
      </Show>

      <Show when={source()}>
        {(s) => (
          <form
            class="card stack"
            onSubmit={submit}
            aria-labelledby="summary-heading"
            style={{ "margin-top": "1.25rem" }}
          >
            <div class="summary">
              <h2 id="summary-heading" ref={summaryRef} tabindex="-1" data-testid="torrent-name">
                {s().info.name ?? "Unnamed magnet link"}
              </h2>
              <Switch>
                <Match when={torrent()}>
                  {(t) => (
                    <>
                      <span class="num">{formatBytes(t().info.totalSize)}</span>
                      <span>{plural(t().info.files.length, "file")}</span>
                      <span class="muted small">
                        {plural(t().info.pieceCount, "piece")} of {formatBytes(t().info.pieceLength)}
                      </span>
                      <span class="muted small">{plural(t().info.trackers.length, "tracker")}</span>
                      <Show when={t().info.private}>
                        <span class="muted small">private torrent</span>
                      </Show>
                    </>
                  )}
                </Match>
                <Match when={s().kind === "magnet"}>
                  <span class="muted small">{plural(s().info.trackers.length, "tracker")}</span>
                </Match>
              </Switch>
              <span class="muted small">
                info hash <code>{s().info.infoHash}</code>
              </span>
            </div>
            <Show when={s().info.infoHash} keyed>
              {(infoHash) => <SwarmHealth infoHash={infoHash} trackers={s().info.trackers} />}
            </Show>

            <Show
              when={torrent()}
              fallback={
                <div class="stack">
                  <label class="check">
                    <input
                      type="checkbox"
                      checked={chooseLater()}
                      onChange={(e) => setChooseLater(e.currentTarget.checked)}
                      data-testid="choose-files"
                    />{" "}
                    Choose files once the file list is known
                  </label>
                  <p class="alert info" data-testid="magnet-note">
                    A magnet link carries no file list: a worker fetches it from peers first.{" "}
                    {chooseLater()
                      ? "The job then waits on its page for you to pick the files (for up to a day)."
                      : selectOnly()
                        ? `Then it downloads the ${plural(selectOnly()?.length ?? 0, "file")} the link selects (so=).`
                        : "Then it downloads every file."}
                    <Show when={chooseLater() && selectOnly()}>
                      {" "}
                      The files the link selects (so=) are checked to begin with.
                    </Show>
                    <Show when={chooseLater() && browserTrackers(s().info.trackers).length > 0}>
                      {" "}
                      The link names WebSocket trackers, so this browser looks for the file list too (over
                      WebRTC) while the tab stays open.
                    </Show>
                  </p>
                </div>
              }
            >
              <FilePicker
                files={files()}
                selected={selected}
                onChange={setSelected}
                labelId="files-heading"
              />
            </Show>

            <div class="grid-2">
              <div class="field">
                <label for="destination">Destination</label>
                <Switch>
                  <Match when={profiles.error}>
                    <p class="field-error">Could not load your storage: {describeError(profiles.error)}</p>
                  </Match>
                  <Match when={profiles.loading && !profiles.latest}>
                    <select id="destination" disabled>
                      <option>Loading…</option>
                    </select>
                  </Match>
                  <Match when={noStorage()}>
                    <p class="hint" id="destination">
                      No storage yet: add Google Drive or a bucket above.
                    </p>
                  </Match>
                  <Match when={profiles.latest}>
                    {(data) => (
                      <select
                        id="destination"
                        value={chosenProfile()}
                        onChange={(e) => setProfileId(e.currentTarget.value)}
                      >
                        <For each={data().profiles}>
                          {(p) => (
                            <option value={p.id}>
                              {p.name}
                              {p.isDefault ? " (default)" : ""}
                            </option>
                          )}
                        </For>
                      </select>
                    )}
                  </Match>
                </Switch>
              </div>
              <div class="field">
                <label for="target-folder">Folder in the destination</label>
                <input
                  id="target-folder"
                  type="text"
                  spellcheck={false}
                  placeholder="Optional, e.g. movies/2025"
                  value={targetFolder()}
                  onInput={(e) => setTargetFolder(e.currentTarget.value)}
                  aria-describedby="target-folder-hint"
                />
                <p id="target-folder-hint" class="hint">
                  Files keep their paths from the torrent under this folder.
                  <Show when={landing()} fallback=" Left empty, they go in a folder named after the torrent.">
                    {(name) => (
                      <>
                        {" "}
                        Left empty, they go in <span class="mono">{name()}/</span>.
                      </>
                    )}
                  </Show>
                </p>
              </div>
            </div>

            <fieldset class="stack" data-testid="runner-choice">
              <legend>Who transfers it</legend>
              <label class="check">
                <input
                  type="radio"
                  name="runner"
                  checked={!browserChosen()}
                  onChange={() => setInBrowser(false)}
                  data-testid="runner-fleet"
                />{" "}
                The worker fleet — nothing to keep open
              </label>
              <label class="check">
                <input
                  type="radio"
                  name="runner"
                  checked={browserChosen()}
                  disabled={browserRefusal() !== undefined}
                  onChange={() => setInBrowser(true)}
                  data-testid="runner-browser"
                />{" "}
                Transfer in this browser
              </label>
              <p class="hint" data-testid="runner-note">
                <Show
                  when={browserRefusal()}
                  fallback={
                    <>
                      This tab downloads the files from{" "}
                      {[
                        reach().trackers.length > 0 ? "WebRTC peers" : "",
                        reach().webSeeds.length > 0 ? "web seeds" : "",
                      ]
                        .filter(Boolean)
                        .join(" and ")}{" "}
                      and uploads them straight to the destination. Keep it open: closing it pauses the job,
                      which this tab or the fleet can resume.
                      <Show when={source()?.kind === "magnet"}>
                        {" "}
                        It first finds the file list in the swarm, then you choose the files.
                      </Show>
                    </>
                  }
                >
                  {(why) => <>Not offered: {why()}</>}
                </Show>
              </p>
            </fieldset>

            <Show when={!browserChosen()}>
              <fieldset class="stack" data-testid="seed-choice">
                <legend>After it is stored</legend>
                <label class="check">
                  <input
                    type="checkbox"
                    checked={seedBack()}
                    onChange={(e) => setSeedBack(e.currentTarget.checked)}
                    data-testid="seed-back"
                  />{" "}
                  Keep seeding, to give back to the swarm
                </label>
                <Show when={seedBack()}>
                  <div class="grid-2">
                    <div class="field">
                      <label for="seed-ratio">Until ratio</label>
                      <input
                        id="seed-ratio"
                        type="number"
                        min="0.1"
                        step="0.1"
                        value={seedRatio()}
                        onInput={(e) => setSeedRatio(e.currentTarget.value)}
                      />
                    </div>
                    <div class="field">
                      <label for="seed-hours">or for hours</label>
                      <input
                        id="seed-hours"
                        type="number"
                        min="1"
                        step="1"
                        value={seedHours()}
                        onInput={(e) => setSeedHours(e.currentTarget.value)}
                      />
                    </div>
                  </div>
                  <p class="hint">
                    Whichever comes first. The operator's limits apply; the job page shows what was granted
                    and how much was given back.
                  </p>
                </Show>
              </fieldset>
            </Show>

            <Show when={submitError()}>
              <div class="alert error" role="alert">
                <p>{submitError()}</p>
              </div>
            </Show>
            <div class="submit-bar">
              <button type="button" class="button subtle" onClick={reset}>
                Choose another
              </button>
              <button
                type="submit"
                class="button primary"
                disabled={
                  submitting() || (torrent() !== undefined && selected().size === 0) || !chosenProfile()
                }
              >
                {submitting()
                  ? "Starting…"
                  : torrent()
                    ? `Start job · ${formatBytes(chosenSize())}`
                    : "Start job"}
              </button>
            </div>
          </form>
        )}
      </Show>
    </>
  );
}
