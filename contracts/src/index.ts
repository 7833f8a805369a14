export * from "./credentials.ts";
export * from "./egress.ts";
export * from "./eta.ts";
export * from "./jobs.ts";
export * from "./names.ts";
export * from "./progress.ts";
export * from "./queue.ts";
export * from "./torrent.ts";
