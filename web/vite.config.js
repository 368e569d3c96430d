import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

export default defineConfig({
  // Relative asset paths: the page works wherever it is served from.
  base: './',
  plugins: [vue()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    chunkSizeWarningLimit: 1500,
  },
  server: {
    // `npm run dev` against a running `make up` stack.
    proxy: {
      '/api': 'http://127.0.0.1:8080',
      '/dev-identity.json': 'http://127.0.0.1:8080',
    },
  },
  test: {
    include: ['test/**/*.test.js'],
    environment: 'node',
  },
})
