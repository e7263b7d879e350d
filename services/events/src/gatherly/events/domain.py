"""What an event, an RSVP and a waitlist are, and the whole decisions they obey: no I/O, no framework.

Who may do what (decided here, used by every use case):
- An event is seen by anyone when its group is public, and by the group's members only when it is private: for
  anyone else a private group's events do not exist (EventNotFound). A deleted group's events are gone for all.
- Leaders of the group (organizer, co_organizer, event_organizer) schedule, edit and cancel its events.
- Members of the group answer RSVPs. The online URL is shown to people going only.

Seats (Attendance): a yes takes 1 + guests seats. Nobody gets a seat while someone is waiting before them, so a
new yes joins the back of the waitlist when anyone waits. Whenever seats free up (a no, fewer guests, more
capacity, a member leaving the group) the head of the waitlist gets a seat if its whole party fits, then the next,
in strict FIFO order: a party of 3 at the head is not skipped for a party of 1 behind it."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, tzinfo
from enum import StrEnum
from typing import Any, NewType, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gatherly.contracts.groups import LEADER_ROLES
from gatherly.kernel.clock import time_problem
from gatherly.kernel.geo import EARTH_RADIUS_KM, Point, decimal_number
from gatherly.kernel.text import name_problem, text_problem

EventId = NewType("EventId", str)
GroupId = NewType("GroupId", str)
UserId = NewType("UserId", str)

MAX_TITLE = 200
MAX_DESCRIPTION = 10_000
MAX_VENUE_NAME = 200
MAX_ADDRESS = 500
MAX_URL = 2000
MAX_GUEST_LIMIT = 20
MAX_CAPACITY = 100_000


# --- refusals (api.py maps each class to an HTTP status in one table) ------------------------------------------------


class Refusal(Exception):
    """A rule of the events service said no; `detail` tells the person why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class EventNotFound(Refusal):
    """No such event, or one the caller may not know of (a private group's event, for a non-member)."""


class GroupNotFound(Refusal):
    """No such group is known here (deleted, or its creation has not reached this service yet)."""


class NotALeader(Refusal):
    """Only the group's organizers, co-organizers and event organizers may do this."""


class NotAMember(Refusal):
    """Only members of the group may do this."""


class EventCancelled(Refusal):
    """The event was cancelled: nothing about it changes any more."""


class EventStarted(Refusal):
    """The event has started (or is over): nothing about it changes any more."""


class RsvpWindowClosed(Refusal):
    """Answers are taken between rsvp_opens_at and rsvp_closes_at only."""


class NotEnoughSeats(Refusal):
    """More guests than the seats still free (and nobody waiting for them)."""


class CommentNotFound(Refusal):
    """No such comment on this event."""


class NotTheAuthor(Refusal):
    """Only the author edits a comment; the author or a leader deletes it."""


class NotGoing(Refusal):
    """Only people going to the event can be checked in."""


class FeedNotFound(Refusal):
    """No calendar feed has this token (never issued, or revoked)."""


class LoginRequired(Refusal):
    """Only a logged-in person can ask this (e.g. for the events they are going to)."""


class CoverNotReady(Refusal):
    """The cover image is not a ready event cover (yet): unknown, still being processed, rejected, deleted, or
    uploaded for another purpose."""


class InvalidEvent(Refusal):
    """A field of the request breaks a rule; `field` names it."""

    def __init__(self, detail: str, *, field: str) -> None:
        super().__init__(detail)
        self.field = field


# --- the group as this service knows it (read models) ----------------------------------------------------------------


class Visibility(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True)
class GroupSummary:
    """The events service's copy of a group (from group events)."""

    id: GroupId
    name: str
    visibility: Visibility
    topics: tuple[str, ...] = ()
    city: str | None = None


def is_leader(role: str | None) -> bool:
    return role in LEADER_ROLES


def may_see(group: GroupSummary | None, role: str | None) -> bool:
    """Whether someone with this role in the group (None: not a member) may know the group's events exist."""
    return may_see_in(group.visibility if group is not None else None, role)


