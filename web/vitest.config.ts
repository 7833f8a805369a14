// Component and unit tests of the web app: jsdom, compiled by vite-plugin-solid.
import solid from "vite-plugin-solid";
import { defineProject } from "vitest/config";

export default defineProject({
  plugins: [solid()],
  resolve: { conditions: ["development", "browser"] },
  test: {
    name: "web",
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
