"""Recurring series: which RRULEs are taken, and the dates of a series' occurrences in its own time zone (no I/O).

A rule is expanded on local wall-clock time (python-dateutil) and each occurrence is then placed in the event's
IANA zone, so a weekly 19:00 meetup stays at 19:00 local across daylight-saving changes. A series has at most one
occurrence per local day (the time of day is the first event's), which is what lets it be topped up by date.

Hostile rules are refused before dateutil sees them: sub-daily frequencies, huge COUNTs, parts a meetup does not
need, and combinations that could never match (dateutil would search until the year 9999 for them)."""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any, NewType
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr

from gatherly.events.domain import (
    DETAIL_FIELDS,
    IMPORTED_FIELDS,
    EventDetails,
    GroupId,
    InvalidEvent,
    Location,
    UserId,
    Venue,
    details_from,
)

# How far ahead occurrences exist as real events (the rest are made as time passes).
HORIZON = timedelta(days=183)
MAX_COUNT = 366
MAX_RULE = 300
MAX_INTERVAL = 99
# Occurrences one expansion may return: a daily rule over the horizon stays under it.
MAX_AHEAD = 200

FREQUENCIES = {"DAILY", "WEEKLY", "MONTHLY", "YEARLY"}
PARTS = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY", "BYMONTH", "WKST"}
WEEKDAY = re.compile(r"^([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")
# The longest month each month can be (February: a leap year's).
MONTH_DAYS = {m: calendar.monthrange(2024, m)[1] for m in range(1, 13)}


def _refuse(detail: str) -> InvalidEvent:
    return InvalidEvent(detail, field="recurrence")


def _ints(value: str, name: str, low: int, high: int) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",")]
    except ValueError:
        raise _refuse(f"{name} takes integers.")
    if not all(low <= abs(n) <= high for n in numbers):
        raise _refuse(f"{name} values must be within ±{low}..{high}.")
    return numbers


def check_rule(text: str) -> str:
    """The RRULE (without a leading `RRULE:`) if it is one this service expands; InvalidEvent otherwise."""
    rule = text.strip().removeprefix("RRULE:").upper()
    if not rule or len(rule) > MAX_RULE or "\n" in rule:
        raise _refuse(f"Give one RRULE of at most {MAX_RULE} characters, e.g. FREQ=WEEKLY;BYDAY=TU.")
    parts: dict[str, str] = {}
    for item in rule.split(";"):
        name, _, value = item.partition("=")
        if name not in PARTS or not value or name in parts:
            allowed = ", ".join(sorted(PARTS))
            raise _refuse(f"{item!r}: a rule has each of {allowed} at most once, and nothing else.")
        parts[name] = value
    frequency = parts.get("FREQ")
    if frequency not in FREQUENCIES:
        raise _refuse("FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY: events recur at most once a day.")
    interval = _ints(parts.get("INTERVAL", "1"), "INTERVAL", 1, MAX_INTERVAL)[0]
    if "COUNT" in parts and not _ints(parts["COUNT"], "COUNT", 1, MAX_COUNT)[0] >= 1:
        raise _refuse(f"COUNT must be between 1 and {MAX_COUNT}.")
    if "COUNT" in parts and "UNTIL" in parts:
        raise _refuse("Give COUNT or UNTIL, not both.")
    days = [WEEKDAY.match(d) for d in parts.get("BYDAY", "").split(",")] if "BYDAY" in parts else []
    if not all(days):
        raise _refuse("BYDAY takes weekdays (MO..SU), in a monthly or yearly rule optionally numbered (2TU, -1FR).")
    ordinals = [int(m.group(1)) for m in days if m and m.group(1)]
    if ordinals and (frequency not in ("MONTHLY", "YEARLY") or not all(1 <= abs(n) <= 5 for n in ordinals)):
        raise _refuse("Numbered weekdays (2TU, -1FR) are for monthly and yearly rules, from -5 to 5.")
    if days and "BYMONTHDAY" in parts:
        raise _refuse("Give BYDAY or BYMONTHDAY, not both.")
    if frequency == "DAILY" and (set(parts) & {"BYMONTHDAY", "BYMONTH"} or (days and interval > 1)):
        raise _refuse("A daily rule takes INTERVAL, or BYDAY with INTERVAL=1.")
    if frequency == "WEEKLY" and set(parts) & {"BYMONTHDAY", "BYMONTH"}:
        raise _refuse("A weekly rule takes INTERVAL and BYDAY.")
    months = _ints(parts["BYMONTH"], "BYMONTH", 1, 12) if "BYMONTH" in parts else list(range(1, 13))
    if any(m < 0 for m in months):
        raise _refuse("BYMONTH takes months 1..12.")
    if "BYMONTHDAY" in parts:
        monthdays = _ints(parts["BYMONTHDAY"], "BYMONTHDAY", 1, 31)
        if not any(abs(d) <= MONTH_DAYS[m] for d in monthdays for m in months):
            raise _refuse("No month of the rule has that day.")
        if interval > 1 and any(abs(d) > 28 for d in monthdays):
            raise _refuse("With INTERVAL above 1, BYMONTHDAY must be within ±28 (every month has those days).")
    if "UNTIL" in parts:
        _until(parts["UNTIL"])
    return rule