def may_see_in(visibility: Visibility | None, role: str | None) -> bool:
    """`may_see` from the group's visibility alone (None: the group is deleted or not known yet)."""
    if visibility is None:
        return False
    return visibility is Visibility.PUBLIC or role is not None


def check_leader(role: str | None) -> None:
    if not is_leader(role):
        raise NotALeader("Only the group's organizers, co-organizers and event organizers may do this.")


def check_member(role: str | None) -> None:
    if role is None:
        raise NotAMember("Only members of the group may do this: join the group first.")


# --- the event --------------------------------------------------------------------------------------------------------


Location = Point  # a map position: kernel/geo.py measures distances between them


@dataclass(frozen=True)
class Venue:
    name: str
    address: str = ""
    location: Location | None = None


@dataclass(frozen=True)
class EventDetails:
    """What leaders decide about an event. Times are aware datetimes (UTC once stored); `timezone` is the IANA
    zone the event happens in (calendars show it there). capacity None = unlimited. The RSVP window defaults to
    open from scheduling until the start."""

    title: str
    starts_at: datetime
    ends_at: datetime
    timezone: str
    description: str = ""
    venue: Venue | None = None
    online_url: str | None = None
    capacity: int | None = None
    guest_limit: int = 0
    rsvp_opens_at: datetime | None = None
    rsvp_closes_at: datetime | None = None
    cover_image_id: str | None = None


DETAIL_FIELDS = tuple(f.name for f in fields(EventDetails))
# Changes people going are told about (event.updated carries the changed field names either way).
TIME_OR_PLACE = frozenset({"starts_at", "ends_at", "timezone", "venue", "online_url"})


# Control characters (C0 but newline and tab, DEL, C1): terminal escapes and worse in text shown to others.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _text(value: str, field_name: str, limit: int, *, required: bool = False, one_line: bool = False) -> str:
    """The text as stored, or InvalidEvent naming the field. JSON bodies passed the kernel's text policy already
    (no NUL, no lone surrogate); imported calendar files did not, so it is checked here too. One-line texts (a
    title, a place) have their whitespace runs made one space and refuse what names refuse (bidi overrides, nothing
    visible); longer texts keep their lines."""
    value = " ".join(value.split()) if one_line else value.replace("\r\n", "\n").strip()
    problem = text_problem(value) or (name_problem(value) if one_line else None)
    if problem is None and _CONTROLS.search(value):
        problem = "must not contain control characters"
    if problem is not None:
        raise InvalidEvent(f"{field_name} {problem}.", field=field_name)
    if required and not value:
        raise InvalidEvent(f"{field_name} must not be empty.", field=field_name)
    if len(value) > limit:
        raise InvalidEvent(f"{field_name} is longer than {limit} characters.", field=field_name)
    return value


