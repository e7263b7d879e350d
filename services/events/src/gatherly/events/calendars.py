"""Events as iCalendar (RFC 5545) files (one event, or a person's feed), and the VEVENTs of an imported file.

A stable UID per event and a SEQUENCE that grows with each change let calendar apps update the copy they have; a
cancelled event stays in the file with STATUS:CANCELLED so they remove it; times carry their TZID with a VTIMEZONE,
so they show in the event's zone. Imported files are read leniently: a VEVENT this service cannot take is skipped
with the reason, not the whole file."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import icalendar

from gatherly.events.domain import (
    Event,
    EventDetails,
    EventStatus,
    ImportEntry,
    InvalidEvent,
    Location,
    Venue,
    details_from,
    valid_timezone,
)
from gatherly.events.recurrence import check_rule, local, occurrence_days

PRODID = "-//Gatherly//events service//EN"
UID_DOMAIN = "events.gatherly"


def event_uid(event: Event) -> str:
    return f"{event.id}@{UID_DOMAIN}"


def calendar_of(
    events: Iterable[tuple[Event, str, bool]], *, public_url: str, now: datetime, name: str | None = None
) -> bytes:
    """A VCALENDAR of (event, group name, show the online URL) triples."""
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    if name:
        calendar.add("x-wr-calname", name)
    shown = list(events)
    for event, group_name, show_online_url in shown:
        calendar.add_component(_vevent(event, group_name, show_online_url, public_url, now))
    # The VTIMEZONE rules cover the years of the events (icalendar's default ends in 2038).
    first = min((e.details.starts_at.date() for e, _, _ in shown), default=now.date())
    last = max((e.details.ends_at.date() for e, _, _ in shown), default=now.date())
    calendar.add_missing_timezones(first_date=date(first.year - 1, 1, 1), last_date=date(last.year + 2, 1, 1))
    return calendar.to_ical()


def _vevent(event: Event, group_name: str, show_online_url: bool, public_url: str, now: datetime) -> icalendar.Event:
    details = event.details
    zone = ZoneInfo(details.timezone)
    vevent = icalendar.Event()
    vevent.add("uid", event_uid(event))
    vevent.add("sequence", event.sequence)
    vevent.add("dtstamp", now)
    vevent.add("created", event.created_at)
    vevent.add("last-modified", event.updated_at)
    vevent.add("dtstart", details.starts_at.astimezone(zone))
    vevent.add("dtend", details.ends_at.astimezone(zone))
    vevent.add("summary", details.title)
    vevent.add("status", "CANCELLED" if event.status is EventStatus.CANCELLED else "CONFIRMED")
    vevent.add("url", f"{public_url}/events/{event.id}")
    vevent.add("categories", [group_name])
    description = details.description
    online_url = details.online_url if show_online_url else None
    if online_url:
        description = f"{description}\n\nJoin online: {online_url}".strip()
    if description:
        vevent.add("description", description)
    venue = details.venue
    if venue is not None:
        vevent.add("location", ", ".join(part for part in (venue.name, venue.address) if part))
        if venue.location is not None:
            vevent.add("geo", (venue.location.lat, venue.location.lng))
    elif online_url:
        vevent.add("location", online_url)
    return vevent


# --- import ---------------------------------------------------------------------------------------------------------

MAX_IMPORT_EVENTS = 1000


def import_entries(body: bytes, now: datetime) -> list[ImportEntry]:
    """The VEVENTs of an uploaded calendar file, each as the event (or series) it describes or the reason it is
    skipped; InvalidEvent when the file is not iCalendar at all or holds too many events. A changed occurrence
    (a VEVENT with RECURRENCE-ID) goes into its series' entry, or gets an entry of its own saying why not."""
    try:
        calendars = icalendar.Calendar.from_ical(body, multiple=True)
        vevents = [(c, _calendar_zone(calendar)) for calendar in calendars for c in calendar.walk("VEVENT")]
    except Exception as error:  # the parser's many ways of failing on hostile input all mean "not iCalendar"
        raise InvalidEvent(f"Not an iCalendar file: {str(error)[:200]}", field="body") from error
    if not vevents:
        raise InvalidEvent("The file has no VEVENT.", field="body")
    if len(vevents) > MAX_IMPORT_EVENTS:
        raise InvalidEvent(f"At most {MAX_IMPORT_EVENTS} events per import.", field="body")
    entries = [_entry(vevent, zone) for vevent, zone in vevents if "recurrence-id" not in vevent]
    changes = [(vevent, zone) for vevent, zone in vevents if "recurrence-id" in vevent]
    return entries + _fold_changes(entries, changes, now)