def _until(value: str) -> datetime:
    for pattern in ("%Y%m%dT%H%M%SZ", "%Y%m%dT%H%M%S", "%Y%m%d"):
        try:
            return datetime.strptime(value, pattern)
        except ValueError:
            continue
    raise _refuse("UNTIL must be a date (20270630) or a UTC time (20270630T170000Z).")


def _expander(rule: str, first: datetime) -> rrule:
    """The dateutil rule on naive local times from the first occurrence. UNTIL is read as local wall time (a
    UTC UNTIL would mix aware and naive times; a day's difference at the end of a series does not matter)."""
    rule = re.sub(r"UNTIL=(\d{8}(T\d{6})?)Z?", lambda m: f"UNTIL={m.group(1)}", rule)
    expanded = rrulestr(rule, dtstart=first)
    assert isinstance(expanded, rrule)
    return expanded


def local(moment: datetime, zone: str) -> datetime:
    """An aware time as naive wall-clock time in the zone."""
    return moment.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def placed(wall: datetime, zone: str) -> datetime:
    """A naive wall-clock time in the zone, as an aware time. In the spring gap (a time that does not exist)
    zoneinfo keeps the offset before it, i.e. the clock reading an hour later."""
    return wall.replace(tzinfo=ZoneInfo(zone))


def gives(rule: str, first: datetime, day: date) -> bool:
    """Whether the rule has an occurrence on this local date (one step of dateutil: check_rule refuses the rules
    that could search for years)."""
    found = _expander(rule, first).after(datetime.combine(day, time()), inc=True)
    return found is not None and found.date() == day


def occurrence_days(rule: str, first: datetime, after: date | None, until: date) -> list[date]:
    """Local dates of the series' occurrences after `after` (None: from the first) and before `until`, at most
    MAX_AHEAD. `first` is the first event's local wall-clock start."""
    expander = _expander(rule, first)
    # From the start of a day: dateutil drops the first start's microseconds, so the first occurrence (at whole
    # seconds) would come before `first` itself and be lost.
    start = datetime.combine(after + timedelta(days=1) if after else first.date(), time())
    found: list[date] = []
    for moment in expander.xafter(start, count=MAX_AHEAD, inc=True):
        if moment.date() >= until:
            break
        found.append(moment.date())
    return found


