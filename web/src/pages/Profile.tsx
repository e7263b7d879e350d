// The person's own profile: name, about, city, and the profile picture uploaded through the presigned flow.
import { IonButton } from '@ionic/react';
import { useEffect, useState, type FormEvent } from 'react';
import { useNavigate } from 'react-router-dom';
import { api } from '../api/client';
import { attempt, type Shown } from '../api/problem';
import { useAuth } from '../auth';
import { ErrorText, Field } from '../components/Field';
import { ImageUpload } from '../components/ImageUpload';
import { Layout } from '../components/Layout';
import { texts } from '../texts';

const t = texts.profile;

export function Profile() {
  const navigate = useNavigate();
  const { me, loggedIn, reload } = useAuth();
  const [name, setName] = useState('');
  const [bio, setBio] = useState('');
  const [city, setCity] = useState('');
  const [problem, setProblem] = useState<Shown | null>(null);
  const [saved, setSaved] = useState(false);
  // The new picture shows at once, from the images service; the profile shows it once it heard the image is ready.
  const [fresh, setFresh] = useState<string | null>(null);

  useEffect(() => {
    if (!me) return;
    setName(me.display_name);
    setBio(me.bio);
    setCity(me.city ?? '');
  }, [me]);

  async function save(e: FormEvent) {
    e.preventDefault();
    setSaved(false);
    const result = await attempt(() => api.PATCH('/api/users/me', { body: { display_name: name, bio, city: city || null } }));
    setProblem(result.problem ?? null);
    if (result.data) {
      setSaved(true);
      await reload();
    }
  }

  if (!loggedIn) {
    return (
      <Layout title={t.title}>
        <IonButton onClick={() => navigate('/login?next=/profile')}>{texts.nav.login}</IonButton>
      </Layout>
    );
  }

  return (
    <Layout title={t.title}>
      {(fresh ?? me?.avatar) && (
        <img className="avatar" src={fresh ?? me?.avatar?.thumb} alt={t.avatarAlt} width={96} height={96} />
      )}
      <ImageUpload
        label={t.avatar}
        purpose="avatar"
        onReady={async (image) => {
          const result = await attempt(() => api.PATCH('/api/users/me', { body: { avatar_image_id: image.id } }));
          setProblem(result.problem ?? null);
          if (!result.problem) setFresh(image.variants?.thumb ?? null);
          await reload();
        }}
      />
      <form onSubmit={(e) => void save(e)}>
        <Field label={t.name} value={name} onChange={setName} error={problem?.fields.display_name} autocomplete="name" />
        <Field label={t.bio} value={bio} onChange={setBio} error={problem?.fields.bio} multiline />
        <Field label={t.city} value={city} onChange={setCity} error={problem?.fields.city} />
        <IonButton type="submit">{t.save}</IonButton>
        {saved && <p role="status">{t.saved}</p>}
        <ErrorText text={problem?.detail} />
      </form>
      <p>
        <IonButton fill="outline" onClick={() => navigate('/settings/notifications')}>
          {t.notifications}
        </IonButton>
      </p>
    </Layout>
  );
}
