import { defineConfig } from "vitest/config";
import vue from "@vitejs/plugin-vue";

// `npm run dev` serves the app with hot reload and forwards everything else to a running
// llamaproxy dashboard port (LLAMAPROXY_DASHBOARD_URL, default http://127.0.0.1:8080).
const backend = process.env.LLAMAPROXY_DASHBOARD_URL || "http://127.0.0.1:8080";
const proxied = { target: backend, changeOrigin: false };

export default defineConfig({
  base: "/",
  plugins: [vue()],
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 600 },
  server: {
    proxy: {
      "/api": proxied,
      "/admin": proxied,
      "/static": proxied,
      "/health": proxied,
      "/ws": { ...proxied, ws: true },
    },
  },
  test: {
    environment: "happy-dom",
    include: ["src/**/*.test.ts"],
  },
});