def valid_timezone(name: str) -> str:
    """An IANA zone name (e.g. Europe/Berlin); offsets and abbreviations are refused because they ignore DST."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidEvent(f"{name!r} is not an IANA time zone (e.g. Europe/Berlin).", field="timezone")
    return name


def valid_location(location: Location, field_name: str) -> Location:
    ok = all(math.isfinite(v) for v in (location.lat, location.lng))
    if not ok or not -90 <= location.lat <= 90 or not -180 <= location.lng <= 180:
        raise InvalidEvent("lat must be within -90..90 and lng within -180..180.", field=field_name)
    return location


def _is_web_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- a port that is not a number raises here
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return parts.scheme in ("https", "http") and bool(parts.hostname) and " " not in value


_TIMES = ("starts_at", "ends_at", "rsvp_opens_at", "rsvp_closes_at")


def _aware(value: datetime | None, field_name: str, zone: tzinfo = UTC) -> datetime | None:
    """The time, if it names an instant that can be stored, and shown in `zone` (the event's time zone, where its
    calendars show it); InvalidEvent naming the field otherwise."""
    if value is None:
        return None
    if value.utcoffset() is None:
        raise InvalidEvent(
            "Give the time with its offset (RFC 3339), e.g. 2030-05-01T19:00:00+02:00.", field=field_name
        )
    if problem := time_problem(value, zone):
        raise InvalidEvent(f"{field_name} {problem}.", field=field_name)
    return value


def details_from(**values: Any) -> EventDetails:
    """EventDetails checked field by field and as a whole (start before end, a place to go, a sane window)."""
    details = EventDetails(**values)
    venue = details.venue
    if venue is not None:
        venue = Venue(
            name=_text(venue.name, "venue.name", MAX_VENUE_NAME, required=True, one_line=True),
            address=_text(venue.address, "venue.address", MAX_ADDRESS, one_line=True),
            location=valid_location(venue.location, "venue.location") if venue.location else None,
        )
    online_url = _text(details.online_url, "online_url", MAX_URL, one_line=True) if details.online_url else None
    if online_url is not None and not _is_web_url(online_url):
        raise InvalidEvent("online_url must be an http(s) URL.", field="online_url")
    if venue is None and online_url is None:
        raise InvalidEvent("Give a venue, an online_url, or both.", field="venue")
    for name in _TIMES:
        _aware(getattr(details, name), name)
    if details.ends_at <= details.starts_at:
        raise InvalidEvent("ends_at must be after starts_at.", field="ends_at")
    if details.capacity is not None and not 1 <= details.capacity <= MAX_CAPACITY:
        raise InvalidEvent(f"capacity must be between 1 and {MAX_CAPACITY} (or null: unlimited).", field="capacity")
    if not 0 <= details.guest_limit <= MAX_GUEST_LIMIT:
        raise InvalidEvent(f"guest_limit must be between 0 and {MAX_GUEST_LIMIT}.", field="guest_limit")
    opens, closes = details.rsvp_opens_at, details.rsvp_closes_at
    if closes is not None and closes > details.starts_at:
        raise InvalidEvent("rsvp_closes_at must not be after starts_at.", field="rsvp_closes_at")
    if opens is not None and opens >= (closes or details.starts_at):
        raise InvalidEvent("rsvp_opens_at must be before rsvp_closes_at and starts_at.", field="rsvp_opens_at")
    checked = replace(
        details,
        title=_text(details.title, "title", MAX_TITLE, required=True, one_line=True),
        description=_text(details.description, "description", MAX_DESCRIPTION),
        timezone=valid_timezone(details.timezone),
        venue=venue,
        online_url=online_url,
    )
    for name in _TIMES:  # in range in UTC (checked above), and in the time zone its calendars show it in
        _aware(getattr(checked, name), name, ZoneInfo(checked.timezone))
    return checked


class EventStatus(StrEnum):
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Event:
    """An event and its counters. `sequence` grows with every change (the calendar SEQUENCE); `going_count` is
    the seats taken (guests included) and `waitlist_count` the parties waiting; `queue_counter` hands out
    places in the FIFO order of answers."""

    id: EventId
    group_id: GroupId
    details: EventDetails
    created_by: UserId
    created_at: datetime
    updated_at: datetime
    status: EventStatus = EventStatus.SCHEDULED
    sequence: int = 0
    going_count: int = 0
    waitlist_count: int = 0
    queue_counter: int = 0
    cancelled_at: datetime | None = None
    # An occurrence of a recurring series: the series, and the local date its rule gave it (kept when edited).
    series_id: str | None = None
    occurrence_date: date | None = None
    # The UID of the VEVENT it was imported from (a re-import of the same UID updates it).
    source_uid: str | None = None
    # Check-ins of people who deleted their account since: kept as a count only, with no one to name.
    anonymous_check_ins: int = 0

    def check_changeable(self, now: datetime) -> None:
        """Leaders edit and cancel an event until it starts, and never once it is cancelled."""
        _check_changeable(self.status, self.details.starts_at, now)

    def check_open_for_comments(self) -> None:
        """Members talk about an event before and after it, but a cancelled one takes no new comments: nobody is
        going, and every attendee would be told of each one."""
        if self.status is EventStatus.CANCELLED:
            raise EventCancelled("This event was cancelled: it takes no new comments.")

    def check_rsvp_open(self, now: datetime) -> None:
        """Answers (yes or no) are taken while the event is scheduled, not started, and within its RSVP window."""
        self.seats.check_rsvp_open(now)

    @property
    def seats(self) -> Seats:
        details = self.details
        return Seats(
            id=self.id,
            group_id=self.group_id,
            status=self.status,
            starts_at=details.starts_at,
            rsvp_opens_at=details.rsvp_opens_at,
            rsvp_closes_at=details.rsvp_closes_at,
            capacity=details.capacity,
            guest_limit=details.guest_limit,
            going_count=self.going_count,
            waitlist_count=self.waitlist_count,
            queue_counter=self.queue_counter,
        )

    def edited(self, changes: Mapping[str, Any], now: datetime) -> tuple[Event, list[str]]:
        """The event with `changes` (EventDetails field names) applied and checked, and the names of the fields
        that really changed (none: the same event, sequence unchanged)."""
        merged = {name: getattr(self.details, name) for name in DETAIL_FIELDS}
        merged.update(changes)
        details = details_from(**merged)
        changed = [name for name in DETAIL_FIELDS if getattr(details, name) != getattr(self.details, name)]
        if not changed:
            return self, []
        return replace(self, details=details, sequence=self.sequence + 1, updated_at=now), changed

    def cancelled(self, now: datetime) -> Event:
        return replace(self, status=EventStatus.CANCELLED, sequence=self.sequence + 1, cancelled_at=now, updated_at=now)

    def seats_change(self, now: datetime) -> bool:
        """Whether seats still move: scheduled and not started. A seat given up then goes to the waitlist; once
        the event has started or was cancelled, who came and who waited is its history."""
        return self.status is EventStatus.SCHEDULED and now < self.details.starts_at

    def without_rsvp_of_deleted(self, rsvp: Rsvp) -> Event:
        """The event once a deleted person's RSVP is erased (after `Attendance.withdraw` while seats change): their
        check-in stays as a count; the event's counters are otherwise as they are (a started or cancelled event
        keeps its history's seats, nameless)."""
        if rsvp.checked_in_at is None:
            return self
        return replace(self, anonymous_check_ins=self.anonymous_check_ins + 1)