# --- what each occurrence is made of ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """An occurrence's details, apart from its date: the local time of day and how long it lasts, the RSVP
    window relative to its start, and the rest as they are."""

    start_time: time
    duration: timedelta
    opens_before: timedelta | None
    closes_before: timedelta | None
    details: EventDetails  # its times are the template's first event's, ignored

    @classmethod
    def of(cls, details: EventDetails) -> Template:
        start = details.starts_at
        return cls(
            start_time=local(start, details.timezone).time(),
            duration=details.ends_at - start,
            opens_before=start - details.rsvp_opens_at if details.rsvp_opens_at else None,
            closes_before=start - details.rsvp_closes_at if details.rsvp_closes_at else None,
            details=details,
        )

    def on(self, day: date) -> EventDetails:
        """The details of the occurrence on this local date."""
        zone = self.details.timezone
        starts = placed(datetime.combine(day, self.start_time), zone)
        return replace(
            self.details,
            starts_at=starts,
            ends_at=starts + self.duration,
            rsvp_opens_at=starts - self.opens_before if self.opens_before is not None else None,
            rsvp_closes_at=starts - self.closes_before if self.closes_before is not None else None,
        )

    def changed(self, day: date, changes: Mapping[str, Any]) -> Template:
        """The template with `changes` (EventDetails fields) applied as they are to its occurrence on `day`; a new
        start must stay on that local date (moving a series to other days takes another rule)."""
        on_day = self.on(day)
        details = details_from(**({name: getattr(on_day, name) for name in DETAIL_FIELDS} | dict(changes)))
        if local(details.starts_at, details.timezone).date() != day:
            raise InvalidEvent(
                "With scope=following the start keeps its date (the time of day may change); to move the series "
                "to other days, cancel it from here and schedule a new one.",
                field="starts_at",
            )
        return Template.of(details)

    def to_json(self) -> dict[str, Any]:
        details, venue = self.details, self.details.venue
        location = venue.location if venue else None
        return {
            "start_time": self.start_time.isoformat(),
            "duration_s": self.duration.total_seconds(),
            "opens_before_s": self.opens_before.total_seconds() if self.opens_before is not None else None,
            "closes_before_s": self.closes_before.total_seconds() if self.closes_before is not None else None,
            "title": details.title,
            "description": details.description,
            "timezone": details.timezone,
            "starts_at": details.starts_at.isoformat(),
            "venue": {
                "name": venue.name,
                "address": venue.address,
                "location": [location.lat, location.lng] if location else None,
            }
            if venue
            else None,
            "online_url": details.online_url,
            "capacity": details.capacity,
            "guest_limit": details.guest_limit,
            "cover_image_id": details.cover_image_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Template:
        venue_data = data["venue"]
        venue = None
        if venue_data is not None:
            where = venue_data["location"]
            venue = Venue(venue_data["name"], venue_data["address"], Location(*where) if where else None)
        starts = datetime.fromisoformat(data["starts_at"])
        duration = timedelta(seconds=data["duration_s"])
        details = EventDetails(
            title=data["title"],
            starts_at=starts,
            ends_at=starts + duration,
            timezone=data["timezone"],
            description=data["description"],
            venue=venue,
            online_url=data["online_url"],
            capacity=data["capacity"],
            guest_limit=data["guest_limit"],
            cover_image_id=data["cover_image_id"],
        )
        opens, closes = data["opens_before_s"], data["closes_before_s"]
        return cls(
            start_time=time.fromisoformat(data["start_time"]),
            duration=duration,
            opens_before=timedelta(seconds=opens) if opens is not None else None,
            closes_before=timedelta(seconds=closes) if closes is not None else None,
            details=details,
        )


# --- the series ------------------------------------------------------------------------------------------------------

SeriesId = NewType("SeriesId", str)


@dataclass(frozen=True)
class Series:
    """A recurring event: its rule from the first event's local start, what its occurrences are made of, the
    last local date made into an event, and the date it was cut at (cancelled from there on), if it was."""

    id: SeriesId
    group_id: GroupId
    rule: str
    first: datetime  # naive wall-clock start of the first event, in the template's time zone
    template: Template
    generated_through: date | None
    ends_before: date | None
    created_by: UserId
    created_at: datetime
    source_uid: str | None = None  # the UID of the recurring VEVENT it was imported from
    # Local dates the rule gives that are not occurrences (an imported VEVENT's EXDATE).
    excluded_days: frozenset[date] = frozenset()
    # Local dates of occurrences besides the rule's (an imported VEVENT's RDATE).
    added_days: frozenset[date] = frozenset()
    # Occurrences that differ from the template (an imported RECURRENCE-ID, or an RDATE at another time of day):
    # by their date in the series, the details the file gives them (IMPORTED_FIELDS are taken from these).
    changed_days: Mapping[date, EventDetails] = field(default_factory=dict)

    def due_days(self, now: datetime) -> list[date]:
        """Local dates of occurrences not made yet, up to the horizon from `now`, whose start is still ahead."""
        zone = self.template.details.timezone
        until = (local(now, zone) + HORIZON).date()
        if self.ends_before is not None:
            until = min(until, self.ends_before)
        return [day for day in self.days_between(self.generated_through, until) if self.details_on(day).starts_at > now]

    def days_between(self, after: date | None, until: date) -> list[date]:
        """The series' local dates after `after` (None: from the first) and before `until`: the rule's and the added
        ones, without the excluded ones."""
        ruled = occurrence_days(self.rule, self.first, after, until)
        added = (day for day in self.added_days if (after is None or day > after) and day < until)
        return sorted({*ruled, *added} - self.excluded_days)

    def details_on(self, day: date) -> EventDetails:
        """The details of the occurrence on this local date: the template's, or the changed ones the file gave it
        (its RSVP window moves along with its start)."""
        details = self.template.on(day)
        change = self.changed_days.get(day)
        if change is None:
            return details
        moved = replace(details, **{name: getattr(change, name) for name in IMPORTED_FIELDS})
        opens, closes = self.template.opens_before, self.template.closes_before
        return replace(
            moved,
            rsvp_opens_at=moved.starts_at - opens if opens is not None else None,
            rsvp_closes_at=moved.starts_at - closes if closes is not None else None,
        )
