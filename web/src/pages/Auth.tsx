// Sign up, confirm the email, log in, and reset a forgotten password.
import { IonButton } from '@ionic/react';
import { useEffect, useRef, useState, type FormEvent } from 'react';
import { Link, useNavigate, useSearchParams } from 'react-router-dom';
import { api, saveTokens } from '../api/client';
import { attempt, type Shown } from '../api/problem';
import { ErrorText, Field } from '../components/Field';
import { Layout } from '../components/Layout';
import { texts } from '../texts';

const t = texts.auth;

function useForm() {
  const [problem, setProblem] = useState<Shown | null>(null);
  const [busy, setBusy] = useState(false);
  return { problem, setProblem, busy, setBusy, field: (name: string) => problem?.fields[name] };
}

export function SignUp() {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [name, setName] = useState('');
  const [done, setDone] = useState(false);
  const form = useForm();

  async function submit(event: FormEvent) {
    event.preventDefault();
    form.setBusy(true);
    const result = await attempt(() =>
      api.POST('/api/auth/signup', { body: { email, password, display_name: name } }),
    );
    form.setBusy(false);
    form.setProblem(result.problem ?? null);
    if (!result.problem) setDone(true);
  }

  return (
    <Layout title={t.signupTitle}>
      {done ? (
        <p role="status">{t.signupDone}</p>
      ) : (
        <form onSubmit={submit} noValidate>
          <Field label={t.displayName} value={name} onChange={setName} error={form.field('display_name')} autocomplete="name" />
          <Field label={t.email} type="email" value={email} onChange={setEmail} error={form.field('email')} autocomplete="email" />
          <Field label={t.password} type="password" value={password} onChange={setPassword} error={form.field('password')} autocomplete="new-password" />
          <ErrorText text={form.problem?.detail} />
          <IonButton type="submit" disabled={form.busy}>
            {t.signupTitle}
          </IonButton>
        </form>
      )}
    </Layout>
  );
}

/** A page an emailed single-use link opens (`?token=`): it spends the token once and says how that went. */
function SpendLink({ title, done, spend }: { title: string; done: string; spend: (token: string) => Promise<{ problem?: Shown }> }) {
  const [params] = useSearchParams();
  const token = params.get('token');
  const [state, setState] = useState<'working' | 'done' | Shown>(token ? 'working' : { detail: t.noToken, fields: {} });
  const sent = useRef(false);

  useEffect(() => {
    if (!token || sent.current) return; // the token is single use: send it once, also under StrictMode
    sent.current = true;
    void spend(token).then((result) => setState(result.problem ?? 'done'));
  }, [token, spend]);

  return (
    <Layout title={title}>
      {state === 'working' && <p role="status">{t.confirming}</p>}
      {state === 'done' && (
        <p role="status">
          {done} <Link to="/login">{texts.nav.login}</Link>
        </p>
      )}
      {typeof state === 'object' && <ErrorText text={state.detail} />}
    </Layout>
  );
}

const confirmAccount = (token: string) => attempt(() => api.POST('/api/auth/confirm', { body: { token } }));
const confirmNewEmail = (token: string) => attempt(() => api.POST('/api/auth/confirm-email', { body: { token } }));

export function Confirm() {
  return <SpendLink title={t.confirmTitle} done={t.confirmed} spend={confirmAccount} />;
}

/** The link sent to a new address when a person changes their email (the old address works until then). */
export function ConfirmEmail() {
  return <SpendLink title={t.confirmEmailTitle} done={t.emailChanged} spend={confirmNewEmail} />;
}

export function LogIn() {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const form = useForm();

  async function submit(event: FormEvent) {
    event.preventDefault();
    form.setBusy(true);
    const result = await attempt(() => api.POST('/api/auth/login', { body: { email, password } }));
    form.setBusy(false);
    form.setProblem(result.problem ?? null);
    if (result.data) {
      saveTokens(result.data);
      const next = params.get('next');
      navigate(next?.startsWith('/') && !next.startsWith('//') ? next : '/'); // only a path of this app
    }
  }

  return (
    <Layout title={t.loginTitle}>
      <form onSubmit={submit} noValidate>
        <Field label={t.email} type="email" value={email} onChange={setEmail} error={form.field('email')} autocomplete="username" />
        <Field label={t.password} type="password" value={password} onChange={setPassword} error={form.field('password')} autocomplete="current-password" />
        <ErrorText text={form.problem?.detail} />
        <IonButton type="submit" disabled={form.busy}>
          {t.loginTitle}
        </IonButton>
      </form>
      <p>
        <Link to="/forgot-password">{t.forgot}</Link> · <Link to="/signup">{texts.nav.signup}</Link>
      </p>
    </Layout>
  );
}

export function ForgotPassword() {
  const [email, setEmail] = useState('');
  const [done, setDone] = useState(false);
  const form = useForm();

  async function submit(event: FormEvent) {
    event.preventDefault();
    const result = await attempt(() => api.POST('/api/auth/password-reset', { body: { email } }));
    form.setProblem(result.problem ?? null);
    if (!result.problem) setDone(true);
  }

  return (
    <Layout title={t.forgotTitle}>
      {done ? (
        <p role="status">{t.forgotDone}</p>
      ) : (
        <form onSubmit={submit} noValidate>
          <Field label={t.email} type="email" value={email} onChange={setEmail} error={form.field('email')} autocomplete="email" />
          <ErrorText text={form.problem?.detail} />
          <IonButton type="submit">{t.forgotSend}</IonButton>
        </form>
      )}
    </Layout>
  );
}

export function ResetPassword() {
  const [params] = useSearchParams();
  const token = params.get('token') ?? '';
  const [password, setPassword] = useState('');
  const [done, setDone] = useState(false);
  const form = useForm();

  async function submit(event: FormEvent) {
    event.preventDefault();
    const result = await attempt(() =>
      api.POST('/api/auth/password-reset/confirm', { body: { token, password } }),
    );
    form.setProblem(result.problem ?? null);
    if (!result.problem) setDone(true);
  }

  return (
    <Layout title={t.resetTitle}>
      {!token && <ErrorText text={t.noToken} />}
      {done ? (
        <p role="status">
          {t.resetDone} <Link to="/login">{texts.nav.login}</Link>
        </p>
      ) : (
        <form onSubmit={submit} noValidate>
          <Field label={t.newPassword} type="password" value={password} onChange={setPassword} error={form.field('password')} autocomplete="new-password" />
          <ErrorText text={form.problem?.detail ?? form.field('token')} />
          <IonButton type="submit" disabled={!token}>
            {t.resetSave}
          </IonButton>
        </form>
      )}
    </Layout>
  );
}
