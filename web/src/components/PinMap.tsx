// A Leaflet map: pins that open what they stand for, and optionally a place picked by tapping. Without tiles
// (none configured or none reachable) the pins sit on a plain background and the map still works.
import L from 'leaflet';
import 'leaflet/dist/leaflet.css';
import { useEffect, useRef } from 'react';
import { appConfig } from '../config';

export interface Pin {
  id: string;
  lat: number;
  lng: number;
  title: string;
  kind: 'event' | 'group' | 'picked';
  onSelect?: () => void;
}

interface PinMapProps {
  label: string;
  center: { lat: number; lng: number };
  zoom?: number;
  pins: Pin[];
  onPick?: (point: { lat: number; lng: number }) => void;
}

function icon(kind: Pin['kind']): L.DivIcon {
  return L.divIcon({ className: `pin pin-${kind}`, iconSize: [22, 22], iconAnchor: [11, 11] });
}

export function PinMap({ label, center, zoom = 12, pins, onPick }: PinMapProps) {
  const element = useRef<HTMLDivElement>(null);
  const map = useRef<L.Map | null>(null);
  const layer = useRef<L.LayerGroup | null>(null);
  const pick = useRef(onPick);
  pick.current = onPick;

  useEffect(() => {
    if (!element.current) return;
    const created = L.map(element.current, { center: [center.lat, center.lng], zoom, attributionControl: true });
    map.current = created;
    layer.current = L.layerGroup().addTo(created);
    created.on('click', (e: L.LeafletMouseEvent) => pick.current?.({ lat: e.latlng.lat, lng: e.latlng.lng }));
    void appConfig().then((config) => {
      if (config.map_tiles_url && map.current === created) {
        L.tileLayer(config.map_tiles_url, { attribution: config.map_attribution, maxZoom: 19 }).addTo(created);
      }
    });
    // Ionic lays the page out after the first paint: measure again once it has.
    const resize = window.setTimeout(() => created.invalidateSize(), 200);
    return () => {
      window.clearTimeout(resize);
      created.remove();
      map.current = null;
    };
    // The map is made once; the centre and pins follow below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  useEffect(() => {
    map.current?.setView([center.lat, center.lng], map.current.getZoom());
  }, [center.lat, center.lng]);

  useEffect(() => {
    const group = layer.current;
    if (!group) return;
    group.clearLayers();
    for (const pin of pins) {
      const selectable = Boolean(pin.onSelect);
      const marker = L.marker([pin.lat, pin.lng], {
        icon: icon(pin.kind), title: pin.title, alt: pin.title, interactive: selectable, keyboard: selectable,
      });
      marker.addTo(group);
      const node = marker.getElement();
      if (pin.onSelect && node) {
        // Listened to on the pin's own element: a tap or Enter opens what it stands for. A press on a pin must not
        // start dragging the map: the drag captures the pointer and the click would land on the map instead.
        const select = pin.onSelect;
        L.DomEvent.disableClickPropagation(node);
        node.addEventListener('pointerdown', (e) => e.stopPropagation());
        node.addEventListener('click', (e) => {
          e.stopPropagation();
          select();
        });
        node.addEventListener('keydown', (e) => e.key === 'Enter' && select());
      }
      if (!selectable) node?.setAttribute('role', 'img'); // a picture of where, not a control
      node?.setAttribute('aria-label', pin.title);
    }
  }, [pins]);

  return <div ref={element} className="map" role="region" aria-label={label} />;
}
