// A labelled input whose error (from the problem's field errors) is shown under it and announced with it.
import { IonInput, IonTextarea } from '@ionic/react';

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
    return <IonTextarea {...common} autoGrow onIonInput={(e) => onChange(e.detail.value ?? '')} />;
  }
  return (
    <IonInput
      {...common}
      type={type}
      autocomplete={autocomplete as never}
      onIonInput={(e) => onChange(String(e.detail.value ?? ''))}
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
