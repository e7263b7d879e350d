// Where an event happens: the venue's name and address, and its place tapped on the map (for scheduling and editing).
import { Field } from './Field';
import { PinMap } from './Map';
import { texts } from '../texts';
import { startingPoint } from '../pages/NewGroup';

const t = texts.newEvent;

export type Point = { lat: number; lng: number };

export function VenueFields(props: {
  name: string;
  address: string;
  location: Point | null;
  onName: (name: string) => void;
  onAddress: (address: string) => void;
  onLocation: (point: Point) => void;
  error: (field: string) => string | undefined;
}) {
  const { location } = props;
  return (
    <>
      <Field label={t.venue} value={props.name} onChange={props.onName} error={props.error('venue.name') ?? props.error('venue')} />
      <Field label={t.address} value={props.address} onChange={props.onAddress} error={props.error('venue.address')} />
      <p>{t.where}</p>
      <PinMap
        label={t.where}
        center={location ?? startingPoint()}
        pins={location ? [{ id: 'picked', kind: 'picked', title: t.where, ...location }] : []}
        onPick={props.onLocation}
      />
      {location && <p className="muted">{`${location.lat.toFixed(4)}, ${location.lng.toFixed(4)}`}</p>}
    </>
  );
}
