// Starts the app: Ionic's styles and setup, silent token refresh, and sending RSVPs queued while offline.
import { setupIonicReact } from '@ionic/react';
import '@ionic/react/css/core.css';
import '@ionic/react/css/normalize.css';
import '@ionic/react/css/structure.css';
import '@ionic/react/css/typography.css';
import '@ionic/react/css/padding.css';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { scheduleRefresh } from './api/client';
import { App } from './App';
import { flushRsvps } from './offline/rsvpQueue';
import './theme.css';

setupIonicReact({ mode: 'md' });
scheduleRefresh();
window.addEventListener('online', () => void flushRsvps());
if (navigator.onLine) void flushRsvps();

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
