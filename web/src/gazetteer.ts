// A typed city to coordinates, offline: the city-timezones package's list, loaded only when first needed.
export interface Place {
  name: string;
  lat: number;
  lng: number;
  timezone: string;
}

interface City {
  city: string;
  city_ascii: string;
  lat: number;
  lng: number;
  pop: number;
  country: string;
  timezone: string;
}

/** The most populous city whose name is `query` (any case, accents optional); null when there is none. */
export async function findCity(query: string): Promise<Place | null> {
  const wanted = query.trim().toLowerCase();
  if (!wanted) return null;
  const cities = (await import('city-timezones/data/cityMap.json')).default as City[];
  const matches = cities.filter((c) => c.city.toLowerCase() === wanted || c.city_ascii.toLowerCase() === wanted);
  if (!matches.length) return null;
  const best = matches.reduce((a, b) => (b.pop > a.pop ? b : a));
  return { name: `${best.city}, ${best.country}`, lat: best.lat, lng: best.lng, timezone: best.timezone };
}
