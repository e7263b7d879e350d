// Who is logged in: the profile from GET /api/users/me, kept in step with the stored tokens.
import { createContext, useCallback, useContext, useEffect, useState, type ReactNode } from 'react';
import { disablePush, pushEnabledHere } from './notifications/push';
import { forgetRsvps } from './offline/rsvpQueue';
import { AUTH_CHANGED, api, clearTokens, isLoggedIn, refreshToken, type Schemas } from './api/client';

interface Auth {
  me: Schemas['Me'] | null;
  loggedIn: boolean;
  logOut: () => Promise<void>;
  /** Reads the profile again (after it changed, e.g. a new avatar). */
  reload: () => Promise<void>;
}

const AuthContext = createContext<Auth>({ me: null, loggedIn: false, logOut: async () => {}, reload: async () => {} });

export function AuthProvider({ children }: { children: ReactNode }) {
  const [loggedIn, setLoggedIn] = useState(isLoggedIn());
  const [me, setMe] = useState<Schemas['Me'] | null>(null);

  useEffect(() => {
    const changed = () => setLoggedIn(isLoggedIn());
    window.addEventListener(AUTH_CHANGED, changed);
    return () => window.removeEventListener(AUTH_CHANGED, changed);
  }, []);

  /** True when the profile is known; false when it is worth asking again (offline, or the server said 5xx). */
  const load = useCallback(async (): Promise<boolean> => {
    if (!isLoggedIn()) return true;
    try {
      const { data, response } = await api.GET('/api/users/me');
      if (data) setMe(data);
      return response.status < 500;
    } catch {
      return false; // offline
    }
  }, []);

  const reload = useCallback(async () => void (await load()), [load]);

  useEffect(() => {
    if (!loggedIn) {
      setMe(null);
      return;
    }
    // The name in the header must not stay blank after one failed read: ask again, less and less often.
    let timer: number | undefined;
    let stopped = false;
    const attempt = async (wait: number) => {
      if ((await load()) || stopped) return;
      timer = window.setTimeout(() => void attempt(Math.min(wait * 2, 30_000)), wait);
    };
    void attempt(1_000);
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, [loggedIn, load]);

  const logOut = useCallback(async () => {
    // This device stops receiving the person's pushes: the next one to use it must not see them.
    if (pushEnabledHere()) await disablePush().catch(() => undefined);
    const refresh = refreshToken();
    if (refresh) await api.POST('/api/auth/logout', { body: { refresh_token: refresh } }).catch(() => undefined);
    clearTokens();
    forgetRsvps();
    // What this person saw must not be readable offline by the next one on this device.
    if ('caches' in window) await caches.delete('gatherly-api');
  }, []);

  return <AuthContext.Provider value={{ me, loggedIn, logOut, reload }}>{children}</AuthContext.Provider>;
}

export function useAuth(): Auth {
  return useContext(AuthContext);
}
