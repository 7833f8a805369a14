export * from "./jobs.ts";
export * from "./progress.ts";
export * from "./queue.ts";
