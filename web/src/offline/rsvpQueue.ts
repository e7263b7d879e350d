// RSVPs made offline: kept on the device, shown as pending, sent when the connection returns.
import { api, type Schemas } from '../api/client';
import { attempt, type Shown } from '../api/problem';

const KEY = 'gatherly.pendingRsvps';
export const QUEUE_CHANGED = 'gatherly-rsvp-queue-changed';

export interface PendingRsvp {
  response: Schemas['Answer'];
  guests: number;
}

type Queue = Record<string, PendingRsvp>;

function read(): Queue {
  try {
    return JSON.parse(localStorage.getItem(KEY) ?? '{}') as Queue;
  } catch {
    return {};
  }
}

function write(queue: Queue): void {
  localStorage.setItem(KEY, JSON.stringify(queue));
  window.dispatchEvent(new Event(QUEUE_CHANGED));
}

export function pendingRsvp(eventId: string): PendingRsvp | null {
  return read()[eventId] ?? null;
}

/** At log-out: answers queued by this person must not be sent with the next person's tokens. */
export function forgetRsvps(): void {
  localStorage.removeItem(KEY);
  window.dispatchEvent(new Event(QUEUE_CHANGED));
}

export function queueRsvp(eventId: string, rsvp: PendingRsvp): void {
  write({ ...read(), [eventId]: rsvp }); // the newest answer for an event replaces an older one
}

/** The failures of the last flush (answers the server refused), by event id, for the event page to show. */
export const refused: Record<string, Shown> = {};

export async function sendRsvp(eventId: string, rsvp: PendingRsvp) {
  return attempt(() =>
    api.PUT('/api/events/{event_id}/rsvp', { params: { path: { event_id: eventId } }, body: rsvp }),
  );
}

let flushing = false;

/** Sends every queued RSVP; one that cannot reach the server stays queued, one the server refuses is dropped. */
export async function flushRsvps(): Promise<void> {
  if (flushing) return;
  flushing = true;
  try {
    for (const [eventId, rsvp] of Object.entries(read())) {
      const result = await sendRsvp(eventId, rsvp);
      if (result.status === 0 || result.status >= 500) return; // offline or the server is down: try later
      const queue = read();
      delete queue[eventId];
      if (result.problem) refused[eventId] = result.problem;
      write(queue);
    }
  } finally {
    flushing = false;
  }
}
