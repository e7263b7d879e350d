// Edit an event (its leaders): details, times in the event's time zone, the venue on the map, seats, the cover
// picture; for an occurrence of a recurring series, this one or this and the following ones; or cancel it.
import { IonButton } from '@ionic/react';
import { useEffect, useState, type FormEvent } from 'react';
import { useNavigate, useParams } from 'react-router-dom';
import { api, type Schemas } from '../api/client';
import { attempt, type Shown } from '../api/problem';
import { ErrorText, Field } from '../components/Field';
import { ImageUpload } from '../components/ImageUpload';
import { Layout } from '../components/Layout';
import { VenueFields, type Point } from '../components/VenueFields';
import { isoToWallTime, wallTimeToIso } from '../dates';
import { texts } from '../texts';

const t = texts.editEvent;
// The events service hears that an uploaded cover is ready a moment after the images service says so.
const COVER_WAIT_MS = 15_000;

export function EditEvent() {
  const { eventId = '' } = useParams();
  const navigate = useNavigate();
  const [event, setEvent] = useState<Schemas['EventOut'] | null>(null);
  const [title, setTitle] = useState('');
  const [description, setDescription] = useState('');
  const [starts, setStarts] = useState('');
  const [ends, setEnds] = useState('');
  const [timezone, setTimezone] = useState('');
  const [venue, setVenue] = useState('');
  const [address, setAddress] = useState('');
  const [location, setLocation] = useState<Point | null>(null);
  const [capacity, setCapacity] = useState('');
  const [guests, setGuests] = useState('0');
  const [scope, setScope] = useState<Schemas['Scope']>('this');
  const [problem, setProblem] = useState<Shown | null>(null);

  const path = { event_id: eventId };
  useEffect(() => {
    void attempt(() => api.GET('/api/events/{event_id}', { params: { path: { event_id: eventId } } })).then((found) => {
      setProblem(found.problem ?? null);
      const e = found.data;
      if (!e) return;
      setEvent(e);
      setTitle(e.title);
      setDescription(e.description);
      setStarts(isoToWallTime(e.starts_at, e.timezone));
      setEnds(isoToWallTime(e.ends_at, e.timezone));
      setTimezone(e.timezone);
      setVenue(e.venue?.name ?? '');
      setAddress(e.venue?.address ?? '');
      setLocation(e.venue?.location ?? null);
      setCapacity(e.capacity === null ? '' : String(e.capacity));
      setGuests(String(e.guest_limit));
    });
  }, [eventId]);

  async function save(e: FormEvent) {
    e.preventDefault();
    if (!event) return;
    let startsAt: string, endsAt: string;
    try {
      startsAt = wallTimeToIso(starts, timezone);
      endsAt = wallTimeToIso(ends, timezone);
    } catch {
      setProblem({ detail: texts.unknownError, fields: { starts_at: t.badTime } });
      return;
    }
    const changes: Schemas['EventChanges'] = {
      title,
      description,
      timezone,
      capacity: capacity.trim() ? Number(capacity) : null,
      guest_limit: Number(guests || 0),
    };
    // The venue only when changed: an online event without one keeps having none.
    const place = venue.trim() ? { name: venue, address, location } : null;
    if (JSON.stringify(place) !== JSON.stringify(event.venue ?? null)) changes.venue = place;
    // Times only when changed: an occurrence of a series keeps its own date unless the leader moves it.
    if (startsAt !== new Date(event.starts_at).toISOString()) changes.starts_at = startsAt;
    if (endsAt !== new Date(event.ends_at).toISOString()) changes.ends_at = endsAt;
    const query = event.series_id ? { scope } : {};
    const result = await attempt(() => api.PATCH('/api/events/{event_id}', { params: { path, query }, body: changes }));
    setProblem(result.problem ?? null);
    if (result.data) navigate(`/events/${eventId}`);
  }

  async function chooseCover(image: Schemas['ImageOut']) {
    const deadline = Date.now() + COVER_WAIT_MS;
    for (;;) {
      const result = await attempt(() =>
        api.PATCH('/api/events/{event_id}', { params: { path }, body: { cover_image_id: image.id } }),
      );
      if (result.status !== 409 || Date.now() > deadline) {
        setProblem(result.problem ?? null);
        if (result.data) setEvent(result.data);
        return;
      }
      await new Promise((resolve) => window.setTimeout(resolve, 500));
    }
  }

  async function cancel() {
    if (!window.confirm(t.cancelConfirm)) return;
    const query = event?.series_id ? { scope } : {};
    const result = await attempt(() => api.POST('/api/events/{event_id}/cancel', { params: { path, query } }));
    setProblem(result.problem ?? null);
    if (result.data) navigate(`/events/${eventId}`);
  }

  if (!event) {
    return (
      <Layout title={t.title}>
        <ErrorText text={problem?.detail} />
      </Layout>
    );
  }

  const field = (key: string) => problem?.fields[key];
  return (
    <Layout title={t.title}>
      {event.cover && <img className="cover" src={event.cover.medium} alt={t.coverAlt} />}
      <ImageUpload label={t.cover} purpose="event_cover" onReady={chooseCover} />
      <form onSubmit={(e) => void save(e)} noValidate>
        <Field label={texts.newEvent.name} value={title} onChange={setTitle} error={field('title')} />
        <Field label={texts.newEvent.description} value={description} onChange={setDescription} error={field('description')} multiline />
        <Field label={texts.newEvent.starts} type="datetime-local" value={starts} onChange={setStarts} error={field('starts_at')} />
        <Field label={texts.newEvent.ends} type="datetime-local" value={ends} onChange={setEnds} error={field('ends_at')} />
        <Field label={texts.newEvent.timezone} value={timezone} onChange={setTimezone} error={field('timezone')} />
        <VenueFields
          name={venue}
          address={address}
          location={location}
          onName={setVenue}
          onAddress={setAddress}
          onLocation={setLocation}
          error={field}
        />
        <Field label={texts.newEvent.capacity} type="number" value={capacity} onChange={setCapacity} error={field('capacity')} />
        <Field label={texts.newEvent.guests} type="number" value={guests} onChange={setGuests} error={field('guest_limit')} />
        {event.series_id && (
          <fieldset className="scope">
            <legend>{t.scope}</legend>
            <label>
              <input type="radio" name="scope" checked={scope === 'this'} onChange={() => setScope('this')} /> {t.scopeThis}
            </label>
            <label>
              <input type="radio" name="scope" checked={scope === 'following'} onChange={() => setScope('following')} />{' '}
              {t.scopeFollowing}
            </label>
          </fieldset>
        )}
        <ErrorText text={problem?.detail} />
        <IonButton type="submit">{t.save}</IonButton>
        {event.status !== 'cancelled' && (
          <IonButton color="medium" fill="outline" onClick={() => void cancel()}>
            {t.cancel}
          </IonButton>
        )}
      </form>
    </Layout>
  );
}