def _check_changeable(status: EventStatus, starts_at: datetime, now: datetime) -> None:
    if status is EventStatus.CANCELLED:
        raise EventCancelled("This event was cancelled.")
    if now >= starts_at:
        raise EventStarted("This event has started; it can no longer be changed.")


@dataclass(frozen=True)
class Seats:
    """What an answer to an event is decided on, and no more: whether the event takes answers now (status, start,
    RSVP window) and its seats (capacity, guest limit, counters). `Event.seats` gives it from a whole event; an
    answer reads only these columns (EventStore.answering), as converting all the event's was a tenth of its CPU."""

    id: EventId
    group_id: GroupId
    status: EventStatus
    starts_at: datetime
    rsvp_opens_at: datetime | None
    rsvp_closes_at: datetime | None
    capacity: int | None
    guest_limit: int
    going_count: int
    waitlist_count: int
    queue_counter: int

    def check_rsvp_open(self, now: datetime) -> None:
        """Answers (yes or no) are taken while the event is scheduled, not started, and within its RSVP window."""
        _check_changeable(self.status, self.starts_at, now)
        if self.rsvp_opens_at is not None and now < self.rsvp_opens_at:
            raise RsvpWindowClosed(f"RSVPs open at {self.rsvp_opens_at.isoformat()}.")
        if self.rsvp_closes_at is not None and now > self.rsvp_closes_at:
            raise RsvpWindowClosed(f"RSVPs closed at {self.rsvp_closes_at.isoformat()}.")


def check_cover(image_id: str, owner_id: str | None, requester: UserId) -> None:
    """A leader may choose as cover an image they uploaded as an event cover, once the images service reported
    it ready (`owner_id` is its uploader from the ready-image read model, None when it is not there)."""
    try:
        uuid.UUID(image_id)
    except ValueError:
        raise InvalidEvent("cover_image_id is an image id (a UUID).", field="cover_image_id")
    if owner_id is None:
        raise CoverNotReady(
            "cover_image_id is not a ready event cover: upload it with purpose event_cover and wait until it is ready."
        )
    if owner_id != requester:
        raise InvalidEvent(
            "cover_image_id names an image someone else uploaded: use one of yours.", field="cover_image_id"
        )


