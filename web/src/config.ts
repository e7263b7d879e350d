// Settings the server gives the app at run time (GET /config.json): the map tile URL, empty for a plain map.
export interface AppConfig {
  map_tiles_url: string;
  map_attribution: string;
}

let loaded: Promise<AppConfig> | null = null;

export function appConfig(): Promise<AppConfig> {
  loaded ??= fetch('/config.json')
    .then((response) => (response.ok ? (response.json() as Promise<AppConfig>) : Promise.reject(new Error('no config'))))
    .catch(() => ({ map_tiles_url: '', map_attribution: '' }));
  return loaded;
}
