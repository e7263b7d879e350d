// The map, loaded on demand: Leaflet is a chunk of its own, fetched only by screens that show a map.
import { lazy, Suspense, type ComponentProps } from 'react';
import type { PinMap as Eager } from './PinMap';

export type { Pin } from './PinMap';

const Lazy = lazy(() => import('./PinMap').then((module) => ({ default: module.PinMap })));

export function PinMap(props: ComponentProps<typeof Eager>) {
  return (
    <Suspense fallback={<div className="map" role="region" aria-label={props.label} aria-busy="true" />}>
      <Lazy {...props} />
    </Suspense>
  );
}
