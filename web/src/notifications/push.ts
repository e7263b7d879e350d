// Web push on this device: permission, a subscription through the service worker with the server's VAPID key, and
// its registration with the API (its id kept here to turn it off again).
import { api } from '../api/client';
import { attempt, type Shown } from '../api/problem';
import { texts } from '../texts';

const SUBSCRIPTION = 'gatherly.pushSubscription';

export function pushSupported(): boolean {
  return 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
}

export function pushEnabledHere(): boolean {
  return localStorage.getItem(SUBSCRIPTION) !== null;
}

/** The VAPID key as PushManager wants it: base64url → bytes. */
function keyBytes(base64url: string): Uint8Array<ArrayBuffer> {
  const base64 = base64url.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(base64url.length / 4) * 4, '=');
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

/** Asks for permission, subscribes and tells the server; the problem to show when something refused. */
export async function enablePush(): Promise<Shown | null> {
  if (!pushSupported()) return { detail: texts.push.unsupported, fields: {} };
  if ((await Notification.requestPermission()) !== 'granted') return { detail: texts.push.denied, fields: {} };
  const key = await attempt(() => api.GET('/api/push/vapid-public-key'));
  if (!key.data) return key.problem ?? null;
  const publicKey = key.data.public_key;
  let subscription: PushSubscription;
  try {
    const registration = await navigator.serviceWorker.ready;
    subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(publicKey) });
  } catch {
    return { detail: texts.push.failed, fields: {} };
  }
  const json = subscription.toJSON();
  const saved = await attempt(() =>
    api.POST('/api/push/subscriptions', {
      body: { endpoint: json.endpoint ?? '', keys: { p256dh: json.keys?.p256dh ?? '', auth: json.keys?.auth ?? '' } },
    }),
  );
  if (!saved.data) {
    await subscription.unsubscribe().catch(() => undefined);
    return saved.problem ?? null;
  }
  localStorage.setItem(SUBSCRIPTION, saved.data.id);
  return null;
}

/** Forgets this device's subscription on the server and in the browser. */
export async function disablePush(): Promise<Shown | null> {
  const id = localStorage.getItem(SUBSCRIPTION);
  if (id) {
    const removed = await attempt(() => api.DELETE('/api/push/subscriptions/{subscription_id}', { params: { path: { subscription_id: id } } }));
    if (removed.problem && removed.status !== 404) return removed.problem;
  }
  localStorage.removeItem(SUBSCRIPTION);
  const registration = await navigator.serviceWorker?.getRegistration();
  const subscription = await registration?.pushManager.getSubscription();
  await subscription?.unsubscribe().catch(() => undefined);
  return null;
}
