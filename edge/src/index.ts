import { app } from "./app.ts";
import { scheduled } from "./queue/scheduled.ts";

export default {
  fetch: app.fetch,
  scheduled,
} satisfies ExportedHandler<Record<string, unknown>>;
