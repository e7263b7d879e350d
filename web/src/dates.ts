// Dates shown in the event's time zone and the person's, formatted by the browser's locale.
const locale = () => navigator.language || 'en';

export function browserZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone;
}

export function formatIn(iso: string, timeZone: string): string {
  // dateStyle/timeStyle cannot be combined with timeZoneName: the fields one by one.
  return new Intl.DateTimeFormat(locale(), {
    weekday: 'short', year: 'numeric', month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit', timeZone, timeZoneName: 'short',
  }).format(new Date(iso));
}

/** The offset of `timeZone` from UTC at `instant`, in milliseconds. */
function offsetAt(instant: number, timeZone: string): number {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
  }).formatToParts(new Date(instant));
  const value = (type: string) => Number(parts.find((part) => part.type === type)?.value);
  const wall = Date.UTC(value('year'), value('month') - 1, value('day'), value('hour'), value('minute'), value('second'));
  return wall - (instant - (instant % 1000));
}

/** The event's time and, when the person's zone differs at that instant, theirs too. */
export function eventTimes(iso: string, eventZone: string): { event: string; mine: string | null } {
  const instant = Date.parse(iso);
  const same = offsetAt(instant, eventZone) === offsetAt(instant, browserZone());
  return { event: formatIn(iso, eventZone), mine: same ? null : formatIn(iso, browserZone()) };
}

/** A wall-clock time typed for `timeZone` ("2026-12-01T19:00") as an RFC 3339 instant in UTC. */
export function wallTimeToIso(local: string, timeZone: string): string {
  const guess = Date.parse(`${local}:00Z`);
  let instant = guess - offsetAt(guess, timeZone);
  instant = guess - offsetAt(instant, timeZone); // once more: the offset may differ across a DST change
  return new Date(instant).toISOString();
}

/** An instant as the wall-clock time in `timeZone` ("2026-12-01T19:00"), for a datetime-local field. */
export function isoToWallTime(iso: string, timeZone: string): string {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
  }).formatToParts(new Date(iso));
  const value = (type: string) => parts.find((part) => part.type === type)?.value ?? '';
  return `${value('year')}-${value('month')}-${value('day')}T${value('hour')}:${value('minute')}`;
}
