import { defineConfig } from "vite";
import solid from "vite-plugin-solid";

// In development Vite serves the app and passes /api to `wrangler dev`, so
// the browser sees one origin, as it does in production (one Worker).
export default defineConfig({
  plugins: [solid()],
  server: {
    host: "127.0.0.1",
    port: Number(process.env.WEB_PORT ?? 5173),
    strictPort: true,
    proxy: { "/api": { target: process.env.EDGE_URL ?? "http://127.0.0.1:8787", changeOrigin: false } },
  },
  build: { outDir: "dist", emptyOutDir: true },
});
