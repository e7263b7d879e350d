// The unread count, kept live: read once from the inbox, then followed over the notifications stream (SSE).
import { createContext, useCallback, useContext, useEffect, useState, type ReactNode } from 'react';
import { api, type Schemas } from '../api/client';
import { useAuth } from '../auth';

/** Sent on window with the notification as detail, so an open list can show it at once. */
export const NOTIFICATION_ARRIVED = 'gatherly-notification-arrived';
// A stream that failed (offline, server restarting, ticket refused) is opened again after this long.
const RECONNECT_MS = 3000;

interface Live {
  unread: number;
  /** Reads the count from the inbox again (after marking read). */
  recount: () => Promise<void>;
}

const LiveContext = createContext<Live>({ unread: 0, recount: async () => {} });

export function LiveNotifications({ children }: { children: ReactNode }) {
  const { loggedIn } = useAuth();
  const [unread, setUnread] = useState(0);

  const recount = useCallback(async () => {
    const { data } = await api.GET('/api/notifications', { params: { query: { limit: 1 } } }).catch(() => ({ data: undefined }));
    if (data) setUnread(data.unread_count);
  }, []);

  useEffect(() => {
    if (!loggedIn) {
      setUnread(0);
      return;
    }
    let source: EventSource | null = null;
    let retry: number | undefined;
    let stopped = false;

    // EventSource cannot send an Authorization header: each connection redeems a fresh single-use ticket. Its own
    // reconnect would reuse the spent ticket, so a failed stream is closed and opened anew; the count is read again
    // then, which covers whatever came while it was down.
    async function open() {
      if (stopped) return;
      await recount();
      const { data } = await api.POST('/api/notifications/stream-ticket').catch(() => ({ data: undefined }));
      if (stopped) return;
      if (!data) {
        retry = window.setTimeout(() => void open(), RECONNECT_MS);
        return;
      }
      source = new EventSource(`/api/notifications/stream?ticket=${encodeURIComponent(data.ticket)}`);
      source.addEventListener('notification', (message) => {
        const notification = JSON.parse((message as MessageEvent<string>).data) as Schemas['NotificationOut'];
        if (!notification.read_at) setUnread((count) => count + 1);
        window.dispatchEvent(new CustomEvent(NOTIFICATION_ARRIVED, { detail: notification }));
      });
      source.onerror = () => {
        source?.close();
        source = null;
        retry = window.setTimeout(() => void open(), RECONNECT_MS);
      };
    }

    void open();
    return () => {
      stopped = true;
      window.clearTimeout(retry);
      source?.close();
    };
  }, [loggedIn, recount]);

  return <LiveContext.Provider value={{ unread, recount }}>{children}</LiveContext.Provider>;
}

export function useLiveNotifications(): Live {
  return useContext(LiveContext);
}
