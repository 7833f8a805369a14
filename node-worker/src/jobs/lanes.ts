// The order a job's files are uploaded in. Two lanes take them in turn, each
// upload keeping its own parts in flight. Where the sink's uploads claim the
// parts the download fills (a job whose budget holds its files), a third lane
// starts the next file's upload once the download reaches the file before
// it, even with both lanes still sending files the download left behind on
// disk: its first part is then claimed (and the upload under way at the
// provider) by the time the download gets there, so its pieces go into its
// parts in memory, not to scratch and back. The sink bounds the job's parts
// in flight (and their buffers) however many uploads run.

export interface LaneOptions<F> {
  upload(file: F): Promise<void>;
  /** Resolves once the download has reached `file`: given, a third lane follows the download. */
  reached?: ((file: F) => Promise<void>) | undefined;
}

/** Starts the lanes that upload every file once: their promises, to await (or settle) together. */
export function uploadLanes<F>(files: readonly F[], opts: LaneOptions<F>): Promise<void>[] {
  const queue = [...files];
  const lane = async () => {
    for (let file = queue.shift(); file !== undefined; file = queue.shift()) await opts.upload(file);
  };
  const lanes = [lane(), lane()];
  const reached = opts.reached;
  if (reached) {
    const follow = async () => {
      while (queue.length > 0) {
        const next = queue[0]!;
        const before = files[files.indexOf(next) - 1];
        if (before !== undefined) await reached(before);
        if (queue[0] !== next) continue; // a lane took it meanwhile
        queue.shift();
        await opts.upload(next);
      }
    };
    lanes.push(follow());
  }
  return lanes;
}
