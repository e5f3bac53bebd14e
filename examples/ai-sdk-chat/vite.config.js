import { defineConfig } from "vite";

// JSX with React's automatic runtime, compiled by Vite's own esbuild: no plugin
// needed to build. (Add @vitejs/plugin-react for Fast Refresh in `npm run dev`.)
export default defineConfig({
  esbuild: { jsx: "automatic" },
});
