// Explore near me: a place (the browser's location or a typed city), filters, and what is near on a map and a list.
import { IonButton, IonItem, IonLabel, IonList, IonSelect, IonSelectOption, IonThumbnail } from '@ionic/react';
import { useEffect, useMemo, useState, type FormEvent } from 'react';
import { useNavigate } from 'react-router-dom';
import { api, type Schemas } from '../api/client';
import { attempt, type Shown } from '../api/problem';
import { ErrorText, Field } from '../components/Field';
import { Layout } from '../components/Layout';
import { PinMap, type Pin } from '../components/Map';
import { eventTimes } from '../dates';
import { findCity, type Place } from '../gazetteer';
import { texts } from '../texts';

const t = texts.explore;
const PLACE = 'gatherly.place';
const DISTANCES = [5, 10, 25, 50, 100, 250];

function savedPlace(): Place | null {
  try {
    return JSON.parse(localStorage.getItem(PLACE) ?? 'null') as Place | null;
  } catch {
    return null;
  }
}

export function Explore() {
  const navigate = useNavigate();
  const [place, setPlace] = useState<Place | null>(savedPlace());
  const [city, setCity] = useState('');
  const [cityError, setCityError] = useState<string | undefined>();
  const [topic, setTopic] = useState('');
  const [from, setFrom] = useState('');
  const [to, setTo] = useState('');
  const [radius, setRadius] = useState(25);
  const [events, setEvents] = useState<Schemas['EventSummary'][]>([]);
  const [groups, setGroups] = useState<Schemas['GroupSummary'][]>([]);
  const [problem, setProblem] = useState<Shown | null>(null);

  function choose(next: Place) {
    localStorage.setItem(PLACE, JSON.stringify(next));
    setPlace(next);
  }

  function locateMe() {
    navigator.geolocation.getCurrentPosition(
      (position) =>
        choose({ name: 'your location', lat: position.coords.latitude, lng: position.coords.longitude, timezone: '' }),
      () => setCityError(t.noLocation),
    );
  }

  async function typeCity(event: FormEvent) {
    event.preventDefault();
    const found = await findCity(city);
    setCityError(found ? undefined : t.noCity(city));
    if (found) choose(found);
  }

  useEffect(() => {
    if (!place) return;
    const near = `${place.lat},${place.lng}`;
    const topicFilter = topic.trim() || undefined;
    void Promise.all([
      attempt(() =>
        api.GET('/api/events', {
          params: {
            query: {
              near,
              radius_km: radius,
              topic: topicFilter,
              from: from ? new Date(`${from}T00:00:00`).toISOString() : undefined,
              to: to ? new Date(`${to}T23:59:59`).toISOString() : undefined,
              limit: 100,
            },
          },
        }),
      ),
      attempt(() => api.GET('/api/groups', { params: { query: { near, radius_km: radius, topic: topicFilter, limit: 100 } } })),
    ]).then(([eventPage, groupPage]) => {
      setProblem(eventPage.problem ?? groupPage.problem ?? null);
      setEvents(eventPage.data?.items ?? []);
      setGroups(groupPage.data?.items ?? []);
    });
  }, [place, topic, from, to, radius]);

  const pins = useMemo<Pin[]>(
    () => [
      ...events.flatMap((e) =>
        e.venue?.location
          ? [{ id: e.id, kind: 'event' as const, title: e.title, ...e.venue.location, onSelect: () => navigate(`/events/${e.id}`) }]
          : [],
      ),
      ...groups.flatMap((g) =>
        g.location
          ? [{ id: g.id, kind: 'group' as const, title: g.name, ...g.location, onSelect: () => navigate(`/groups/${g.id}`) }]
          : [],
      ),
    ],
    [events, groups, navigate],
  );

  return (
    <Layout title={t.title}>
      <div className="toolbar-row">
        <IonButton onClick={locateMe}>{t.useLocation}</IonButton>
        <form onSubmit={typeCity} className="inline-form">
          <Field label={t.city} value={city} onChange={setCity} error={cityError} autocomplete="address-level2" />
          <IonButton type="submit">{t.findCity}</IonButton>
        </form>
        <IonButton fill="outline" onClick={() => navigate('/groups/new')}>
          {texts.nav.newGroup}
        </IonButton>
      </div>
      {!place ? (
        <p>{t.pickPlace}</p>
      ) : (
        <>
          <p role="status">{t.near(place.name)}</p>
          <div className="filters">
            <Field label={t.topic} value={topic} onChange={setTopic} />
            <Field label={t.from} type="date" value={from} onChange={setFrom} />
            <Field label={t.to} type="date" value={to} onChange={setTo} />
            <IonSelect
              label={t.distance}
              labelPlacement="stacked"
              fill="outline"
              value={radius}
              onIonChange={(e) => setRadius(Number(e.detail.value))}
            >
              {DISTANCES.map((km) => (
                <IonSelectOption key={km} value={km}>
                  {t.km(km)}
                </IonSelectOption>
              ))}
            </IonSelect>
          </div>
          <ErrorText text={problem?.detail} />
          <PinMap label={t.map} center={place} zoom={11} pins={pins} />
          <div className="columns">
            <section aria-labelledby="events-heading">
              <h2 id="events-heading">{t.events}</h2>
              {events.length === 0 && <p>{t.noEvents}</p>}
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
                      <p>
                        {eventTimes(e.starts_at, e.timezone).event} · {e.group.name}
                        {e.distance_km != null && ` · ${e.distance_km.toFixed(1)} km`}
                      </p>
                    </IonLabel>
                  </IonItem>
                ))}
              </IonList>
            </section>
            <section aria-labelledby="groups-heading">
              <h2 id="groups-heading">{t.groups}</h2>
              {groups.length === 0 && <p>{t.noGroups}</p>}
              <IonList>
                {groups.map((g) => (
                  <IonItem key={g.id} button detail={false} onClick={() => navigate(`/groups/${g.id}`)}>
                    <IonLabel>
                      <h3>{g.name}</h3>
                      <p>
                        {texts.group.membersCount(g.member_count)}
                        {g.city && ` · ${g.city}`}
                        {g.topics.length > 0 && ` · ${g.topics.join(', ')}`}
                      </p>
                    </IonLabel>
                  </IonItem>
                ))}
              </IonList>
            </section>
          </div>
        </>
      )}
    </Layout>
  );
}