def _calendar_zone(calendar: Any) -> str | None:
    """The calendar's own time zone (X-WR-TIMEZONE, as Google and Apple calendars write it), if it is IANA."""
    name = str(calendar.get("x-wr-timezone", "")).strip()
    try:
        return valid_timezone(name) if name else None
    except InvalidEvent:
        return None


# UIDs are matched on re-import and echoed in the report: printable text, at most this long.
MAX_UID = 255


def _uid(vevent: Any) -> tuple[str, str | None]:
    """The VEVENT's UID as the report shows it, and why it cannot be used (None: it can)."""
    uid = str(vevent.get("uid", "")).strip()
    if not uid or len(uid) > MAX_UID or not uid.isprintable():
        shown = uid[:MAX_UID] if uid.isprintable() else repr(uid)[:MAX_UID]
        return shown, f"no UID, or one that is not printable text of at most {MAX_UID} characters"
    return uid, None


def _entry(vevent: Any, calendar_zone: str | None) -> ImportEntry:
    uid, unusable = _uid(vevent)
    if unusable is not None:
        return ImportEntry(uid, skipped=unusable)
    rule = vevent.get("rrule")
    if isinstance(rule, list):
        return ImportEntry(uid, skipped="more than one RRULE: schedule the series here instead")
    try:
        starts = vevent.decoded("dtstart")
        ends = vevent.decoded("dtend") if "dtend" in vevent else None
        duration = vevent.decoded("duration") if "duration" in vevent else None
        summary = str(vevent.get("summary", ""))
        description = str(vevent.get("description", ""))
        place = str(vevent.get("location", ""))
        geo = vevent.get("geo")
        location = Location(float(geo.latitude), float(geo.longitude)) if geo is not None else None
        url = str(vevent.get("url", "")).strip()
        cancelled = str(vevent.get("status", "")).upper() == "CANCELLED"
        rule_text = rule.to_ical().decode() if rule is not None else None
        exdates = _dates_of(vevent, "exdate")
        rdates = _dates_of(vevent, "rdate")
    except Exception:  # a property the parser cannot decode (icalendar raises only when a broken one is read)
        return ImportEntry(uid, skipped="a property could not be read")
    try:
        times = _times(starts, ends, duration, calendar_zone)
    except (OverflowError, ValueError):  # e.g. DTSTART in the year 9999 with a DURATION past it
        times = "a time outside the years this service can store"
    if isinstance(times, str):
        return ImportEntry(uid, skipped=times)
    starts_at, ends_at, zone = times
    if len(exdates) > MAX_EXDATES:
        return ImportEntry(uid, skipped=f"more than {MAX_EXDATES} EXDATEs")
    if len(rdates) > MAX_RDATES:
        return ImportEntry(uid, skipped=f"more than {MAX_RDATES} RDATEs")
    if rdates and rule_text is None:
        return ImportEntry(uid, skipped="RDATE without an RRULE: schedule the dates here instead")
    online_url = url if url.startswith(("https://", "http://")) else None
    try:
        details = details_from(
            title=summary,
            description=description,
            starts_at=starts_at,
            ends_at=ends_at,
            timezone=zone,
            venue=Venue(place, "", location) if place.strip() else None,
            online_url=online_url,
        )
        rule_text = check_rule(rule_text) if rule_text is not None else None
    except InvalidEvent as refusal:
        return ImportEntry(uid, skipped=refusal.detail)
    if rule_text is None:
        return ImportEntry(uid, details, cancelled=cancelled)
    try:
        added = _added_days(details, rdates)
    except (OverflowError, ValueError):
        return ImportEntry(uid, skipped="an RDATE outside the years this service can store")
    return ImportEntry(
        uid,
        details,
        cancelled=cancelled,
        rule=rule_text,
        excluded=frozenset(_local_day(moment, zone) for moment in exdates),
        added=frozenset(added),
        changed={day: changed for day, changed in added.items() if changed is not None},
    )


