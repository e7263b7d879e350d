// Schedule an event of a group: title, times in the event's time zone, venue picked on the map, seats, guests, and
// a recurrence rule for a series.
import { IonButton } from '@ionic/react';
import { useState, type FormEvent } from 'react';
import { useNavigate, useParams } from 'react-router-dom';
import { api, type Schemas } from '../api/client';
import { attempt, type Shown } from '../api/problem';
import { ErrorText, Field } from '../components/Field';
import { Layout } from '../components/Layout';
import { VenueFields, type Point } from '../components/VenueFields';
import { browserZone, wallTimeToIso } from '../dates';
import { texts } from '../texts';

const t = texts.newEvent;

export function NewEvent() {
  const { groupId = '' } = useParams();
  const navigate = useNavigate();
  const [title, setTitle] = useState('');
  const [description, setDescription] = useState('');
  const [starts, setStarts] = useState('');
  const [ends, setEnds] = useState('');
  const [timezone, setTimezone] = useState(browserZone());
  const [venue, setVenue] = useState('');
  const [address, setAddress] = useState('');
  const [location, setLocation] = useState<Point | null>(null);
  const [capacity, setCapacity] = useState('');
  const [guests, setGuests] = useState('0');
  const [recurrence, setRecurrence] = useState('');
  const [problem, setProblem] = useState<Shown | null>(null);

  async function submit(event: FormEvent) {
    event.preventDefault();
    let startsAt: string, endsAt: string;
    try {
      startsAt = wallTimeToIso(starts, timezone);
      endsAt = wallTimeToIso(ends, timezone);
    } catch {
      setProblem({ detail: texts.unknownError, fields: { [starts ? 'ends_at' : 'starts_at']: 'Choose a date and time.' } });
      return;
    }
    const body: Schemas['NewEvent'] = {
      group_id: groupId,
      title,
      description,
      starts_at: startsAt,
      ends_at: endsAt,
      timezone,
      venue: venue.trim() ? { name: venue, address, location } : null,
      capacity: capacity.trim() ? Number(capacity) : null,
      guest_limit: Number(guests || 0),
      recurrence: recurrence.trim() || null,
    };
    const result = await attempt(() => api.POST('/api/events', { body }));
    setProblem(result.problem ?? null);
    if (result.data) navigate(`/events/${result.data.id}`);
  }

  const field = (key: string) => problem?.fields[key];
  return (
    <Layout title={t.title}>
      <form onSubmit={submit} noValidate>
        <Field label={t.name} value={title} onChange={setTitle} error={field('title')} />
        <Field label={t.description} value={description} onChange={setDescription} error={field('description')} multiline />
        <Field label={t.starts} type="datetime-local" value={starts} onChange={setStarts} error={field('starts_at')} />
        <Field label={t.ends} type="datetime-local" value={ends} onChange={setEnds} error={field('ends_at')} />
        <Field label={t.timezone} value={timezone} onChange={setTimezone} error={field('timezone')} />
        <VenueFields
          name={venue}
          address={address}
          location={location}
          onName={setVenue}
          onAddress={setAddress}
          onLocation={setLocation}
          error={field}
        />
        <Field label={t.capacity} type="number" value={capacity} onChange={setCapacity} error={field('capacity')} />
        <Field label={t.guests} type="number" value={guests} onChange={setGuests} error={field('guest_limit')} />
        <Field label={t.recurrence} value={recurrence} onChange={setRecurrence} error={field('recurrence')} />
        <ErrorText text={problem?.detail} />
        <IonButton type="submit">{t.create}</IonButton>
      </form>
    </Layout>
  );
}