def shows_cover(owner_role: str | None) -> bool:
    """A cover shows while the person who uploaded it is a leader of the group (anyone could name any image id;
    a leader who steps down or leaves takes their image with them)."""
    return is_leader(owner_role)


def new_event_id() -> EventId:
    return EventId(str(uuid.uuid4()))


def check_schedulable(details: EventDetails, now: datetime) -> None:
    if details.starts_at <= now:
        raise InvalidEvent("starts_at must be in the future.", field="starts_at")


# --- RSVPs, seats and the waitlist -----------------------------------------------------------------------------------


class Answer(StrEnum):
    YES = "yes"
    NO = "no"


class RsvpStatus(StrEnum):
    GOING = "going"
    WAITLISTED = "waitlisted"
    NOT_GOING = "not_going"


class Change(StrEnum):
    """What happened to one person's RSVP (each becomes an rsvp.* integration event)."""

    CONFIRMED = "confirmed"  # has a seat now (or still, with another number of guests)
    WAITLISTED = "waitlisted"
    PROMOTED = "promoted"  # moved from the waitlist to a seat without asking
    CANCELLED = "cancelled"  # was going or waiting, no longer is


class Reason(StrEnum):
    """Why someone going or waiting no longer is."""

    DECLINED = "declined"
    LEFT_GROUP = "left_group"
    REMOVED = "removed"
    BANNED = "banned"
    ACCOUNT_DELETED = "account_deleted"


@dataclass(frozen=True)
class Rsvp:
    """One person's answer. `queue_no` orders answers FIFO (it is handed out when someone goes from no answer or
    "no" to "yes", and kept through promotion)."""

    user_id: UserId
    status: RsvpStatus
    guests: int
    queue_no: int
    responded_at: datetime
    checked_in_at: datetime | None = None

    @property
    def party_size(self) -> int:
        """The seats this answer takes when going: the person and their guests (`Event.seats` is the event's)."""
        return 1 + self.guests


@dataclass(frozen=True)
class RsvpChange:
    """One change to publish. `guests` is the party's guests as the change concerns them (for CANCELLED: the
    guests they had)."""

    user_id: UserId
    change: Change
    guests: int
    previous: RsvpStatus | None
    position: int | None = None  # for WAITLISTED: 1 = next to get a seat
    reason: Reason | None = None  # for CANCELLED


# What `Attendance.counted` gives its counters to: a whole event, or the seats an answer reads.
CountedT = TypeVar("CountedT", "Event", "Seats")


