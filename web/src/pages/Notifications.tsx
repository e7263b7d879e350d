// The inbox: newest first, more loaded as the list scrolls (the API's cursor), each one or all marked read; new ones
// arrive live from the stream.
import { IonButton, IonInfiniteScroll, IonInfiniteScrollContent, IonItem, IonLabel, IonList } from '@ionic/react';
import { useCallback, useEffect, useState } from 'react';
import { useNavigate } from 'react-router-dom';
import { api, type Schemas } from '../api/client';
import { attempt, type Shown } from '../api/problem';
import { useAuth } from '../auth';
import { ErrorText } from '../components/Field';
import { Layout } from '../components/Layout';
import { formatIn, browserZone } from '../dates';
import { NOTIFICATION_ARRIVED, useLiveNotifications } from '../notifications/live';
import { texts } from '../texts';

const t = texts.notifications;
type Item = Schemas['NotificationOut'];

/** The notification's path in this app; anything else (it should never be) opens the inbox instead. */
function inApp(link: string): string {
  return link.startsWith('/') && !link.startsWith('//') && !link.startsWith('/\\') ? link : '/notifications';
}

export function Notifications() {
  const navigate = useNavigate();
  const { loggedIn } = useAuth();
  const { recount } = useLiveNotifications();
  const [items, setItems] = useState<Item[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loaded, setLoaded] = useState(false);
  const [problem, setProblem] = useState<Shown | null>(null);

  const loadPage = useCallback(async (after: string | null) => {
    const page = await attempt(() => api.GET('/api/notifications', { params: { query: after ? { cursor: after } : {} } }));
    setProblem(page.problem ?? null);
    if (!page.data) return;
    const fresh = page.data.items;
    setItems((old) => {
      const known = new Set(after ? old.map((item) => item.id) : []);
      return [...(after ? old : []), ...fresh.filter((item) => !known.has(item.id))];
    });
    setCursor(page.data.next_cursor);
    setLoaded(true);
  }, []);

  useEffect(() => {
    if (loggedIn) void loadPage(null);
  }, [loggedIn, loadPage]);

  useEffect(() => {
    const arrived = (e: Event) => {
      const notification = (e as CustomEvent<Item>).detail;
      setItems((old) => (old.some((item) => item.id === notification.id) ? old : [notification, ...old]));
    };
    window.addEventListener(NOTIFICATION_ARRIVED, arrived);
    return () => window.removeEventListener(NOTIFICATION_ARRIVED, arrived);
  }, []);

  async function markRead(item: Item) {
    if (item.read_at) return;
    const result = await attempt(() => api.POST('/api/notifications/{notification_id}/read', { params: { path: { notification_id: item.id } } }));
    setProblem(result.problem ?? null);
    if (result.problem) return;
    const now = new Date().toISOString();
    setItems((old) => old.map((one) => (one.id === item.id ? { ...one, read_at: now } : one)));
    await recount();
  }

  async function markAllRead() {
    const result = await attempt(() => api.POST('/api/notifications/read-all'));
    setProblem(result.problem ?? null);
    if (result.problem) return;
    const now = new Date().toISOString();
    setItems((old) => old.map((one) => ({ ...one, read_at: one.read_at ?? now })));
    await recount();
  }

  if (!loggedIn) {
    return (
      <Layout title={t.title}>
        <IonButton onClick={() => navigate('/login?next=/notifications')}>{texts.nav.login}</IonButton>
      </Layout>
    );
  }

  return (
    <Layout title={t.title}>
      <div className="toolbar-row">
        <IonButton onClick={() => void markAllRead()} disabled={!items.some((item) => !item.read_at)}>
          {t.readAll}
        </IonButton>
        <IonButton fill="outline" onClick={() => navigate('/settings/notifications')}>
          {t.settings}
        </IonButton>
      </div>
      <ErrorText text={problem?.detail} />
      {loaded && items.length === 0 && <p>{t.empty}</p>}
      <IonList aria-label={t.title}>
        {items.map((item) => (
          <IonItem key={item.id} className={item.read_at ? 'notification' : 'notification unread-item'}>
            <IonLabel className="ion-text-wrap">
              <h2>
                {!item.read_at && <span className="visually-hidden">{t.unread}: </span>}
                <a
                  href={inApp(item.link)}
                  onClick={(e) => {
                    e.preventDefault();
                    void markRead(item).then(() => navigate(inApp(item.link)));
                  }}
                >
                  {item.title}
                </a>
              </h2>
              <p>{item.body}</p>
              <p className="muted">{formatIn(item.created_at, browserZone())}</p>
            </IonLabel>
            {!item.read_at && (
              <IonButton slot="end" fill="outline" onClick={() => void markRead(item)} aria-label={`${t.markRead}: ${item.title}`}>
                {t.markRead}
              </IonButton>
            )}
          </IonItem>
        ))}
      </IonList>
      <IonInfiniteScroll
        disabled={!cursor}
        onIonInfinite={(e) => void loadPage(cursor).then(() => e.target.complete())}
      >
        <IonInfiniteScrollContent loadingText={t.loadingMore} />
      </IonInfiniteScroll>
    </Layout>
  );
}
