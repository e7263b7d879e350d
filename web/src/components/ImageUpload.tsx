// Uploads an image through the presigned flow: a slot from the API, the file sent straight to storage (a progress
// bar from XMLHttpRequest's upload progress), completed, then watched until the image is ready or rejected.
import { useId, useRef, useState } from 'react';
import { api, type Schemas } from '../api/client';
import { attempt } from '../api/problem';
import { texts } from '../texts';
import { ErrorText } from './Field';

const t = texts.images;
const POLL_MS = 500;
// Processing takes seconds; past this the person is told and may try again.
const POLL_LIMIT_MS = 60_000;

type Purpose = Schemas['Purpose'];

interface ImageUploadProps {
  label: string;
  purpose: Purpose;
  /** Called with the image once it is ready (its variants set). */
  onReady: (image: Schemas['ImageOut']) => void | Promise<void>;
}

/** Sends the file to the storage's presigned target; progress as a fraction. */
function send(target: Schemas['UploadTargetOut'], file: File, progress: (fraction: number) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open(target.method, target.url);
    request.upload.onprogress = (e) => e.lengthComputable && progress(e.loaded / e.total);
    request.onload = () => (request.status >= 200 && request.status < 300 ? resolve() : reject(new Error(String(request.status))));
    request.onerror = () => reject(new Error('network'));
    if (target.fields) {
      const form = new FormData();
      for (const [name, value] of Object.entries(target.fields)) form.append(name, value);
      form.append('file', file);
      request.send(form);
    } else {
      for (const [name, value] of Object.entries(target.headers)) request.setRequestHeader(name, value);
      request.send(file);
    }
  });
}

export function ImageUpload({ label, purpose, onReady }: ImageUploadProps) {
  const input = useRef<HTMLInputElement>(null);
  const id = useId();
  const [progress, setProgress] = useState<number | null>(null);
  const [stage, setStage] = useState<string | null>(null);
  const [problem, setProblem] = useState<string | undefined>();

  async function upload(file: File) {
    setProblem(undefined);
    setProgress(0);
    setStage(t.uploading);
    const slot = await attempt(() =>
      api.POST('/api/images/uploads', { body: { purpose, content_type: file.type, size_bytes: file.size } }),
    );
    if (!slot.data) {
      const fields = slot.problem?.fields ?? {};
      setProblem(fields.content_type ?? fields.size_bytes ?? slot.problem?.detail);
      return finish();
    }
    try {
      await send(slot.data.upload, file, setProgress);
    } catch {
      setProblem(t.uploadFailed);
      return finish();
    }
    const imageId = slot.data.image_id;
    const path = { params: { path: { image_id: imageId } } };
    const completed = await attempt(() => api.POST('/api/images/{image_id}/complete', path));
    if (!completed.data) {
      setProblem(completed.problem?.detail);
      return finish();
    }
    setStage(t.processing);
    const deadline = Date.now() + POLL_LIMIT_MS;
    let image = completed.data;
    while (image.status !== 'ready' && image.status !== 'rejected') {
      if (Date.now() > deadline) {
        setProblem(t.tooSlow);
        return finish();
      }
      await new Promise((resolve) => window.setTimeout(resolve, POLL_MS));
      const polled = await attempt(() => api.GET('/api/images/{image_id}', path));
      if (polled.data) image = polled.data;
    }
    if (image.status === 'rejected') {
      setProblem(t.rejected(image.reason ?? ''));
      return finish();
    }
    await onReady(image);
    finish(t.done);
  }

  function finish(done: string | null = null) {
    setProgress(null);
    setStage(done);
    if (input.current) input.current.value = '';
  }

  return (
    <div className="upload">
      <label htmlFor={id}>{label}</label>
      <input
        id={id}
        ref={input}
        type="file"
        accept="image/jpeg,image/png,image/webp,image/gif"
        disabled={progress !== null}
        onChange={(e) => {
          const file = e.target.files?.[0];
          if (file) void upload(file);
        }}
      />
      {progress !== null && (
        <progress max={1} value={progress} aria-label={t.progress}>
          {Math.round(progress * 100)}%
        </progress>
      )}
      {stage && <p role="status">{stage}</p>}
      <ErrorText text={problem} />
    </div>
  );
}
