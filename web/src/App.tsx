// The routes of the app, inside Ionic's app frame; each screen is a chunk of its own, loaded when first opened, so
// the first screen fetches only what it shows. An update of the app is offered, never forced.
import { IonApp, IonToast } from '@ionic/react';
import { lazy, Suspense } from 'react';
import { BrowserRouter, Route, Routes } from 'react-router-dom';
import { useRegisterSW } from 'virtual:pwa-register/react';
import { AuthProvider } from './auth';
import { Layout } from './components/Layout';
import { LiveNotifications } from './notifications/live';
import { texts } from './texts';

const Auth = () => import('./pages/Auth');
const SignUp = lazy(() => Auth().then((m) => ({ default: m.SignUp })));
const Confirm = lazy(() => Auth().then((m) => ({ default: m.Confirm })));
const LogIn = lazy(() => Auth().then((m) => ({ default: m.LogIn })));
const ForgotPassword = lazy(() => Auth().then((m) => ({ default: m.ForgotPassword })));
const ResetPassword = lazy(() => Auth().then((m) => ({ default: m.ResetPassword })));
const EventPage = lazy(() => import('./pages/Event').then((m) => ({ default: m.EventPage })));
const EditEvent = lazy(() => import('./pages/EditEvent').then((m) => ({ default: m.EditEvent })));
const Explore = lazy(() => import('./pages/Explore').then((m) => ({ default: m.Explore })));
const GroupPage = lazy(() => import('./pages/Group').then((m) => ({ default: m.GroupPage })));
const EditGroup = lazy(() => import('./pages/EditGroup').then((m) => ({ default: m.EditGroup })));
const NewEvent = lazy(() => import('./pages/NewEvent').then((m) => ({ default: m.NewEvent })));
const NewGroup = lazy(() => import('./pages/NewGroup').then((m) => ({ default: m.NewGroup })));
const Notifications = lazy(() => import('./pages/Notifications').then((m) => ({ default: m.Notifications })));
const NotificationSettings = lazy(() =>
  import('./pages/NotificationSettings').then((m) => ({ default: m.NotificationSettings })),
);
const Profile = lazy(() => import('./pages/Profile').then((m) => ({ default: m.Profile })));

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
                <Route path="*" element={<Layout title="Not found">{null}</Layout>} />
              </Routes>
            </Suspense>
          </BrowserRouter>
          <UpdatePrompt />
        </LiveNotifications>
      </AuthProvider>
    </IonApp>
  );
}
