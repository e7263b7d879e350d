// The map, loaded on demand: Leaflet is a chunk of its own, fetched only by screens that show a map.
import { lazy, Suspense, type ComponentProps } from 'react';
import type { PinMap as Eager } from './PinMap';

export type { Pin } from './PinMap';

const Lazy = lazy(() => import('./PinMap').then((module) => ({ default: module.PinMap })));

export function PinMap(props: ComponentProps<typeof Eager>) {
  return (
    // The place keeps its size while Leaflet loads; it is named a map region only once it is one to tap.
    <Suspense fallback={<div className="map" aria-busy="true" />}>
      <Lazy {...props} />
    </Suspense>
  );
}
