// Builds the Gatherly web app into dist/ (served at / by `gatherly up`), with the PWA manifest and service worker.
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';
import { VitePWA } from 'vite-plugin-pwa';

export default defineConfig({
  plugins: [
    react(),
    VitePWA({
      // The person decides when a new version takes over (a prompt), never mid-task.
      registerType: 'prompt',
      injectRegister: false,
      includeAssets: ['icons/apple-touch-icon.png'],
      manifest: {
        name: 'Gatherly',
        short_name: 'Gatherly',
        description: 'Local groups and events near you',
        id: '/',
        start_url: '/',
        scope: '/',
        display: 'standalone',
        theme_color: '#6d28d9',
        background_color: '#ffffff',
        icons: [
          { src: '/icons/icon-192.png', sizes: '192x192', type: 'image/png', purpose: 'any' },
          { src: '/icons/icon-512.png', sizes: '512x512', type: 'image/png', purpose: 'any' },
          { src: '/icons/icon-maskable-512.png', sizes: '512x512', type: 'image/png', purpose: 'maskable' },
        ],
      },
      workbox: {
        // Web push: showing a pushed notification and opening its page (public/push-sw.js).
        importScripts: ['/push-sw.js'],
        globPatterns: ['**/*.{js,css,html,png,svg,woff2}'],
        // The gazetteer chunk is large; precached so a city can be typed offline too.
        maximumFileSizeToCacheInBytes: 4 * 1024 * 1024,
        // The first visit is controlled at once (nothing older to wait for); a later version still waits for the
        // person to accept it (no skipWaiting).
        clientsClaim: true,
        navigateFallback: '/index.html',
        navigateFallbackDenylist: [/^\/api\//, /^\/dev\//, /^\/media\//, /^\/(livez|readyz|metrics)$/],
        runtimeCaching: [
          {
            // Groups and events seen recently stay readable offline: the network first, the copy when it fails.
            urlPattern: ({ url, request }) =>
              request.method === 'GET' && /^\/api\/(groups|events)(\/|$)/.test(url.pathname),
            handler: 'NetworkFirst',
            options: {
              cacheName: 'gatherly-api',
              networkTimeoutSeconds: 4,
              expiration: { maxEntries: 200, maxAgeSeconds: 7 * 24 * 3600 },
              cacheableResponse: { statuses: [200] },
            },
          },
        ],
      },
    }),
  ],
  build: {
    sourcemap: false,
    chunkSizeWarningLimit: 3000,
    rollupOptions: {
      treeshake: {
        // @ionic/core declares no sideEffects, so every component module @ionic/react imports (all 90) was kept,
        // used or not. A component module only defines its element when its React wrapper asks: unused ones can go.
        moduleSideEffects: (id) => !/[\\/]@ionic[\\/]core[\\/]components[\\/]ion-[a-z-]+\.js$/.test(id),
      },
    },
  },
});
