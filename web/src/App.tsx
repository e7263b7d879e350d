// The routes of the app, inside Ionic's app frame; an update of the app is offered, never forced.
import { IonApp, IonToast } from '@ionic/react';
import { BrowserRouter, Route, Routes } from 'react-router-dom';
import { useRegisterSW } from 'virtual:pwa-register/react';
import { AuthProvider } from './auth';
import { Layout } from './components/Layout';
import { Confirm, ForgotPassword, LogIn, ResetPassword, SignUp } from './pages/Auth';
import { EventPage } from './pages/Event';
import { Explore } from './pages/Explore';
import { GroupPage } from './pages/Group';
import { NewEvent } from './pages/NewEvent';
import { NewGroup } from './pages/NewGroup';
import { texts } from './texts';

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
    />
  );
}

export function App() {
  return (
    <IonApp>
      <AuthProvider>
        <BrowserRouter>
          <Routes>
            <Route path="/" element={<Explore />} />
            <Route path="/signup" element={<SignUp />} />
            <Route path="/confirm" element={<Confirm />} />
            <Route path="/login" element={<LogIn />} />
            <Route path="/forgot-password" element={<ForgotPassword />} />
            <Route path="/reset-password" element={<ResetPassword />} />
            <Route path="/groups/new" element={<NewGroup />} />
            <Route path="/groups/:groupId" element={<GroupPage />} />
            <Route path="/groups/:groupId/events/new" element={<NewEvent />} />
            <Route path="/events/:eventId" element={<EventPage />} />
            <Route path="*" element={<Layout title="Not found">{null}</Layout>} />
          </Routes>
        </BrowserRouter>
        <UpdatePrompt />
      </AuthProvider>
    </IonApp>
  );
}
