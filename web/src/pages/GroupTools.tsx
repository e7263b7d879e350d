// A group's organizer tools: a member's role, removing or banning them, announcements, and importing events from
// an .ics file.
import { IonButton } from '@ionic/react';
import { useState, type FormEvent } from 'react';
import { api, type Schemas } from '../api/client';
import { attempt, type Shown } from '../api/problem';
import { ErrorText, Field } from '../components/Field';
import { texts } from '../texts';

const t = texts.organizer;
const ROLES = Object.keys(t.roles) as Schemas['Role'][];

interface MemberToolsProps {
  groupId: string;
  member: Schemas['MemberOut'];
  onChanged: () => Promise<void>;
  onProblem: (problem: Shown | null) => void;
}

export function MemberTools({ groupId, member, onChanged, onProblem }: MemberToolsProps) {
  const name = member.display_name ?? member.user_id;
  const target = { params: { path: { group: groupId, user_id: member.user_id } } };

  async function act(call: () => Promise<{ data?: unknown; error?: unknown; response: Response }>) {
    const result = await attempt(call);
    onProblem(result.problem ?? null);
    await onChanged();
  }

  return (
    <div className="member-tools" slot="end">
      <select
        aria-label={t.role(name)}
        value={member.role}
        onChange={(e) => {
          const role = e.target.value as Schemas['Role'];
          void act(() => api.PUT('/api/groups/{group}/members/{user_id}/role', { ...target, body: { role } }));
        }}
      >
        {ROLES.map((role) => (
          <option key={role} value={role}>
            {t.roles[role]}
          </option>
        ))}
      </select>
      <IonButton size="small" fill="outline" color="medium" aria-label={t.removeOf(name)}
        onClick={() => void act(() => api.DELETE('/api/groups/{group}/members/{user_id}', target))}>
        {t.remove}
      </IonButton>
      <IonButton size="small" fill="outline" color="medium" aria-label={t.banOf(name)}
        onClick={() => {
          if (!window.confirm(t.banConfirm(name))) return;
          void act(() =>
            api.DELETE('/api/groups/{group}/members/{user_id}', { params: { ...target.params, query: { ban: true } } }),
          );
        }}>
        {t.ban}
      </IonButton>
    </div>
  );
}

export function Announce({ groupId }: { groupId: string }) {
  const [subject, setSubject] = useState('');
  const [body, setBody] = useState('');
  const [problem, setProblem] = useState<Shown | null>(null);
  const [sent, setSent] = useState(false);

  async function send(e: FormEvent) {
    e.preventDefault();
    setSent(false);
    const result = await attempt(() =>
      api.POST('/api/groups/{group}/announcements', { params: { path: { group: groupId } }, body: { subject, body } }),
    );
    setProblem(result.problem ?? null);
    if (result.data) {
      setSent(true);
      setSubject('');
      setBody('');
    }
  }

  return (
    <section aria-labelledby="announce">
      <h2 id="announce">{t.announce}</h2>
      <form onSubmit={(e) => void send(e)} noValidate>
        <Field label={t.subject} value={subject} onChange={setSubject} error={problem?.fields.subject} />
        <Field label={t.message} value={body} onChange={setBody} error={problem?.fields.body} multiline />
        <IonButton type="submit">{t.send}</IonButton>
        {sent && <p role="status">{t.announced}</p>}
        <ErrorText text={problem?.detail} />
      </form>
    </section>
  );
}

export function IcsImport({ groupId, onImported }: { groupId: string; onImported: () => Promise<void> }) {
  const [report, setReport] = useState<Schemas['ImportReport'] | null>(null);
  const [problem, setProblem] = useState<Shown | null>(null);

  async function upload(file: File) {
    setReport(null);
    const calendar = await file.text();
    const result = await attempt(() =>
      api.POST('/api/events/import', {
        params: { query: { group_id: groupId } },
        body: calendar,
        bodySerializer: (text: string) => text,
        headers: { 'Content-Type': 'text/calendar' },
      }),
    );
    setProblem(result.problem ?? null);
    if (result.data) {
      setReport(result.data);
      await onImported();
    }
  }

  return (
    <div className="upload">
      <label htmlFor="ics-import">{t.importFile}</label>
      <input
        id="ics-import"
        type="file"
        accept=".ics,text/calendar"
        onChange={(e) => {
          const file = e.target.files?.[0];
          if (file) void upload(file);
          e.target.value = '';
        }}
      />
      {report && (
        <div role="status">
          <p>{t.imported(report.created.length, report.updated.length, report.skipped.length)}</p>
          {report.skipped.length > 0 && (
            <ul>
              {report.skipped.map((item) => (
                <li key={item.uid}>{t.skipped(item.uid, item.reason ?? '')}</li>
              ))}
            </ul>
          )}
        </div>
      )}
      <ErrorText text={problem?.detail} />
    </div>
  );
}
