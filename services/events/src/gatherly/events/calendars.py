"""Events as iCalendar (RFC 5545) files: one event, or a person's feed. A stable UID per event and a SEQUENCE that
grows with each change let calendar apps update the copy they have; a cancelled event stays in the file with
STATUS:CANCELLED so they remove it; times carry their TZID with a VTIMEZONE, so they show in the event's zone."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from zoneinfo import ZoneInfo

import icalendar

from gatherly.events.domain import Event, EventStatus

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
