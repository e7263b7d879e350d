// A group: about, members, upcoming events, join (with the organizers' questions) or leave, and for its leaders
// the requests to join, scheduling and importing events, roles, removals and bans, and announcements.
import { IonButton, IonItem, IonLabel, IonList, IonThumbnail } from '@ionic/react';
import { useCallback, useEffect, useState } from 'react';
import { useNavigate, useParams } from 'react-router-dom';
import { api, type Schemas } from '../api/client';
import { attempt, type Shown } from '../api/problem';
import { useAuth } from '../auth';
import { ErrorText, Field } from '../components/Field';
import { Layout } from '../components/Layout';
import { PinMap } from '../components/Map';
import { eventTimes } from '../dates';
import { texts } from '../texts';
import { Announce, IcsImport, MemberTools } from './GroupTools';

const t = texts.group;
// Who sees requests, changes roles, bans and announces; who schedules and imports events (domain.py of groups).
const MANAGERS = ['organizer', 'co_organizer'];
const LEADERS = [...MANAGERS, 'event_organizer'];

export function GroupPage() {
  const { groupId = '' } = useParams();
  const navigate = useNavigate();
  const { loggedIn, me } = useAuth();
  const [group, setGroup] = useState<Schemas['GroupOut'] | null>(null);
  const [members, setMembers] = useState<Schemas['MemberOut'][]>([]);
  const [events, setEvents] = useState<Schemas['EventSummary'][]>([]);
  const [requests, setRequests] = useState<Schemas['JoinRequestOut'][]>([]);
  const [answers, setAnswers] = useState<string[]>([]);
  const [problem, setProblem] = useState<Shown | null>(null);

  const path = { params: { path: { group: groupId } } };
  const load = useCallback(async () => {
    const found = await attempt(() => api.GET('/api/groups/{group}', { params: { path: { group: groupId } } }));
    setProblem(found.problem ?? null);
    if (!found.data) return;
    setGroup(found.data);
    const id = found.data.id;
    const [memberPage, eventPage] = await Promise.all([
      attempt(() => api.GET('/api/groups/{group}/members', { params: { path: { group: id }, query: { limit: 100 } } })),
      attempt(() => api.GET('/api/events', { params: { query: { group_id: id, limit: 100 } } })),
    ]);
    setMembers(memberPage.data?.items ?? []);
    setEvents(eventPage.data?.items ?? []);
    if (MANAGERS.includes(found.data.my_membership?.role ?? '')) {
      const pending = await attempt(() => api.GET('/api/groups/{group}/requests', { params: { path: { group: id } } }));
      setRequests(pending.data?.items ?? []);
    }
  }, [groupId]);

  useEffect(() => {
    void load();
  }, [load, loggedIn]);

  async function act(call: () => Promise<{ data?: unknown; error?: unknown; response: Response }>) {
    const result = await attempt(call);
    setProblem(result.problem ?? null);
    if (!result.problem) await load();
  }

  if (!group) {
    return (
      <Layout title={texts.explore.groups}>
        <ErrorText text={problem?.detail} />
      </Layout>
    );
  }

  const membership = group.my_membership;
  const leader = LEADERS.includes(membership?.role ?? '');
  const manager = MANAGERS.includes(membership?.role ?? '');
  const joined = membership?.status === 'member';

  return (
    <Layout title={group.name}>
      {group.banner && <img className="banner-image" src={group.banner.medium} alt="" />}
      <p>
        {t.membersCount(group.member_count)}
        {group.city && ` · ${group.city}`}
        {group.topics.length > 0 && ` · ${group.topics.join(', ')}`}
      </p>
      <section aria-labelledby="about">
        <h2 id="about">{t.about}</h2>
        <p className="prose">{group.description}</p>
      </section>
      {group.location && (
        <PinMap label={group.name} center={group.location} pins={[{ id: group.id, kind: 'group', title: group.name, ...group.location }]} />
      )}

      <section aria-label={t.join} className="actions">
        {!loggedIn && <IonButton onClick={() => navigate(`/login?next=/groups/${group.id}`)}>{t.loginToJoin}</IonButton>}
        {loggedIn && !membership && (
          <form
            onSubmit={(e) => {
              e.preventDefault();
              void act(() => api.POST('/api/groups/{group}/join', { ...path, body: { answers } }));
            }}
          >
            {group.questions.length > 0 && <h3>{t.answers}</h3>}
            {group.questions.map((question, index) => (
              <Field
                key={question}
                label={question}
                value={answers[index] ?? ''}
                onChange={(value) => setAnswers((old) => Object.assign([...old], { [index]: value }))}
                error={problem?.fields[`answers.${index}`] ?? problem?.fields.answers}
              />
            ))}
            <IonButton type="submit">{group.join_policy === 'approval' ? t.requestJoin : t.join}</IonButton>
          </form>
        )}
        {membership?.status === 'pending' && <p role="status">{t.pending}</p>}
        {membership?.status === 'banned' && <p role="status">{t.banned}</p>}
        {joined && (
          <>
            <p role="status">{t.member(membership?.role ?? 'member')}</p>
            {leader && <IonButton onClick={() => navigate(`/groups/${group.id}/events/new`)}>{t.newEvent}</IonButton>}
            {membership?.role === 'organizer' && (
              <IonButton fill="outline" onClick={() => navigate(`/groups/${group.id}/edit`)}>
                {texts.organizer.edit}
              </IonButton>
            )}
            <IonButton fill="outline" color="medium" onClick={() => void act(() => api.DELETE('/api/groups/{group}/members/me', path))}>
              {t.leave}
            </IonButton>
          </>
        )}
        <ErrorText text={problem?.detail} />
      </section>

      {manager && (
        <section aria-labelledby="requests">
          <h2 id="requests">{t.requests}</h2>
          {requests.length === 0 && <p>{t.noRequests}</p>}
          <IonList>
            {requests.map((request) => {
              const target = { params: { path: { group: group.id, user_id: request.user_id } } };
              return (
                <IonItem key={request.user_id}>
                  <IonLabel>
                    <h3>{request.display_name ?? request.user_id}</h3>
                    {request.answers.map((a) => (
                      <p key={a.question}>
                        {a.question}: {a.answer}
                      </p>
                    ))}
                  </IonLabel>
                  <IonButton onClick={() => void act(() => api.POST('/api/groups/{group}/requests/{user_id}/approve', target))}>
                    {t.approve}
                  </IonButton>
                  <IonButton color="medium" onClick={() => void act(() => api.POST('/api/groups/{group}/requests/{user_id}/deny', target))}>
                    {t.deny}
                  </IonButton>
                </IonItem>
              );
            })}
          </IonList>
        </section>
      )}

      {manager && <Announce groupId={group.id} />}

      <section aria-labelledby="events">
        <h2 id="events">{t.events}</h2>
        {leader && <IcsImport groupId={group.id} onImported={load} />}
        <IonList>
          {events.map((e) => (
            <IonItem key={e.id} button detail={false} onClick={() => navigate(`/events/${e.id}`)}>
              {e.cover && (
                <IonThumbnail slot="start">
                  <img src={e.cover.thumb} alt="" />
                </IonThumbnail>
              )}
              <IonLabel>
                <h3>{e.title}</h3>
                <p>{eventTimes(e.starts_at, e.timezone).event}</p>
              </IonLabel>
            </IonItem>
          ))}
        </IonList>
      </section>

      <section aria-labelledby="members">
        <h2 id="members">{t.members}</h2>
        <IonList>
          {members.map((m) => (
            <IonItem key={m.user_id}>
              <IonLabel>
                {m.display_name ?? '…'} <span className="muted">{m.role.replace('_', '-')}</span>
              </IonLabel>
              {manager && m.user_id !== me?.id && m.role !== 'organizer' && (
                <MemberTools groupId={group.id} member={m} onChanged={load} onProblem={setProblem} />
              )}
            </IonItem>
          ))}
        </IonList>
      </section>
    </Layout>
  );
}
