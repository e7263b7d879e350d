// The routes of the app, inside Ionic's app frame; each screen is a chunk of its own, so the first screen is shown
// before the rest is fetched. An update of the app is offered, never forced.
import { IonApp, IonToast } from '@ionic/react';
import { lazy, Suspense, useEffect, type ComponentType } from 'react';
import { BrowserRouter, Route, Routes } from 'react-router-dom';
import { useRegisterSW } from 'virtual:pwa-register/react';
import { AuthProvider } from './auth';
import { Layout } from './components/Layout';
import { LiveNotifications } from './notifications/live';
import { texts } from './texts';

// Every screen's module: loaded when first opened, and all fetched in the background once the first screen is up,
// so screens open offline too (and before the service worker has precached them).
const screens = {
  auth: () => import('./pages/Auth'),
  event: () => import('./pages/Event'),
  editEvent: () => import('./pages/EditEvent'),
  explore: () => import('./pages/Explore'),
  group: () => import('./pages/Group'),
  editGroup: () => import('./pages/EditGroup'),
  newEvent: () => import('./pages/NewEvent'),
  newGroup: () => import('./pages/NewGroup'),
  notifications: () => import('./pages/Notifications'),
  notificationSettings: () => import('./pages/NotificationSettings'),
  profile: () => import('./pages/Profile'),
  map: () => import('./components/PinMap'),
};

/** A screen that could not be loaded (offline before it was ever fetched): said so, instead of a blank page. */
function Unavailable() {
  return (
    <Layout title={texts.screenUnavailable}>
      <p role="status">{texts.offline}</p>
    </Layout>
  );
}

function screen<M>(load: () => Promise<M>, pick: (module: M) => ComponentType) {
  return lazy(async (): Promise<{ default: ComponentType }> => {
    try {
      return { default: pick(await load()) };
    } catch {
      return { default: Unavailable };
    }
  });
}

const SignUp = screen(screens.auth, (m) => m.SignUp);
const Confirm = screen(screens.auth, (m) => m.Confirm);
const ConfirmEmail = screen(screens.auth, (m) => m.ConfirmEmail);
const LogIn = screen(screens.auth, (m) => m.LogIn);
const ForgotPassword = screen(screens.auth, (m) => m.ForgotPassword);
const ResetPassword = screen(screens.auth, (m) => m.ResetPassword);
const EventPage = screen(screens.event, (m) => m.EventPage);
const EditEvent = screen(screens.editEvent, (m) => m.EditEvent);
const Explore = screen(screens.explore, (m) => m.Explore);
const GroupPage = screen(screens.group, (m) => m.GroupPage);
const EditGroup = screen(screens.editGroup, (m) => m.EditGroup);
const NewEvent = screen(screens.newEvent, (m) => m.NewEvent);
const NewGroup = screen(screens.newGroup, (m) => m.NewGroup);
const Notifications = screen(screens.notifications, (m) => m.Notifications);
const NotificationSettings = screen(screens.notificationSettings, (m) => m.NotificationSettings);
const Profile = screen(screens.profile, (m) => m.Profile);

// Long enough for the first screen's own requests (the profile, the inbox count) to go first on a slow server.
const PREFETCH_AFTER_MS = 3000;

/** Fetches every screen in the background once the first one is shown (failures are fine: it is only ahead). */
function usePrefetchScreens() {
  useEffect(() => {
    const timer = window.setTimeout(() => {
      for (const load of Object.values(screens)) void load().catch(() => undefined);
    }, PREFETCH_AFTER_MS);
    return () => window.clearTimeout(timer);
  }, []);
}

function UpdatePrompt() {
  const {
    needRefresh: [needRefresh, setNeedRefresh],
    updateServiceWorker,
  } = useRegisterSW();
  return (
    <IonToast
      isOpen={needRefresh}
      message={texts.updateReady}
      buttons={[
        { text: texts.updateReload, handler: () => void updateServiceWorker(true) },
        { text: texts.updateLater, role: 'cancel', handler: () => setNeedRefresh(false) },
      ]}
      onDidDismiss={() => setNeedRefresh(false)}
    />
  );
}

export function App() {
  usePrefetchScreens();
  return (
    <IonApp>
      <AuthProvider>
        <LiveNotifications>
          <BrowserRouter>
            <Suspense fallback={<p className="loading">{texts.loading}</p>}>
              <Routes>
                <Route path="/" element={<Explore />} />
                <Route path="/signup" element={<SignUp />} />
                <Route path="/confirm" element={<Confirm />} />
                <Route path="/confirm-email" element={<ConfirmEmail />} />
                <Route path="/login" element={<LogIn />} />
                <Route path="/forgot-password" element={<ForgotPassword />} />
                <Route path="/reset-password" element={<ResetPassword />} />
                <Route path="/profile" element={<Profile />} />
                <Route path="/notifications" element={<Notifications />} />
                <Route path="/settings/notifications" element={<NotificationSettings />} />
                <Route path="/groups/new" element={<NewGroup />} />
                <Route path="/groups/:groupId" element={<GroupPage />} />
                <Route path="/groups/:groupId/edit" element={<EditGroup />} />
                <Route path="/groups/:groupId/events/new" element={<NewEvent />} />
                <Route path="/events/:eventId" element={<EventPage />} />
                <Route path="/events/:eventId/edit" element={<EditEvent />} />
                <Route path="*" element={<Layout title={texts.notFound}>{null}</Layout>} />
              </Routes>
            </Suspense>
          </BrowserRouter>
          <UpdatePrompt />
        </LiveNotifications>
      </AuthProvider>
    </IonApp>
  );
}
