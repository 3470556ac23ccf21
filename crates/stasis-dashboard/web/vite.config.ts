import { defineConfig } from 'vite'

// Served by `stasis serve` under /dashboard/ (embedded in the binary at build time).
export default defineConfig({
  base: '/dashboard/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 1024,
  },
})
