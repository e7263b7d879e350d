// What a person is told and how: email and push per kind, the hours before an event that reminders come, and push
// on this device.
import { IonButton } from '@ionic/react';
import { useEffect, useState, type FormEvent } from 'react';
import { useNavigate } from 'react-router-dom';
import { api, type Schemas } from '../api/client';
import { attempt, type Shown } from '../api/problem';
import { useAuth } from '../auth';
import { ErrorText, Field } from '../components/Field';
import { Layout } from '../components/Layout';
import { disablePush, enablePush, pushEnabledHere, pushSupported } from '../notifications/push';
import { texts } from '../texts';

const t = texts.preferences;
type Kind = Schemas['Kind'];
const KINDS = Object.keys(texts.kinds) as Kind[];
const CHANNELS = ['email', 'push'] as const;

export function NotificationSettings() {
  const navigate = useNavigate();
  const { loggedIn } = useAuth();
  const [choices, setChoices] = useState<Schemas['PreferencesOut'] | null>(null);
  const [hours, setHours] = useState('');
  const [problem, setProblem] = useState<Shown | null>(null);
  const [saved, setSaved] = useState(false);
  const [pushHere, setPushHere] = useState(pushEnabledHere());
  const [pushProblem, setPushProblem] = useState<Shown | null>(null);

  useEffect(() => {
    if (!loggedIn) return;
    void attempt(() => api.GET('/api/notifications/preferences')).then((found) => {
      setProblem(found.problem ?? null);
      if (!found.data) return;
      setChoices(found.data);
      setHours((found.data.reminders.hours_before ?? []).join(', '));
    });
  }, [loggedIn]);

  function toggle(channel: (typeof CHANNELS)[number], kind: Kind, on: boolean) {
    setSaved(false);
    setChoices((old) => old && { ...old, [channel]: { ...old[channel], [kind]: on } });
  }

  async function save(e: FormEvent) {
    e.preventDefault();
    if (!choices) return;
    setSaved(false);
    const typed = hours.split(',').map((part) => part.trim()).filter(Boolean);
    // Sent as typed when not a whole number: the server names what is wrong.
    const hoursBefore = typed.map((part) => (/^\d+$/.test(part) ? Number(part) : part)) as number[];
    const result = await attempt(() =>
      api.PUT('/api/notifications/preferences', {
        body: { email: choices.email, push: choices.push, reminders: { hours_before: hoursBefore } },
      }),
    );
    setProblem(result.problem ?? null);
    if (result.data) {
      setChoices(result.data);
      setSaved(true);
    }
  }

  async function switchPush() {
    const failed = pushHere ? await disablePush() : await enablePush();
    setPushProblem(failed);
    setPushHere(pushEnabledHere());
  }

  if (!loggedIn) {
    return (
      <Layout title={t.title}>
        <IonButton onClick={() => navigate('/login?next=/settings/notifications')}>{texts.nav.login}</IonButton>
      </Layout>
    );
  }

  const reminderError = Object.entries(problem?.fields ?? {}).find(([field]) => field.startsWith('reminders'))?.[1];
  return (
    <Layout title={t.title}>
      <section aria-labelledby="push" className="actions">
        <h2 id="push">{t.pushTitle}</h2>
        <p role="status">{pushHere ? t.pushOn : t.pushOff}</p>
        {pushSupported() && <IonButton onClick={() => void switchPush()}>{pushHere ? t.pushDisable : t.pushEnable}</IonButton>}
        <ErrorText text={pushProblem?.detail} />
      </section>

      {choices && (
        <form onSubmit={(e) => void save(e)}>
          <table className="preferences">
            <caption>{t.caption}</caption>
            <thead>
              <tr>
                <th scope="col">{t.kind}</th>
                <th scope="col">{t.email}</th>
                <th scope="col">{t.push}</th>
              </tr>
            </thead>
            <tbody>
              {KINDS.map((kind) => (
                <tr key={kind}>
                  <th scope="row">{texts.kinds[kind]}</th>
                  {CHANNELS.map((channel) => (
                    <td key={channel}>
                      <input
                        type="checkbox"
                        aria-label={`${texts.kinds[kind]}: ${channel === 'email' ? t.email : t.push}`}
                        checked={choices[channel][kind] ?? false}
                        onChange={(e) => toggle(channel, kind, e.target.checked)}
                      />
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
          <Field label={t.hours} value={hours} onChange={(value) => { setHours(value); setSaved(false); }} error={reminderError} />
          <IonButton type="submit">{t.save}</IonButton>
          {saved && <p role="status">{t.saved}</p>}
          <ErrorText text={problem?.detail} />
        </form>
      )}
    </Layout>
  );
}
