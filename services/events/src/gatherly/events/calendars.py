"""Events as iCalendar (RFC 5545) files (one event, or a person's feed), and the VEVENTs of an imported file.

A stable UID per event and a SEQUENCE that grows with each change let calendar apps update the copy they have; a
cancelled event stays in the file with STATUS:CANCELLED so they remove it; times carry their TZID with a VTIMEZONE,
so they show in the event's zone. Imported files are read leniently: a VEVENT this service cannot take is skipped
with the reason, not the whole file."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import icalendar

from gatherly.events.domain import (
    Event,
    EventStatus,
    ImportEntry,
    InvalidEvent,
    Location,
    Venue,
    details_from,
    valid_timezone,
)
from gatherly.events.recurrence import check_rule

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


def import_entries(body: bytes) -> list[ImportEntry]:
    """The VEVENTs of an uploaded calendar file, each as the event (or series) it describes or the reason it is
    skipped; InvalidEvent when the file is not iCalendar at all or holds too many events."""
    try:
        calendars = icalendar.Calendar.from_ical(body, multiple=True)
        vevents = [(c, _calendar_zone(calendar)) for calendar in calendars for c in calendar.walk("VEVENT")]
    except Exception as error:  # the parser's many ways of failing on hostile input all mean "not iCalendar"
        raise InvalidEvent(f"Not an iCalendar file: {str(error)[:200]}", field="body") from error
    if not vevents:
        raise InvalidEvent("The file has no VEVENT.", field="body")
    if len(vevents) > MAX_IMPORT_EVENTS:
        raise InvalidEvent(f"At most {MAX_IMPORT_EVENTS} events per import.", field="body")
    return [_entry(vevent, zone) for vevent, zone in vevents]


def _calendar_zone(calendar: Any) -> str | None:
    """The calendar's own time zone (X-WR-TIMEZONE, as Google and Apple calendars write it), if it is IANA."""
    name = str(calendar.get("x-wr-timezone", "")).strip()
    try:
        return valid_timezone(name) if name else None
    except InvalidEvent:
        return None


# UIDs are matched on re-import and echoed in the report: printable text, at most this long.
MAX_UID = 255


def _entry(vevent: Any, calendar_zone: str | None) -> ImportEntry:
    uid = str(vevent.get("uid", "")).strip()
    if not uid or len(uid) > MAX_UID or not uid.isprintable():
        shown = uid[:MAX_UID] if uid.isprintable() else repr(uid)[:MAX_UID]
        return ImportEntry(shown, skipped=f"no UID, or one that is not printable text of at most {MAX_UID} characters")
    if "recurrence-id" in vevent:
        return ImportEntry(uid, skipped="a changed occurrence (RECURRENCE-ID): its series comes in, edit it here")
    if "rdate" in vevent:
        return ImportEntry(uid, skipped="RDATE is not imported: schedule the extra dates here instead")
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
        exdates = _exdates(vevent)
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
    excluded = frozenset(_local_day(moment, zone) for moment in exdates) if rule_text is not None else frozenset()
    return ImportEntry(uid, details, cancelled=cancelled, rule=rule_text, excluded=excluded)


# A series skipping more dates than this is not a series any more; the bound keeps a hostile file's work small.
MAX_EXDATES = 1000


def _exdates(vevent: Any) -> list[date]:
    """The EXDATE values of a VEVENT (the property may come once with several values, or several times)."""
    found = vevent.get("exdate")
    listed = found if isinstance(found, list) else [found] if found is not None else []
    return [value.dt for values in listed for value in values.dts]


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
