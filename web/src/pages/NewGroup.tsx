// Create a group: name, description, topics, city, where it meets (picked on the map), who may join, questions.
import { IonButton, IonSelect, IonSelectOption } from '@ionic/react';
import { useState, type FormEvent } from 'react';
import { useNavigate } from 'react-router-dom';
import { api, type Schemas } from '../api/client';
import { attempt, type Shown } from '../api/problem';
import { ErrorText, Field } from '../components/Field';
import { Layout } from '../components/Layout';
import { PinMap } from '../components/Map';
import { findCity } from '../gazetteer';
import { texts } from '../texts';

const t = texts.newGroup;
const DEFAULT_CENTER = { lat: 52.52, lng: 13.405 };

export function startingPoint(): { lat: number; lng: number } {
  try {
    const place = JSON.parse(localStorage.getItem('gatherly.place') ?? 'null') as { lat: number; lng: number } | null;
    return place ? { lat: place.lat, lng: place.lng } : DEFAULT_CENTER;
  } catch {
    return DEFAULT_CENTER;
  }
}

export function NewGroup() {
  const navigate = useNavigate();
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [topics, setTopics] = useState('');
  const [city, setCity] = useState('');
  const [policy, setPolicy] = useState<Schemas['JoinPolicy']>('open');
  const [questions, setQuestions] = useState('');
  const [center, setCenter] = useState(startingPoint());
  const [location, setLocation] = useState<{ lat: number; lng: number } | null>(null);
  const [problem, setProblem] = useState<Shown | null>(null);

  async function cityChanged(value: string) {
    setCity(value);
    const found = await findCity(value);
    if (found) setCenter({ lat: found.lat, lng: found.lng });
  }

  async function submit(event: FormEvent) {
    event.preventDefault();
    const body: Schemas['NewGroup'] = {
      name,
      description,
      topics: topics.split(',').map((s) => s.trim()).filter(Boolean),
      city: city.trim() || null,
      location,
      visibility: 'public',
      join_policy: policy,
      questions: policy === 'approval' ? questions.split('\n').map((s) => s.trim()).filter(Boolean) : [],
    };
    const result = await attempt(() => api.POST('/api/groups', { body }));
    setProblem(result.problem ?? null);
    if (result.data) navigate(`/groups/${result.data.id}`);
  }

  const field = (key: string) => problem?.fields[key];
  return (
    <Layout title={t.title}>
      <form onSubmit={submit} noValidate>
        <Field label={t.name} value={name} onChange={setName} error={field('name')} />
        <Field label={t.description} value={description} onChange={setDescription} error={field('description')} multiline />
        <Field label={t.topics} value={topics} onChange={setTopics} error={field('topics') ?? field('topics.0')} />
        <Field label={t.city} value={city} onChange={(v) => void cityChanged(v)} error={field('city')} />
        <p id="group-where">{t.where}</p>
        <PinMap
          label={t.where}
          center={center}
          pins={location ? [{ id: 'picked', kind: 'picked', title: t.where, ...location }] : []}
          onPick={setLocation}
        />
        {location && <p className="muted">{`${location.lat.toFixed(4)}, ${location.lng.toFixed(4)}`}</p>}
        <ErrorText text={field('location') ?? field('location.lat')} />
        <IonSelect label={t.policy} labelPlacement="stacked" fill="outline" value={policy} onIonChange={(e) => setPolicy(e.detail.value)}>
          <IonSelectOption value="open">{t.open}</IonSelectOption>
          <IonSelectOption value="approval">{t.approval}</IonSelectOption>
        </IonSelect>
        {policy === 'approval' && (
          <Field label={t.questions} value={questions} onChange={setQuestions} error={field('questions')} multiline />
        )}
        <ErrorText text={problem?.detail} />
        <IonButton type="submit">{t.create}</IonButton>
      </form>
    </Layout>
  );
}