@dataclass
class Attendance:
    """The seats of one event: its counters (seats taken, parties waiting, the last queue number) and the RSVPs a
    decision reads, which need not be all of them: the person's own answer and the head of the waitlist, as many
    parties as could get a seat (`waitlist_to_read`). Built under the event row's lock and changed by the
    decisions below; the caller saves the `dirty` rows and the counters, and publishes the `changes`."""

    capacity: int | None
    guest_limit: int
    rsvps: dict[UserId, Rsvp]
    queue_counter: int
    seats_taken: int = 0
    waiting: int = 0
    changes: list[RsvpChange] = field(default_factory=list)
    dirty: dict[UserId, Rsvp] = field(default_factory=dict)

    @classmethod
    def of(cls, seats: Seats, rsvps: Iterable[Rsvp]) -> Attendance:
        return cls(
            seats.capacity,
            seats.guest_limit,
            {r.user_id: r for r in rsvps},
            seats.queue_counter,
            seats.going_count,
            seats.waitlist_count,
        )

    def counted(self, seats: CountedT) -> CountedT:
        """The event (or its seats) with this attendance's counters."""
        return replace(
            seats, going_count=self.seats_taken, waitlist_count=self.waiting, queue_counter=self.queue_counter
        )

    # --- what it looks like

    @property
    def waitlist(self) -> list[Rsvp]:
        """The waiting RSVPs read, in FIFO order (the head of the whole waitlist)."""
        return sorted((r for r in self.rsvps.values() if r.status is RsvpStatus.WAITLISTED), key=lambda r: r.queue_no)

    def free_seats(self) -> int | None:
        """None: unlimited."""
        return None if self.capacity is None else max(0, self.capacity - self.seats_taken)

    def position_of(self, user: UserId) -> int | None:
        """1 = next to get a seat; exact when the waitlist was read through this person."""
        for index, rsvp in enumerate(self.waitlist, start=1):
            if rsvp.user_id == user:
                return index
        return None

    def _fits(self, seats: int) -> bool:
        free = self.free_seats()
        return free is None or seats <= free

    # --- decisions

    def respond(self, user: UserId, answer: Answer, guests: int, now: datetime) -> Rsvp:
        """Record one person's answer, then promote whoever the freed seats allow. Returns their RSVP."""
        if answer is Answer.NO:
            guests = 0
        if not 0 <= guests <= self.guest_limit:
            raise InvalidEvent(f"This event allows up to {self.guest_limit} guests per person.", field="guests")
        current = self.rsvps.get(user)
        before = current.status if current else None
        if answer is Answer.NO:
            if current is None:
                self._put(Rsvp(user, RsvpStatus.NOT_GOING, 0, 0, now))
            elif current.status is not RsvpStatus.NOT_GOING:
                self._cancel(current, Reason.DECLINED, now)
        elif current is None or current.status is RsvpStatus.NOT_GOING:
            self.queue_counter += 1
            wanted = Rsvp(user, RsvpStatus.GOING, guests, self.queue_counter, now)
            # Strict FIFO: while anyone waits, a new yes waits behind them even if its party would fit.
            if not self.waiting and self._fits(wanted.party_size):
                self._record(wanted, Change.CONFIRMED, before)
            else:
                self._put(replace(wanted, status=RsvpStatus.WAITLISTED))
                # At the back of the queue: its place is the number of parties waiting.
                self.changes.append(RsvpChange(user, Change.WAITLISTED, guests, before, self.waiting))
        elif current.status is RsvpStatus.GOING and guests != current.guests:
            extra = guests - current.guests
            if extra > 0 and (self.waiting or not self._fits(extra)):
                raise NotEnoughSeats(f"Not enough free seats for {extra} more guest(s).")
            self._record(replace(current, guests=guests, responded_at=now), Change.CONFIRMED, before)
        elif current.status is RsvpStatus.WAITLISTED and guests != current.guests:
            # Keeps its place in the queue; the new party size counts from now on.
            self._record(replace(current, guests=guests, responded_at=now), Change.WAITLISTED, before)
        self.promote()
        return self.rsvps[user]

    def withdraw(self, user: UserId, reason: Reason, now: datetime) -> None:
        """Someone going or waiting drops out without answering (left the group, removed or banned)."""
        current = self.rsvps.get(user)
        if current is not None and current.status is not RsvpStatus.NOT_GOING:
            self._cancel(current, reason, now)
            self.promote()

    def promote(self) -> None:
        """Seat the waitlist's head while its whole party fits; stop at the first that does not (strict FIFO).
        A promoted RSVP keeps its answer's time and queue number."""
        for waiting in self.waitlist:
            if not self._fits(waiting.party_size):
                break
            self._record(replace(waiting, status=RsvpStatus.GOING), Change.PROMOTED, waiting.status)

    def _cancel(self, current: Rsvp, reason: Reason, now: datetime) -> None:
        self._put(replace(current, status=RsvpStatus.NOT_GOING, guests=0, responded_at=now))
        self.changes.append(
            RsvpChange(current.user_id, Change.CANCELLED, current.guests, current.status, reason=reason)
        )

    def _put(self, rsvp: Rsvp) -> None:
        """Stores the RSVP and keeps the counters: what the old answer held is given back, the new one taken."""
        for held, sign in ((self.rsvps.get(rsvp.user_id), -1), (rsvp, 1)):
            if held is not None and held.status is RsvpStatus.GOING:
                self.seats_taken += sign * held.party_size
            elif held is not None and held.status is RsvpStatus.WAITLISTED:
                self.waiting += sign
        self.rsvps[rsvp.user_id] = rsvp
        self.dirty[rsvp.user_id] = rsvp

    def _record(self, rsvp: Rsvp, change: Change, previous: RsvpStatus | None) -> None:
        self._put(rsvp)
        position = self.position_of(rsvp.user_id) if change is Change.WAITLISTED else None
        self.changes.append(RsvpChange(rsvp.user_id, change, rsvp.guests, previous, position))


