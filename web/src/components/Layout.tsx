// The frame of every screen: a header with the navigation and the live unread badge, an offline banner, and the
// content.
import { IonBadge, IonButton, IonButtons, IonContent, IonHeader, IonIcon, IonPage, IonTitle, IonToolbar } from '@ionic/react';
import { notificationsOutline } from 'ionicons/icons';
import { useEffect, useState, type ReactNode } from 'react';
import { Link, useNavigate } from 'react-router-dom';
import { useAuth } from '../auth';
import { useLiveNotifications } from '../notifications/live';
import { texts } from '../texts';

export function useOnline(): boolean {
  const [online, setOnline] = useState(navigator.onLine);
  useEffect(() => {
    const update = () => setOnline(navigator.onLine);
    window.addEventListener('online', update);
    window.addEventListener('offline', update);
    return () => {
      window.removeEventListener('online', update);
      window.removeEventListener('offline', update);
    };
  }, []);
  return online;
}

export function Layout({ title, children }: { title: string; children: ReactNode }) {
  const { me, loggedIn, logOut } = useAuth();
  const navigate = useNavigate();
  const online = useOnline();
  const { unread } = useLiveNotifications();
  useEffect(() => {
    document.title = `${title} · ${texts.appName}`;
  }, [title]);
  return (
    <IonPage>
      <IonHeader>
        <IonToolbar color="primary">
          <IonTitle>
            <Link to="/" className="brand">
              {texts.appName}
            </Link>
          </IonTitle>
          <IonButtons slot="end">
            <IonButton onClick={() => navigate('/')}>{texts.nav.explore}</IonButton>
            {loggedIn ? (
              <>
                {/* The name is text (hidden), not aria-label: Ionic copies an aria-label into the button once only. */}
                <IonButton onClick={() => navigate('/notifications')} className="bell">
                  <IonIcon icon={notificationsOutline} aria-hidden="true" />
                  <span className="visually-hidden">{texts.nav.notifications(unread)}</span>
                  {unread > 0 && (
                    <IonBadge color="light" className="unread" aria-hidden="true">
                      {unread > 99 ? '99+' : unread}
                    </IonBadge>
                  )}
                </IonButton>
                {/* Until the profile is read, the link still needs a name (axe: link-name). */}
                <Link to="/profile" className="who">
                  {me?.display_name ?? texts.profile.title}
                </Link>
                <IonButton onClick={() => void logOut().then(() => navigate('/'))}>{texts.nav.logout}</IonButton>
              </>
            ) : (
              <>
                <IonButton onClick={() => navigate('/login')}>{texts.nav.login}</IonButton>
                <IonButton onClick={() => navigate('/signup')}>{texts.nav.signup}</IonButton>
              </>
            )}
          </IonButtons>
        </IonToolbar>
      </IonHeader>
      <IonContent className="ion-padding">
        <main className="page">
          {!online && (
            <p className="banner" role="status">
              {texts.offlineBanner}
            </p>
          )}
          <h1>{title}</h1>
          {children}
        </main>
      </IonContent>
    </IonPage>
  );
}
