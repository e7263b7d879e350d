// A labelled input whose error (from the problem's field errors) is shown under it and announced with it.
import { IonInput, IonTextarea } from '@ionic/react';
import { flushSync } from 'react-dom';

interface FieldProps {
  label: string;
  value: string;
  onChange: (value: string) => void;
  error?: string;
  type?: 'text' | 'email' | 'password' | 'number' | 'date' | 'datetime-local' | 'url';
  autocomplete?: string;
  multiline?: boolean;
  name?: string;
}

export function Field({ label, value, onChange, error, type = 'text', autocomplete, multiline, name }: FieldProps) {
  // Ionic's input events are not React's, so React would render their state change in a later task; Chromium runs
  // input (a key, Enter on the submit button) before such tasks, and a quick Enter submitted the value without its
  // last keystrokes. Rendering at once keeps what a submit reads equal to what is on screen.
  const changed = (text: string) => flushSync(() => onChange(text));
  const common = {
    label,
    labelPlacement: 'stacked' as const,
    fill: 'outline' as const,
    value,
    name,
    errorText: error,
    className: error ? 'ion-invalid ion-touched field' : 'field',
  };
  if (multiline) {
    return <IonTextarea {...common} autoGrow onIonInput={(e) => changed(e.detail.value ?? '')} />;
  }
  return (
    <IonInput
      {...common}
      type={type}
      autocomplete={autocomplete as never}
      onIonInput={(e) => changed(String(e.detail.value ?? ''))}
    />
  );
}

/** The problem's detail, announced to screen readers. */
export function ErrorText({ text }: { text?: string }) {
  if (!text) return null;
  return (
    <p className="error" role="alert">
      {text}
    </p>
  );
}