def waitlist_to_read(seats: Seats, own: Rsvp | None = None) -> int:
    """How many parties at the head of the waitlist a decision may seat: each needs a seat at least, so no more
    than the free seats plus those the person's own answer may give back (all of them when seats are unlimited)."""
    if seats.capacity is None:
        return seats.waitlist_count
    released = own.party_size if own is not None and own.status is RsvpStatus.GOING else 0
    return min(seats.waitlist_count, max(0, seats.capacity - seats.going_count) + released)


# --- import of calendar files ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportEntry:
    """One VEVENT of an imported calendar file: the event it describes (cancelled there or not), or why it is
    skipped."""

    uid: str
    details: EventDetails | None = None
    cancelled: bool = False
    skipped: str | None = None
    rule: str | None = None  # a recurring VEVENT's RRULE: the entry is a series, `details` its first occurrence
    excluded: frozenset[date] = frozenset()  # its EXDATEs, as local dates in the event's time zone
    added: frozenset[date] = frozenset()  # its RDATEs, as local dates
    # Its occurrences that differ from the rule's (RECURRENCE-ID VEVENTs, RDATEs at another time), by local date.
    changed: Mapping[date, EventDetails] = field(default_factory=dict)


# What an imported file decides about its events; the rest (capacity, guest limit, RSVP window, cover) stays as
# the group's leaders set it here, so a re-import does not undo their changes.
IMPORTED_FIELDS = ("title", "description", "starts_at", "ends_at", "timezone", "venue", "online_url")


class ImportOutcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class ImportResult:
    uid: str
    outcome: ImportOutcome
    event_id: EventId | None = None
    reason: str | None = None


# --- comments and check-in --------------------------------------------------------------------------------------------

MAX_COMMENT = 5000
CommentId = NewType("CommentId", str)


@dataclass(frozen=True)
class Comment:
    id: CommentId
    event_id: EventId
    author_id: UserId | None  # None: the author deleted their account (the comment shows as "a deleted member")
    body: str
    created_at: datetime
    updated_at: datetime


def comment_body(body: str) -> str:
    return _text(body, "body", MAX_COMMENT, required=True)


def new_comment_id() -> CommentId:
    return CommentId(str(uuid.uuid4()))


def check_may_edit(comment: Comment, editor: UserId) -> None:
    if comment.author_id != editor:
        raise NotTheAuthor("Only its author edits a comment.")


def check_may_delete(comment: Comment, caller: UserId, role: str | None) -> None:
    if comment.author_id != caller and not is_leader(role):
        raise NotTheAuthor("Only its author or a leader of the group deletes a comment.")


def check_in(event: Event, rsvp: Rsvp | None, now: datetime) -> Rsvp | None:
    """The attendee's RSVP marked present, or None when they were checked in already. Leaders check in people
    going to an event that is not cancelled (at the door: before, during or after its start)."""
    if event.status is EventStatus.CANCELLED:
        raise EventCancelled("This event was cancelled.")
    if rsvp is None or rsvp.status is not RsvpStatus.GOING:
        raise NotGoing("Only people going to the event can be checked in.")
    if rsvp.checked_in_at is not None:
        return None
    return replace(rsvp, checked_in_at=now)


# --- search ---------------------------------------------------------------------------------------------------------

DEFAULT_RADIUS_KM = 50.0
# Beyond this a "nearby" search is no longer local, and its bounding box would cover most of the table.
MAX_RADIUS_KM = 1000.0


class SearchOrder(StrEnum):
    START = "start"
    DISTANCE = "distance"