# A series skipping (or adding) more dates than this is not a series any more; the bound keeps a hostile file's work
# small.
MAX_EXDATES = 1000
MAX_RDATES = 1000


def _dates_of(vevent: Any, name: str) -> list[Any]:
    """The EXDATE or RDATE values of a VEVENT (the property may come once with several values, or several times):
    dates, times, or (for RDATE) periods as (start, end or duration)."""
    found = vevent.get(name)
    listed = found if isinstance(found, list) else [found] if found is not None else []
    return [value.dt for values in listed for value in values.dts]


def _added_days(details: EventDetails, rdates: list[Any]) -> dict[date, EventDetails | None]:
    """The local dates an RDATE adds to the series, each with its own details when it starts at another time of
    day than the series (or lasts another time, as a PERIOD); None when it is like the others."""
    zone = ZoneInfo(details.timezone)
    duration = details.ends_at - details.starts_at
    usual = details.starts_at.astimezone(zone).time()
    added: dict[date, EventDetails | None] = {}
    for value in rdates:
        if not isinstance(value, datetime | tuple):  # a date: the series' time of day on it
            added[value] = None
            continue
        starts, last = value if isinstance(value, tuple) else (value, duration)
        starts = starts if starts.tzinfo is not None else starts.replace(tzinfo=zone)
        ends = starts + last if isinstance(last, timedelta) else last
        ends = ends if ends.tzinfo is not None else ends.replace(tzinfo=zone)
        wall = starts.astimezone(zone)
        if wall.time() == usual and ends - starts == duration:
            added[wall.date()] = None
        elif ends > starts:
            added[wall.date()] = replace(details, starts_at=starts.astimezone(UTC), ends_at=ends.astimezone(UTC))
    return added


def _fold_changes(
    entries: list[ImportEntry], changes: list[tuple[Any, str | None]], now: datetime
) -> list[ImportEntry]:
    """Each changed occurrence (RECURRENCE-ID) into the entry of its series, which `entries` is updated with; the
    ones that cannot be taken come back as skipped entries, with the reason and the date they name."""
    series = {e.uid: i for i, e in reversed(list(enumerate(entries))) if e.rule is not None and e.details is not None}
    known: dict[str, set[date]] = {}  # per series: the rule's dates from yesterday on
    taken: set[tuple[str, date]] = set()
    refused: list[ImportEntry] = []
    for vevent, calendar_zone in changes:
        uid, unusable = _uid(vevent)
        index = series.get(uid) if unusable is None else None
        if index is None:
            reason = unusable or "a changed occurrence (RECURRENCE-ID) of no series the file brings in"
            refused.append(ImportEntry(uid, skipped=reason))
            continue
        entry = entries[index]
        outcome = _changed_occurrence(entry, vevent, calendar_zone, now, known, taken)
        if isinstance(outcome, str):
            refused.append(ImportEntry(uid, skipped=outcome))
        else:
            entries[index] = outcome
    return refused


