// The typed API client (generated types from docs/openapi.json) with bearer tokens and silent refresh.
import createClient, { type Middleware } from 'openapi-fetch';
import type { components, paths } from './schema';

export type Schemas = components['schemas'];

const ACCESS = 'gatherly.access';
const REFRESH = 'gatherly.refresh';
const EXPIRES = 'gatherly.expires';
// Refresh this long before the access token expires, so a request never leaves with a stale one.
const REFRESH_MARGIN_MS = 30_000;

export const AUTH_CHANGED = 'gatherly-auth-changed';

export function accessToken(): string | null {
  return localStorage.getItem(ACCESS);
}

export function refreshToken(): string | null {
  return localStorage.getItem(REFRESH);
}

export function isLoggedIn(): boolean {
  return localStorage.getItem(REFRESH) !== null;
}

export function saveTokens(tokens: Schemas['Tokens']): void {
  localStorage.setItem(ACCESS, tokens.access_token);
  localStorage.setItem(REFRESH, tokens.refresh_token);
  localStorage.setItem(EXPIRES, String(Date.now() + tokens.expires_in * 1000));
  scheduleRefresh();
  window.dispatchEvent(new Event(AUTH_CHANGED));
}

export function clearTokens(): void {
  for (const key of [ACCESS, REFRESH, EXPIRES]) localStorage.removeItem(key);
  window.dispatchEvent(new Event(AUTH_CHANGED));
}

function expiresAt(): number {
  return Number(localStorage.getItem(EXPIRES) ?? 0);
}

let refreshing: Promise<boolean> | null = null;

/** Trades the refresh token for new tokens (one call at a time); false when there is none or it was refused. */
export function refreshTokens(): Promise<boolean> {
  refreshing ??= (async () => {
    const refresh = localStorage.getItem(REFRESH);
    if (!refresh) return false;
    try {
      const response = await fetch('/api/auth/refresh', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: refresh }),
      });
      if (response.status === 401) {
        clearTokens(); // revoked or expired: the person logs in again
        return false;
      }
      if (!response.ok) return false;
      saveTokens((await response.json()) as Schemas['Tokens']);
      return true;
    } catch {
      return false; // offline: keep the tokens and try again later
    }
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

let timer: number | undefined;

/** Refreshes silently shortly before the access token expires, while the app is open. */
export function scheduleRefresh(): void {
  window.clearTimeout(timer);
  if (!isLoggedIn()) return;
  const wait = Math.max(expiresAt() - Date.now() - REFRESH_MARGIN_MS, 1_000);
  timer = window.setTimeout(() => void refreshTokens(), wait);
}

const sent = new WeakMap<Request, Request>();

const bearer: Middleware = {
  async onRequest({ request }) {
    if (isLoggedIn() && Date.now() > expiresAt() - REFRESH_MARGIN_MS) await refreshTokens();
    const token = accessToken();
    if (token) request.headers.set('Authorization', `Bearer ${token}`);
    sent.set(request, request.clone()); // kept to send once more after a refresh
    return request;
  },
  async onResponse({ request, response }) {
    const copy = sent.get(request);
    if (response.status !== 401 || !copy || !isLoggedIn()) return response;
    if (!(await refreshTokens())) return response;
    copy.headers.set('Authorization', `Bearer ${accessToken()}`);
    return fetch(copy);
  },
};

export const api = createClient<paths>({ baseUrl: '' });
api.use(bearer);
