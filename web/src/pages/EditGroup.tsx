// Edit a group (its organizer): name, description, topics, city, who may join and the questions, and the banner.
import { IonButton, IonSelect, IonSelectOption } from '@ionic/react';
import { useEffect, useState, type FormEvent } from 'react';
import { useNavigate, useParams } from 'react-router-dom';
import { api, type Schemas } from '../api/client';
import { attempt, type Shown } from '../api/problem';
import { ErrorText, Field } from '../components/Field';
import { ImageUpload } from '../components/ImageUpload';
import { Layout } from '../components/Layout';
import { texts } from '../texts';

const t = texts.editGroup;

export function EditGroup() {
  const { groupId = '' } = useParams();
  const navigate = useNavigate();
  const [group, setGroup] = useState<Schemas['GroupOut'] | null>(null);
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [topics, setTopics] = useState('');
  const [city, setCity] = useState('');
  const [policy, setPolicy] = useState<Schemas['JoinPolicy']>('open');
  const [questions, setQuestions] = useState('');
  const [banner, setBanner] = useState<string | null>(null);
  const [problem, setProblem] = useState<Shown | null>(null);

  const path = { params: { path: { group: groupId } } };
  useEffect(() => {
    void attempt(() => api.GET('/api/groups/{group}', { params: { path: { group: groupId } } })).then((found) => {
      setProblem(found.problem ?? null);
      const g = found.data;
      if (!g) return;
      setGroup(g);
      setName(g.name);
      setDescription(g.description);
      setTopics(g.topics.join(', '));
      setCity(g.city ?? '');
      setPolicy(g.join_policy);
      setQuestions(g.questions.join('\n'));
      setBanner(g.banner?.medium ?? null);
    });
  }, [groupId]);

  async function save(e: FormEvent) {
    e.preventDefault();
    const changes: Schemas['GroupChanges'] = {
      name,
      description,
      topics: topics.split(',').map((s) => s.trim()).filter(Boolean),
      city: city.trim() || null,
      join_policy: policy,
      questions: policy === 'approval' ? questions.split('\n').map((s) => s.trim()).filter(Boolean) : [],
    };
    const result = await attempt(() => api.PATCH('/api/groups/{group}', { ...path, body: changes }));
    setProblem(result.problem ?? null);
    if (result.data) navigate(`/groups/${groupId}`);
  }

  async function chooseBanner(image: Schemas['ImageOut']) {
    const result = await attempt(() => api.PATCH('/api/groups/{group}', { ...path, body: { banner_image_id: image.id } }));
    setProblem(result.problem ?? null);
    if (!result.problem) setBanner(image.variants?.medium ?? null);
  }

  if (!group) {
    return (
      <Layout title={t.title}>
        <ErrorText text={problem?.detail} />
      </Layout>
    );
  }

  const field = (key: string) => problem?.fields[key];
  return (
    <Layout title={t.title}>
      {banner && <img className="banner-image" src={banner} alt={t.bannerAlt} />}
      <ImageUpload label={t.banner} purpose="group_banner" onReady={chooseBanner} />
      <form onSubmit={(e) => void save(e)} noValidate>
        <Field label={texts.newGroup.name} value={name} onChange={setName} error={field('name')} />
        <Field label={texts.newGroup.description} value={description} onChange={setDescription} error={field('description')} multiline />
        <Field label={texts.newGroup.topics} value={topics} onChange={setTopics} error={field('topics') ?? field('topics.0')} />
        <Field label={texts.newGroup.city} value={city} onChange={setCity} error={field('city')} />
        <IonSelect label={texts.newGroup.policy} labelPlacement="stacked" fill="outline" value={policy} onIonChange={(e) => setPolicy(e.detail.value)}>
          <IonSelectOption value="open">{texts.newGroup.open}</IonSelectOption>
          <IonSelectOption value="approval">{texts.newGroup.approval}</IonSelectOption>
        </IonSelect>
        {policy === 'approval' && (
          <Field label={texts.newGroup.questions} value={questions} onChange={setQuestions} error={field('questions')} multiline />
        )}
        <ErrorText text={problem?.detail} />
        <IonButton type="submit">{t.save}</IonButton>
      </form>
    </Layout>
  );
}