def _changed_occurrence(
    entry: ImportEntry,
    vevent: Any,
    calendar_zone: str | None,
    now: datetime,
    known: dict[str, set[date]],
    taken: set[tuple[str, date]],
) -> ImportEntry | str:
    """The series' entry with one changed (or cancelled) occurrence, or why it is skipped."""
    assert entry.details is not None and entry.rule is not None
    zone = entry.details.timezone
    try:
        named = vevent.get("recurrence-id")
        day = _local_day(vevent.decoded("recurrence-id"), zone)
    except Exception:  # a value the parser cannot decode
        return "RECURRENCE-ID could not be read"
    if str(named.params.get("RANGE", "")).upper() == "THISANDFUTURE":
        return f"RECURRENCE-ID {day} with RANGE=THISANDFUTURE is not imported: edit the series here (scope=following)"
    if (entry.uid, day) in taken:
        return f"RECURRENCE-ID {day} repeated in the file"
    yesterday = local(now, zone).date() - timedelta(days=1)
    if day < yesterday:
        return f"RECURRENCE-ID {day} is in the past: a series comes in from today on"
    if day not in _series_days(entry, yesterday, known) and day not in entry.added:
        return f"RECURRENCE-ID {day}: the series has no occurrence on that date (or it is too far ahead)"
    taken.add((entry.uid, day))
    if str(vevent.get("status", "")).upper() == "CANCELLED":
        return replace(entry, excluded=entry.excluded | {day})
    changed = _entry(vevent, calendar_zone)
    if changed.details is None:
        return f"RECURRENCE-ID {day}: {changed.skipped}"
    return replace(entry, changed={**entry.changed, day: changed.details})


def _series_days(entry: ImportEntry, yesterday: date, known: dict[str, set[date]]) -> set[date]:
    """The rule's local dates from yesterday on, as far as one expansion reads (MAX_AHEAD occurrences), read once
    per series however many changed occurrences name it."""
    assert entry.details is not None and entry.rule is not None
    if entry.uid not in known:
        first = local(entry.details.starts_at, entry.details.timezone)
        days = occurrence_days(entry.rule, first, max(yesterday, first.date()) - timedelta(days=1), date.max)
        known[entry.uid] = set(days)
    return known[entry.uid]


def _local_day(moment: date, zone: str) -> date:
    """The local date an EXDATE names in the event's zone (floating times and dates are local already)."""
    if isinstance(moment, datetime):
        return (moment.astimezone(ZoneInfo(zone)) if moment.tzinfo is not None else moment).date()
    return moment


def _times(starts: Any, ends: Any, duration: Any, calendar_zone: str | None) -> tuple[datetime, datetime, str] | str:
    """(start, end, IANA zone) of a VEVENT, or why it cannot be placed in time.

    All-day events (DTSTART as a date) last from midnight to midnight in the calendar's X-WR-TIMEZONE (UTC
    without one), DTEND exclusive as RFC 5545 has it (a day when neither DTEND nor DURATION is given). Floating
    times (no TZID, no Z) are read in the calendar's X-WR-TIMEZONE; without one they are skipped (hours off)."""
    if not isinstance(starts, datetime) and isinstance(starts, date):
        zone_name = calendar_zone or "UTC"
        zone = ZoneInfo(zone_name)
        first = datetime.combine(starts, time(), zone)
        if isinstance(ends, date) and not isinstance(ends, datetime):
            last = datetime.combine(ends, time(), zone)
        elif isinstance(duration, timedelta):
            last = datetime.combine(starts + timedelta(days=max(1, duration.days)), time(), zone)
        elif ends is None:
            last = datetime.combine(starts + timedelta(days=1), time(), zone)
        else:
            return "an all-day DTSTART needs an all-day DTEND"
        return first.astimezone(UTC), last.astimezone(UTC), zone_name
    if not isinstance(starts, datetime):
        return "DTSTART could not be read"
    named = _zone_name(starts.tzinfo) if starts.tzinfo is not None else calendar_zone
    if named is None:
        return "DTSTART has no IANA time zone (floating without X-WR-TIMEZONE, or an unknown TZID)"
    if starts.tzinfo is None:
        starts = starts.replace(tzinfo=ZoneInfo(named))
    if ends is None and isinstance(duration, timedelta):
        ends = starts + duration
    if not isinstance(ends, datetime):
        return "no DTEND or DURATION with a time"
    if ends.tzinfo is None:
        ends = ends.replace(tzinfo=ZoneInfo(named))
    return starts.astimezone(UTC), ends.astimezone(UTC), named


def _zone_name(zone: tzinfo | None) -> str | None:
    if zone is None:
        return None
    name = getattr(zone, "key", None) or getattr(zone, "zone", None) or ("UTC" if zone is UTC else None)
    try:
        return valid_timezone(name) if isinstance(name, str) else None
    except InvalidEvent:
        return None