@dataclass(frozen=True)
class EventSearch:
    """What `GET /api/events` asks for. Always: scheduled events of groups the caller may see (public ones and
    their own), starting from `starts_from` (default: now) and before `starts_before`."""

    caller: UserId | None
    starts_from: datetime
    starts_before: datetime | None = None
    text: str | None = None
    topic: str | None = None
    group_id: GroupId | None = None
    near: Location | None = None
    radius_km: float = DEFAULT_RADIUS_KM
    attending: UserId | None = None
    order: SearchOrder = SearchOrder.START
    # Whether `starts_from` was asked for: without `from` it is the time of the request, which a next page's is not.
    from_asked: bool = True

    @property
    def filters(self) -> tuple[object, ...]:
        """What a cursor of this search is tied to (its position means nothing in another list): the filters and the
        order as asked (times in UTC, text folded as searched), `from` only when asked for, and `attending` as
        whether the caller asked for their own events, not whose they are."""
        starts_from = self.starts_from.astimezone(UTC).isoformat() if self.from_asked else None
        starts_before = None if self.starts_before is None else self.starts_before.astimezone(UTC).isoformat()
        near = None if self.near is None else (float(self.near.lat), float(self.near.lng), float(self.radius_km))
        return (
            starts_from,
            starts_before,
            self.text,
            self.topic,
            self.group_id,
            near,
            self.attending is not None,
            self.order.value,
        )


def search_text(details: EventDetails) -> str:
    """What `q` matches: title and description, case-folded (SQLite's lower() only folds ASCII)."""
    return f"{details.title}\n{details.description}".casefold()


def search_from(
    *,
    caller: UserId | None,
    now: datetime,
    starts_from: datetime | None,
    starts_before: datetime | None,
    text: str | None,
    topic: str | None,
    group_id: str | None,
    near: str | None,
    radius_km: float | None,
    attending_me: bool,
    order: SearchOrder | None,
) -> EventSearch:
    """The search as asked, checked: `radius_km` and sort=distance need `near`; attending=me needs a login."""
    if radius_km is not None and near is None:
        raise InvalidEvent("radius_km needs near=<lat>,<lng>.", field="radius_km")
    if order is SearchOrder.DISTANCE and near is None:
        raise InvalidEvent("sort=distance needs near=<lat>,<lng>.", field="sort")
    if attending_me and caller is None:
        raise LoginRequired("Log in to list the events you are going to.")
    for name, value in (("from", starts_from), ("to", starts_before)):
        _aware(value, name)
    if radius_km is not None and (not math.isfinite(radius_km) or not 0 < radius_km <= MAX_RADIUS_KM):
        raise InvalidEvent(f"radius_km must be above 0 and at most {MAX_RADIUS_KM:g}.", field="radius_km")
    center = parse_near(near) if near is not None else None
    return EventSearch(
        caller=caller,
        starts_from=starts_from or now,
        starts_before=starts_before,
        text=(text.strip().casefold() or None) if text else None,
        topic=(topic.strip().casefold() or None) if topic else None,
        group_id=GroupId(group_id) if group_id else None,
        near=center,
        radius_km=radius_km if radius_km is not None else DEFAULT_RADIUS_KM,
        attending=caller if attending_me else None,
        order=order or (SearchOrder.DISTANCE if center is not None else SearchOrder.START),
        from_asked=starts_from is not None,
    )


def parse_near(value: str) -> Location:
    """`near=<lat>,<lng>` as the API takes it."""
    parts = value.split(",")
    try:
        if len(parts) != 2:
            raise ValueError(value)
        location = Location(decimal_number(parts[0]), decimal_number(parts[1]))
    except ValueError:
        raise InvalidEvent("Give near as <lat>,<lng>, e.g. near=52.52,13.405.", field="near")
    return valid_location(location, "near")


# The nearby search orders by the straight-line (chord) distance between points on the unit sphere: plain arithmetic
# the database computes, and in the same order as the great-circle distance, so the ordering, the radius and the
# cursor are exact without a geo extension.


def unit_vector(location: Location) -> tuple[float, float, float]:
    lat, lng = math.radians(location.lat), math.radians(location.lng)
    return (math.cos(lat) * math.cos(lng), math.cos(lat) * math.sin(lng), math.sin(lat))


def chord2_within(radius_km: float) -> float:
    """The squared chord on the unit sphere of a great-circle distance."""
    return (2 * math.sin(min(math.pi, radius_km / EARTH_RADIUS_KM) / 2)) ** 2


def km_of_chord2(chord2: float) -> float:
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(max(0.0, chord2)) / 2))
