// An event: details in both time zones, the venue on a map, RSVP with guests (queued when offline), the waitlist
// position (watched until a seat frees up), attendees, comments, and calendar links; for the group's leaders, editing
// and the check-in list.
import { IonButton, IonItem, IonLabel, IonList } from '@ionic/react';
import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { Link, useNavigate, useParams } from 'react-router-dom';
import { api, type Schemas } from '../api/client';
import { attempt, type Shown } from '../api/problem';
import { useAuth } from '../auth';
import { ErrorText, Field } from '../components/Field';
import { Layout } from '../components/Layout';
import { PinMap } from '../components/Map';
import { eventTimes } from '../dates';
import { pendingRsvp, queueRsvp, QUEUE_CHANGED, refused, sendRsvp, type PendingRsvp } from '../offline/rsvpQueue';
import { texts } from '../texts';

const t = texts.event;
const WAITLIST_POLL_MS = 3000;
const LEADERS = ['organizer', 'co_organizer', 'event_organizer'];

export function EventPage() {
  const { eventId = '' } = useParams();
  const navigate = useNavigate();
  const { loggedIn, me } = useAuth();
  const [event, setEvent] = useState<Schemas['EventOut'] | null>(null);
  const [attendees, setAttendees] = useState<Schemas['AttendeeOut'][]>([]);
  const [comments, setComments] = useState<Schemas['CommentOut'][] | null>(null);
  const [guests, setGuests] = useState('0');
  const [pending, setPending] = useState<PendingRsvp | null>(pendingRsvp(eventId));
  const [comment, setComment] = useState('');
  const [feed, setFeed] = useState<string | null>(null);
  const [problem, setProblem] = useState<Shown | null>(null);
  const [loadProblem, setLoadProblem] = useState<Shown | null>(null);
  const [role, setRole] = useState<string | null>(null);
  const [checkedIn, setCheckedIn] = useState<Set<string>>(new Set());

  const path = { params: { path: { event_id: eventId } } };
  const load = useCallback(async () => {
    const found = await attempt(() => api.GET('/api/events/{event_id}', { params: { path: { event_id: eventId } } }));
    setLoadProblem(found.status === 0 && !found.data ? { detail: texts.notSeenOffline, fields: {} } : (found.problem ?? null));
    if (!found.data) return;
    setEvent(found.data);
    const people = await attempt(() =>
      api.GET('/api/events/{event_id}/attendees', { params: { path: { event_id: eventId }, query: { limit: 100 } } }),
    );
    setAttendees(people.data?.items ?? []);
    if (loggedIn) {
      const group = await attempt(() =>
        api.GET('/api/groups/{group}', { params: { path: { group: found.data!.group.id } } }),
      );
      setRole(group.data?.my_membership?.role ?? null);
      const said = await attempt(() =>
        api.GET('/api/events/{event_id}/comments', { params: { path: { event_id: eventId }, query: { limit: 100 } } }),
      );
      setComments(said.data?.items ?? null); // null: not a member, comments are theirs to read
    }
  }, [eventId, loggedIn]);

  useEffect(() => {
    void load();
  }, [load]);

  // A queued answer that was sent (or refused) when the connection came back: show what the server now says.
  useEffect(() => {
    const changed = () => {
      setPending(pendingRsvp(eventId));
      if (refused[eventId]) setProblem(refused[eventId]);
      void load();
    };
    window.addEventListener(QUEUE_CHANGED, changed);
    return () => window.removeEventListener(QUEUE_CHANGED, changed);
  }, [eventId, load]);

  // On the waitlist: look again every few seconds, so a promotion appears without a reload.
  const waiting = event?.my_rsvp?.status === 'waitlisted';
  useEffect(() => {
    if (!waiting) return;
    const timer = window.setInterval(() => void load(), WAITLIST_POLL_MS);
    return () => window.clearInterval(timer);
  }, [waiting, load]);

  async function respond(response: Schemas['Answer']) {
    const rsvp = { response, guests: response === 'yes' ? Number(guests || 0) : 0 };
    if (!navigator.onLine) {
      queueRsvp(eventId, rsvp);
      return;
    }
    const result = await sendRsvp(eventId, rsvp);
    if (result.status === 0) {
      queueRsvp(eventId, rsvp); // the connection dropped on the way: send it when it is back
      return;
    }
    setProblem(result.problem ?? null);
    if (!result.problem) await load();
  }

  async function postComment(e: FormEvent) {
    e.preventDefault();
    const result = await attempt(() => api.POST('/api/events/{event_id}/comments', { ...path, body: { body: comment } }));
    setProblem(result.problem ?? null);
    if (!result.problem) {
      setComment('');
      await load();
    }
  }

  async function checkIn(userId: string) {
    const result = await attempt(() =>
      api.POST('/api/events/{event_id}/check-in/{user_id}', { params: { path: { event_id: eventId, user_id: userId } } }),
    );
    setProblem(result.problem ?? null);
    if (!result.data) return;
    const attendance = result.data.attendance;
    setCheckedIn((old) => new Set(old).add(userId));
    setEvent((old) => old && { ...old, attendance });
  }

  async function showFeed() {
    const result = await attempt(() => api.GET('/api/calendar/me'));
    setProblem(result.problem ?? null);
    if (result.data) setFeed(result.data.url);
  }

  if (!event) {
    return (
      <Layout title={texts.explore.events}>
        <ErrorText text={loadProblem?.detail} />
      </Layout>
    );
  }

  const times = eventTimes(event.starts_at, event.timezone);
  const mine = event.my_rsvp;
  const where = event.venue?.location;
  const names = new Map(attendees.map((a) => [a.user_id, a.display_name]));
  const leader = role !== null && LEADERS.includes(role);
  return (
    <Layout title={event.title}>
      {event.cover && <img className="cover" src={event.cover.medium} alt="" />}
      <p>
        <Link to={`/groups/${event.group.id}`}>{event.group.name}</Link>
      </p>
      {leader && (
        <IonButton fill="outline" onClick={() => navigate(`/events/${event.id}/edit`)}>
          {texts.organizer.editEvent}
        </IonButton>
      )}
      {event.status === 'cancelled' && <p className="error">{t.cancelled}</p>}
      <dl className="facts">
        <dt>{t.when}</dt>
        <dd>
          {times.event}
          {times.mine && (
            <>
              <br />
              {t.yourTime}: {times.mine}
            </>
          )}
        </dd>
        <dt>{t.where}</dt>
        <dd>{event.venue ? `${event.venue.name}${event.venue.address ? `, ${event.venue.address}` : ''}` : t.online}</dd>
        <dt>{t.attendees}</dt>
        <dd>
          {t.going(event.going_count, event.capacity)}
          {event.waitlist_count > 0 && ` · ${t.waitlist(event.waitlist_count)}`}
        </dd>
      </dl>
      <p className="prose">{event.description}</p>
      {where && <PinMap label={event.venue?.name ?? t.where} center={where} zoom={14} pins={[{ id: event.id, kind: 'event', title: event.title, ...where }]} />}

      <section aria-labelledby="rsvp" className="actions">
        <h2 id="rsvp">{t.rsvp}</h2>
        {!loggedIn ? (
          <IonButton onClick={() => navigate(`/login?next=/events/${event.id}`)}>{t.loginToRsvp}</IonButton>
        ) : (
          <>
            {pending ? (
              <p role="status" className="pending">
                {t.pending}
              </p>
            ) : (
              mine && (
                <p role="status" className="rsvp-status">
                  {mine.status === 'going' ? t.youGo : mine.status === 'waitlisted' ? t.youWait(mine.waitlist_position) : t.youDont}
                </p>
              )
            )}
            {event.guest_limit > 0 && (
              <Field label={`${t.guests} (0–${event.guest_limit})`} type="number" value={guests} onChange={setGuests} error={problem?.fields.guests} />
            )}
            <IonButton onClick={() => void respond('yes')} disabled={event.status === 'cancelled'}>
              {t.yes}
            </IonButton>
            <IonButton fill="outline" onClick={() => void respond('no')} disabled={event.status === 'cancelled'}>
              {t.no}
            </IonButton>
          </>
        )}
        <ErrorText text={problem?.detail} />
      </section>

      <section aria-labelledby="calendar">
        <h2 id="calendar">{t.calendar}</h2>
        <p>
          <a href={`/api/events/${event.id}/ics`} download={`${event.title}.ics`}>
            {t.calendarFile}
          </a>
        </p>
        {loggedIn && (
          <>
            <IonButton fill="outline" onClick={() => void showFeed()}>
              {t.feed}
            </IonButton>
            {feed && (
              <p>
                <code>{feed}</code> <span className="muted">{t.feedHint}</span>
              </p>
            )}
          </>
        )}
      </section>

      <section aria-labelledby="attendees">
        <h2 id="attendees">{leader ? texts.organizer.checkInList : t.attendees}</h2>
        {leader && <p role="status">{texts.organizer.attendance(event.attendance)}</p>}
        <IonList>
          {attendees.map((a) => (
            <IonItem key={a.user_id}>
              <IonLabel>
                {a.display_name ?? '…'}
                {a.guests > 0 && ` +${a.guests}`}
                {a.status === 'waitlisted' && ` (${t.waitingAt(a.waitlist_position)})`}
                {checkedIn.has(a.user_id) && <span className="muted"> · {texts.organizer.checkedIn}</span>}
              </IonLabel>
              {leader && a.status === 'going' && !checkedIn.has(a.user_id) && (
                <IonButton slot="end" size="small" onClick={() => void checkIn(a.user_id)}
                  aria-label={texts.organizer.checkInOf(a.display_name ?? a.user_id)}>
                  {texts.organizer.checkIn}
                </IonButton>
              )}
            </IonItem>
          ))}
        </IonList>
      </section>

      {comments && (
        <section aria-labelledby="comments">
          <h2 id="comments">{t.comments}</h2>
          <IonList>
            {comments.map((c) => (
              <IonItem key={c.id}>
                <IonLabel className="ion-text-wrap">
                  <strong>
                    {c.author_id === null
                      ? t.deletedMember
                      : c.author_id === me?.id
                        ? me.display_name
                        : (names.get(c.author_id) ?? '…')}
                  </strong>{' '}
                  {c.body}
                </IonLabel>
              </IonItem>
            ))}
          </IonList>
          <form onSubmit={postComment}>
            <Field label={t.comment} value={comment} onChange={setComment} error={problem?.fields.body} multiline />
            <IonButton type="submit">{t.post}</IonButton>
          </form>
        </section>
      )}
    </Layout>
  );
}
