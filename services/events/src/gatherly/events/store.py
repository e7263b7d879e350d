"""The events service's queries that need SQL (locking, ordered attendance, upserts of read models); they return
domain objects. The tables are in tables.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from types import SimpleNamespace
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from gatherly.contracts.groups import GroupCreated, GroupUpdated
from gatherly.contracts.users import ImageVariants, UserProfileUpdated
from gatherly.events.domain import (
    Comment,
    CommentId,
    Event,
    EventDetails,
    EventId,
    EventSearch,
    EventStatus,
    GroupId,
    GroupSummary,
    InvalidEvent,
    Location,
    Rsvp,
    RsvpStatus,
    SearchOrder,
    Seats,
    UserId,
    Venue,
    Visibility,
    chord2_within,
    km_of_chord2,
    search_text,
    unit_vector,
)
from gatherly.events.recurrence import Series, SeriesId, Template
from gatherly.events.tables import (
    calendar_feeds,
    comments,
    cover_images,
    events,
    group_members,
    group_summaries,
    group_topics,
    metadata,
    profiles,
    rsvps,
    series,
)
from gatherly.kernel import postgis
from gatherly.kernel.db import Database, rowcount
from gatherly.kernel.exports import rows
from gatherly.kernel.fixed_reads import FixedRead, FixedWrite
from gatherly.kernel.geo import bounding_box
from gatherly.kernel.read_models import ReadyImageStore
from gatherly.kernel.runtime import ServiceContext
from gatherly.kernel.uow import UnitOfWork
from gatherly.kernel.web import Listed, cursor_int, cursor_time

__all__ = ["EventsUnitOfWork", "Stores", "metadata", "reading", "unit_of_work"]


def _venue(row: Mapping[Any, Any]) -> Venue | None:
    return _venue_of(row["venue_name"], row["venue_address"], row["lat"], row["lng"])


def _venue_of(name: str | None, address: str | None, lat: float | None, lng: float | None) -> Venue | None:
    if name is None:
        return None
    location = Location(lat, lng) if lat is not None and lng is not None else None
    return Venue(name, address or "", location)


def _event(row: Mapping[Any, Any]) -> Event:
    venue = _venue(row)
    return Event(
        id=EventId(row["id"]),
        group_id=GroupId(row["group_id"]),
        details=EventDetails(
            title=row["title"],
            description=row["description"],
            starts_at=row["starts_at"],
            ends_at=row["ends_at"],
            timezone=row["timezone"],
            venue=venue,
            online_url=row["online_url"],
            capacity=row["capacity"],
            guest_limit=row["guest_limit"],
            rsvp_opens_at=row["rsvp_opens_at"],
            rsvp_closes_at=row["rsvp_closes_at"],
            cover_image_id=row["cover_image_id"],
        ),
        created_by=UserId(row["created_by"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        status=EventStatus(row["status"]),
        sequence=row["sequence"],
        going_count=row["going_count"],
        waitlist_count=row["waitlist_count"],
        queue_counter=row["queue_counter"],
        cancelled_at=row["cancelled_at"],
        series_id=row["series_id"],
        occurrence_date=date.fromisoformat(row["occurrence_date"]) if row["occurrence_date"] else None,
        source_uid=row["source_uid"],
        anonymous_check_ins=row["anonymous_check_ins"],
    )


def _seats(row: Mapping[Any, Any]) -> Seats:
    return Seats(
        id=EventId(row["id"]),
        group_id=GroupId(row["group_id"]),
        status=EventStatus(row["status"]),
        starts_at=row["starts_at"],
        rsvp_opens_at=row["rsvp_opens_at"],
        rsvp_closes_at=row["rsvp_closes_at"],
        capacity=row["capacity"],
        guest_limit=row["guest_limit"],
        going_count=row["going_count"],
        waitlist_count=row["waitlist_count"],
        queue_counter=row["queue_counter"],
    )


def _columns(event: Event) -> dict[str, Any]:
    details, venue = event.details, event.details.venue
    location = venue.location if venue else None
    x, y, z = unit_vector(location) if location else (None, None, None)
    return {
        "group_id": event.group_id,
        "title": details.title,
        "description": details.description,
        "search_text": search_text(details),
        "starts_at": details.starts_at,
        "ends_at": details.ends_at,
        "timezone": details.timezone,
        "venue_name": venue.name if venue else None,
        "venue_address": venue.address if venue else None,
        "lat": location.lat if location else None,
        "lng": location.lng if location else None,
        "x": x,
        "y": y,
        "z": z,
        "online_url": details.online_url,
        "capacity": details.capacity,
        "guest_limit": details.guest_limit,
        "rsvp_opens_at": details.rsvp_opens_at,
        "rsvp_closes_at": details.rsvp_closes_at,
        "cover_image_id": details.cover_image_id,
        "status": event.status.value,
        "sequence": event.sequence,
        "going_count": event.going_count,
        "waitlist_count": event.waitlist_count,
        "queue_counter": event.queue_counter,
        "created_by": event.created_by,
        "created_at": event.created_at,
        "updated_at": event.updated_at,
        "cancelled_at": event.cancelled_at,
        "series_id": event.series_id,
        "occurrence_date": event.occurrence_date.isoformat() if event.occurrence_date else None,
        "source_uid": event.source_uid,
        "anonymous_check_ins": event.anonymous_check_ins,
    }


# What a list reads of an event: the columns of its item (what an EventSummary shows, and its cover's and cursor's
# keys). Not the description, the RSVP window nor the bookkeeping dates: a whole `Event` per row converted seven
# datetimes, where a list's item needs two.
LISTED_COLUMNS = [
    events.c[name]
    for name in (
        "id",
        "group_id",
        "title",
        "starts_at",
        "ends_at",
        "timezone",
        "venue_name",
        "venue_address",
        "lat",
        "lng",
        "online_url",
        "going_count",
        "capacity",
        "cover_image_id",
    )
]


LISTED_KEYS = tuple(column.name for column in LISTED_COLUMNS)


# An event as a list shows it: EventSummary's fields in its order, as plain values, which api.py hands to orjson
# (schemas.events_page_json): a list's read view, made straight from a row's values. A page of twenty made an
# EventCard, a Venue and its Location (frozen dataclasses), a Found per row, then the API's dict of them; now the
# dicts alone. test_list_json.py pins it, by hypothesis over stored rows, to what Page[EventSummary] writes of the
# event's own page (api._event_out) for the same row.
LISTED_SIZE = len(LISTED_KEYS)
STARTS_AT = LISTED_KEYS.index("starts_at")
COVER_AT = LISTED_KEYS.index("cover_image_id")


def _listed(row: Sequence[Any], group_name: str, distance_km: float | None) -> Listed:
    """The event whose row starts with LISTED_COLUMNS' values, in their order, as a list shows it; `distance_km`
    rounded as the API shows it; its cover None until the service decides it (`ListedPage.covers`)."""
    (
        event_id,
        group_id,
        title,
        starts_at,
        ends_at,
        timezone,
        venue_name,
        venue_address,
        lat,
        lng,
        online_url,
        going_count,
        capacity,
        _,
    ) = row[:LISTED_SIZE]
    venue = None
    if venue_name is not None:  # as _venue_of: no venue without its name, an address "" when missing
        location = {"lat": lat, "lng": lng} if lat is not None and lng is not None else None
        venue = {"name": venue_name, "address": venue_address or "", "location": location}
    return {
        "id": event_id,
        "group": {"id": group_id, "name": group_name},
        "title": title,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "timezone": timezone,
        "venue": venue,
        "online": online_url is not None,
        "going_count": going_count,
        "capacity": capacity,
        "distance_km": round(distance_km, 3) if distance_km is not None else None,
        "cover": None,
    }


class ListedPage(NamedTuple):
    """A page of a list of events: the events as listed, those that name a cover image (the listed event, its group,
    the image: whether it shows is the service's rule), and the position after the page (None on the last)."""

    events: list[Listed]
    covers: list[tuple[Listed, GroupId, str]]
    position: Any


def _listed_page(rows: Sequence[Sequence[Any]], listed: list[Listed], position: Any) -> ListedPage:
    """`listed`, made from `rows` (LISTED_COLUMNS' values first), as a page."""
    covers = [(event, row[1], row[COVER_AT]) for event, row in zip(listed, rows, strict=True) if row[COVER_AT]]
    return ListedPage(listed, covers, position)


# What `_event` reads of an event row: all but the search's own columns (the folded text, the unit vector), which
# the hot reads below need not fetch and convert (search_text repeats the description).
EVENT_COLUMNS = [column for column in events.c if column.name not in ("search_text", "x", "y", "z")]


# The statements of an RSVP (its hot path: one per answer, under the event's lock) are built once, here: building a
# statement and generating its cache key per call cost more than SQLite running it (bench/README.md, RSVPs).
EVENT_FOR_UPDATE = select(events).where(events.c.id == bindparam("event_id")).with_for_update()
_UPDATE_COUNTS = (
    update(events)
    .where(events.c.id == bindparam("event_id"))
    .values(
        going_count=bindparam("going"), waitlist_count=bindparam("waiting"), queue_counter=bindparam("queue_counter")
    )
)
SAVE_COUNTS = FixedWrite(_UPDATE_COUNTS)
RSVP_OF = FixedWrite(
    select(rsvps).where(rsvps.c.event_id == bindparam("event_id"), rsvps.c.user_id == bindparam("user_id"))
)
# The waitlist's reads of an answer, in its write transaction (FixedWrite: on sqlite3 directly on inline SQLite).
WAITLIST_HEAD = FixedWrite(
    select(rsvps)
    .where(rsvps.c.event_id == bindparam("event_id"), rsvps.c.status == RsvpStatus.WAITLISTED.value)
    .order_by(rsvps.c.queue_no)
    .limit(bindparam("limit", type_=Integer))
)
WAITLIST_AHEAD = FixedWrite(
    select(func.count().label("ahead"))
    .select_from(rsvps)
    .where(
        rsvps.c.event_id == bindparam("event_id"),
        rsvps.c.status == RsvpStatus.WAITLISTED.value,
        rsvps.c.queue_no < bindparam("queue_no"),
    )
)
GROUP_BY_ID = select(group_summaries).where(
    group_summaries.c.group_id == bindparam("group_id"), group_summaries.c.deleted_at.is_(None)
)
ROLE = select(group_members.c.role).where(
    group_members.c.group_id == bindparam("group_id"), group_members.c.user_id == bindparam("user_id")
)
# The event's group unless deleted, and the caller's role in it (the `user_id` parameter): what an answer and the
# event's page read beside the event, under the names `_group_of` reads.
GROUP_AND_ROLE = (
    group_summaries.c.group_id.label("group_found"),
    group_summaries.c.name.label("group_name"),
    group_summaries.c.visibility.label("group_visibility"),
    group_summaries.c.topics.label("group_topics"),
    group_summaries.c.city.label("group_city"),
    group_members.c.role.label("my_role"),
)


def _with_group_and_role(event_rows: Any) -> Any:
    return event_rows.outerjoin(
        group_summaries,
        and_(group_summaries.c.group_id == events.c.group_id, group_summaries.c.deleted_at.is_(None)),
    ).outerjoin(
        group_members,
        and_(group_members.c.group_id == events.c.group_id, group_members.c.user_id == bindparam("user_id")),
    )


# What an answer decides on, in one statement: the event's seats (locked: only its row, `OF events`, as PostgreSQL
# does not lock the nullable side of an outer join), its group's visibility unless deleted, the person's role in it
# and their answer. Only the columns of `Seats`: converting the event's forty was half of this read's CPU.
# It, the answer's upsert and the counters' UPDATE run on sqlite3 directly on inline SQLite (FixedWrite): through
# SQLAlchemy's execution path they were about a fifth of an RSVP's CPU (docs/request-path.md, seventh pass).
SEATS_COLUMNS = (
    events.c.id,
    events.c.group_id,
    events.c.status,
    events.c.starts_at,
    events.c.rsvp_opens_at,
    events.c.rsvp_closes_at,
    events.c.capacity,
    events.c.guest_limit,
    events.c.going_count,
    events.c.waitlist_count,
    events.c.queue_counter,
)
ANSWERING = FixedWrite(
    select(
        *SEATS_COLUMNS,
        group_summaries.c.visibility.label("group_visibility"),
        group_members.c.role.label("my_role"),
        *(column.label(f"rsvp_{column.name}") for column in rsvps.c if column.name != "event_id"),
    )
    .select_from(_with_group_and_role(events))
    .outerjoin(rsvps, and_(rsvps.c.event_id == events.c.id, rsvps.c.user_id == bindparam("user_id")))
    .where(events.c.id == bindparam("event_id"))
    .with_for_update(of=events)
)
# An answer written whether or not the person answered before (one statement instead of an UPDATE, then an INSERT
# when it touched nothing), per dialect: both spell it ON CONFLICT ... DO UPDATE.
RSVP_VALUES = ("status", "guests", "queue_no", "responded_at", "checked_in_at")


def _upsert_rsvp(insert_of: Any) -> Any:
    statement = insert_of(rsvps)
    return statement.on_conflict_do_update(
        index_elements=[rsvps.c.event_id, rsvps.c.user_id],
        set_={name: statement.excluded[name] for name in RSVP_VALUES},
    )


UPSERT_RSVP = {
    "sqlite": FixedWrite(_upsert_rsvp(sqlite_insert)),
    "postgresql": FixedWrite(_upsert_rsvp(postgresql_insert)),
}
# An answer's upsert and the event's counters in one statement on PostgreSQL (the upsert in a data-modifying WITH,
# which runs whether or not the UPDATE reads it): one round trip fewer under the event's lock. SQLite allows no
# INSERT inside WITH; there the two run straight on sqlite3, where a statement costs little.
# (The upsert's values are bound as `rsvp_<column>`: SQLAlchemy keeps a column's own name for its implicit bind.)
_answer = _upsert_rsvp(lambda table: postgresql_insert(table).values({c: bindparam(f"rsvp_{c.name}") for c in table.c}))
ANSWER_WITH_COUNTS = FixedWrite(_UPDATE_COUNTS.add_cte(_answer.cte("answer")))


# What the page of one event shows, in one statement on the driver (FixedRead): the event, its group unless
# deleted, the caller's role and answer with their place on the waitlist, the check-in count, and the cover image
# with its uploader's role in the group. Each was a statement of its own through SQLAlchemy's execution path,
# built per call: most of the page's CPU (docs/request-path.md, events).
_own_rsvp = rsvps.alias("own_rsvp")
_waiting = rsvps.alias("waiting")
_checked_in = rsvps.alias("checked_in")
_cover_owner = group_members.alias("cover_owner")
EVENT_VIEW = FixedRead(
    select(
        *EVENT_COLUMNS,
        *GROUP_AND_ROLE,
        *(column.label(f"rsvp_{column.name}") for column in _own_rsvp.c),
        select(func.count())
        .select_from(_waiting)
        .where(
            _waiting.c.event_id == events.c.id,
            _waiting.c.status == RsvpStatus.WAITLISTED.value,
            _waiting.c.queue_no < _own_rsvp.c.queue_no,
        )
        .scalar_subquery()
        .label("waiting_ahead"),
        select(func.count())
        .select_from(_checked_in)
        .where(_checked_in.c.event_id == events.c.id, _checked_in.c.checked_in_at.is_not(None))
        .scalar_subquery()
        .label("checked_in_listed"),
        cover_images.c.variants.label("cover_variants"),
        _cover_owner.c.role.label("cover_owner_role"),
    )
    .select_from(_with_group_and_role(events))
    .outerjoin(_own_rsvp, and_(_own_rsvp.c.event_id == events.c.id, _own_rsvp.c.user_id == bindparam("user_id")))
    .outerjoin(cover_images, cover_images.c.image_id == events.c.cover_image_id)
    .outerjoin(
        _cover_owner,
        and_(_cover_owner.c.group_id == events.c.group_id, _cover_owner.c.user_id == cover_images.c.owner_id),
    )
    .where(events.c.id == bindparam("event_id"))
)


@dataclass(frozen=True)
class Answering:
    """What an answer to an event is decided on (EventStore.answering)."""

    seats: Seats
    visibility: Visibility | None  # the group's; None when deleted (or not known yet)
    role: str | None
    own: Rsvp | None  # the person's answer so far


@dataclass(frozen=True)
class Viewing:
    """What the page of one event is made of (EventStore.viewing)."""

    event: Event
    group: GroupSummary | None  # None when deleted (or not known yet)
    role: str | None  # the caller's, None when not a member (or anonymous)
    own: Rsvp | None  # the caller's answer
    waiting_ahead: int  # parties before the caller on the waitlist (meaningful when they wait)
    attendance: int  # people checked in, those who deleted their account since included
    cover: ImageVariants | None  # the cover image's variants, while it is ready
    cover_owner_role: str | None  # the role in the group of whoever uploaded the cover


def _group_of(row: Mapping[str, Any]) -> GroupSummary | None:
    """The group summary an event read joined (columns group_found, group_name, ...), None when deleted."""
    if row["group_found"] is None:
        return None
    return GroupSummary(
        GroupId(row["group_found"]),
        row["group_name"],
        Visibility(row["group_visibility"]),
        tuple(row["group_topics"]),
        row["group_city"],
    )


class EventStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def get(self, event_id: str) -> Event | None:
        row = (await self.session.execute(select(events).where(events.c.id == event_id))).mappings().first()
        return _event(row) if row else None

    async def get_for_update(self, event_id: str) -> Event | None:
        """The event row locked until the transaction ends (PostgreSQL; on SQLite the unit of work holds the
        database's write lock already). Seats are counted and handed out under this lock, so concurrent RSVPs
        queue here and never both take the last seat."""
        row = (await self.session.execute(EVENT_FOR_UPDATE, {"event_id": event_id})).mappings().first()
        return _event(row) if row else None

    async def answering(self, event_id: str, user_id: str) -> Answering | None:
        """The event's seats locked as in `get_for_update`, with its group's visibility, the person's role and own
        answer: one read (on PostgreSQL the answer read again under the lock, a second)."""
        found = await ANSWERING.rows(self.session, {"event_id": event_id, "user_id": user_id})
        if not found:
            return None
        row = found[0]
        own = _rsvp(row, prefix="rsvp_") if row["rsvp_user_id"] is not None else None
        if self.session.dialect.name == "postgresql":
            # Read again once the lock is held: a locking read that waited (READ COMMITTED) gets the newest version
            # of the row it locks, but the rows it joins as its snapshot saw them before the wait, so the answer
            # could be the one a concurrent answer of the same person had just replaced (the counters drifted).
            again = await RSVP_OF.first(self.session, {"event_id": event_id, "user_id": user_id})
            own = _rsvp(again) if again else None
        visibility = row["group_visibility"]
        return Answering(_seats(row), Visibility(visibility) if visibility is not None else None, row["my_role"], own)

    async def viewing(self, event_id: str, caller: str | None) -> Viewing | None:
        """Everything the page of one event shows, for this caller (None: anonymous): one read."""
        row = await EVENT_VIEW.first(self.session, {"event_id": event_id, "user_id": caller})
        if row is None:
            return None
        own = _rsvp(row, prefix="rsvp_") if row["rsvp_user_id"] is not None else None
        variants = row["cover_variants"]
        return Viewing(
            event=_event(row),
            group=_group_of(row),
            role=row["my_role"],
            own=own,
            waiting_ahead=int(row["waiting_ahead"] or 0),
            attendance=int(row["anonymous_check_ins"] or 0) + int(row["checked_in_listed"] or 0),
            cover=ImageVariants(**variants) if variants is not None else None,
            cover_owner_role=row["cover_owner_role"],
        )

    async def imported_for_update(self, group_id: str, uid: str) -> Event | None:
        """The group's event imported from this VEVENT UID, locked (ux_events_group_id_source_uid)."""
        query = select(events).where(events.c.group_id == group_id, events.c.source_uid == uid).with_for_update()
        row = (await self.session.execute(query)).mappings().first()
        return _event(row) if row else None

    async def add(self, event: Event) -> None:
        await self.session.execute(insert(events).values(id=event.id, **_columns(event)))

    async def save(self, event: Event) -> None:
        await self.session.execute(update(events).where(events.c.id == event.id).values(**_columns(event)))

    async def upcoming_ids_of_group(self, group_id: str, now: datetime) -> list[EventId]:
        """Scheduled events of the group that have not started, soonest first (ix_events_group_id_starts_at)."""
        query = (
            select(events.c.id)
            .where(events.c.group_id == group_id, events.c.starts_at > now, events.c.status == EventStatus.SCHEDULED)
            .order_by(events.c.starts_at, events.c.id)
        )
        return [EventId(i) for i in await self.session.scalars(query)]

    async def upcoming_ids_of_series(self, series_id: str, from_date: date, now: datetime) -> list[EventId]:
        """Scheduled occurrences of the series from this local date on that have not started, in date order."""
        query = (
            select(events.c.id)
            .where(
                events.c.series_id == series_id,
                events.c.occurrence_date >= from_date.isoformat(),
                events.c.starts_at > now,
                events.c.status == EventStatus.SCHEDULED,
            )
            .order_by(events.c.occurrence_date)
        )
        return [EventId(i) for i in await self.session.scalars(query)]

    async def cover_roles(
        self, wanted: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, ImageVariants]]:
        """For (group id, cover image id) pairs: the ready image's variants and its uploader's role in that group,
        in one query however many pairs (a page of search results). A pair is missing when the image is not ready or
        its uploader is not a member."""
        if not wanted:
            return {}
        params = {
            "image_ids": sorted({image_id for _, image_id in wanted}),
            "group_ids": sorted({group_id for group_id, _ in wanted}),
        }
        found = {
            (row["group_id"], row["image_id"]): (row["role"], ImageVariants(**row["variants"]))
            for row in await COVER_ROLES.rows(self.session, params)
        }
        return {pair: found[pair] for pair in wanted if pair in found}

    async def occurrence_dates(self, series_id: str) -> set[date]:
        """The local dates the series has made into events, cancelled ones included (ux_events_series_id_...)."""
        query = select(events.c.occurrence_date).where(events.c.series_id == series_id)
        return {date.fromisoformat(day) for day in await self.session.scalars(query)}

    async def upcoming_ids_attended_by(self, group_id: str, user_id: str, now: datetime) -> list[EventId]:
        """Upcoming scheduled events of the group where the person is going or waiting."""
        query = (
            select(events.c.id)
            .join(rsvps, rsvps.c.event_id == events.c.id)
            .where(
                events.c.group_id == group_id,
                events.c.starts_at > now,
                events.c.status == EventStatus.SCHEDULED,
                rsvps.c.user_id == user_id,
                rsvps.c.status.in_([RsvpStatus.GOING, RsvpStatus.WAITLISTED]),
            )
            .order_by(events.c.starts_at, events.c.id)
        )
        return [EventId(i) for i in await self.session.scalars(query)]

    async def going_of(self, user_id: str, ending_after: datetime, limit: int = 500) -> list[tuple[Event, str]]:
        """Events the person is going to (cancelled ones too: a calendar must learn of the cancellation) that end
        after `ending_after`, soonest first, with their group's name."""
        query = (
            select(events, group_summaries.c.name.label("group_name"))
            .join(rsvps, and_(rsvps.c.event_id == events.c.id, rsvps.c.user_id == user_id))
            .join(group_summaries, group_summaries.c.group_id == events.c.group_id)
            .where(rsvps.c.status == RsvpStatus.GOING, events.c.ends_at > ending_after)
            .order_by(events.c.starts_at, events.c.id)
            .limit(limit)
        )
        return [(_event(row), row["group_name"]) for row in (await self.session.execute(query)).mappings()]

    async def search(self, criteria: EventSearch, limit: int, after: dict[str, Any] | None) -> ListedPage:
        """A page of events as a list shows them and the position after it (None on the last page). Who may see what
        is part of the query, so a page is never short for rows dropped afterwards."""
        if criteria.near is not None and self.session.dialect.name == "postgresql":
            return await self._search_nearby_postgis(criteria, limit, after)
        if criteria.near is not None:
            return await self._search_nearby(criteria, limit, after)
        params = {**_search_values(criteria), "limit": limit + 1}
        if after is not None:
            params["since"], params["last_id"] = _position(after, "s")
        found = await _soonest_page(criteria, after is not None).raw(self.session, params)
        page = found.convert_values(found.raws[:limit])  # not the row read to know there is more
        position = None
        if len(found.raws) > limit:
            last = page[-1]
            position = {"s": last[STARTS_AT].isoformat(), "i": last[0]}
        return _listed_page(page, [_listed(row, row[GROUP_NAME], None) for row in page], position)

    async def _search_nearby_postgis(
        self, criteria: EventSearch, limit: int, after: dict[str, Any] | None
    ) -> ListedPage:
        """The nearby search on PostgreSQL: ST_DWithin on the venue's geography point (migration 0008) through its
        GiST index; nearest first is a KNN scan of that index (`<->`, postgis.nearest_page), so a page reads about
        a page of rows; soonest first walks the next upcoming events in start order (_soonest_nearby_postgis)."""
        assert criteria.near is not None
        by_distance = criteria.order is SearchOrder.DISTANCE
        if by_distance:
            location = postgis.location_of(events)
            rows = list(
                await postgis.nearest_page(
                    self.session,
                    _postgis_nearby(criteria, events).where(
                        postgis.within(location, criteria.near, criteria.radius_km)
                    ),
                    location=location,
                    center=criteria.near,
                    key=events.c.id,
                    limit=limit,
                    after=None if after is None else _position(after, "m"),
                )
            )
        else:
            rows = await self._soonest_nearby_postgis(criteria, limit, after)
        values = [[row[key] for key in LISTED_KEYS] for row in rows[:limit]]
        listed = [
            _listed(value, row["group_name"], row[postgis.DISTANCE] / 1000.0)
            for value, row in zip(values, rows, strict=False)
        ]
        position = None
        if len(rows) > limit:
            last = rows[limit - 1]
            key = {"m": last[postgis.DISTANCE]} if by_distance else {"s": last["starts_at"].isoformat()}
            position = {**key, "i": last["id"]}
        return _listed_page(values, listed, position)

    async def _soonest_nearby_postgis(
        self, criteria: EventSearch, limit: int, after: dict[str, Any] | None
    ) -> list[RowMapping]:
        """Up to limit + 1 rows within the radius, soonest first. First from the next SOONEST_SCAN upcoming events
        only, walked in start order (ix_events_starts_at_id or ix_events_upcoming_places): a dense radius fills a
        page from a few hundred of them. When they hold no more than a page (a sparse radius, or the last pages),
        the radius is read as a whole through the GiST index and sorted: it holds few events then.

        Left to itself PostgreSQL reads the whole radius and sorts it even in a city (it estimates 100 rows within
        any radius): 25,000 events, 364 ms p99 over 1,000,000. The walk is a subquery with its own LIMIT, which the
        planner cannot merge with the radius test. Both statements test the radius by the same measured distance
        (postgis.measured_within), so the walk and the whole radius find the same rows."""
        assert criteria.near is not None
        in_order = tuple_(events.c.starts_at, events.c.id)
        upcoming = _upcoming_in_start_order(criteria, after)
        walked = (
            select(events, postgis.location_of(events).label(postgis.LOCATION))
            .where(*upcoming)
            .order_by(events.c.starts_at, events.c.id)
            .limit(SOONEST_SCAN)
            .subquery("walked")
        )
        in_walk = postgis.measured_within(postgis.location_of(walked), criteria.near, criteria.radius_km)
        in_radius = postgis.indexed_within(postgis.location_of(events), criteria.near, criteria.radius_km)
        rows: list[RowMapping] = []
        for source, within in ((walked, in_walk), (events, in_radius)):
            query = _postgis_nearby(criteria, source).where(within)
            if source is events and after is not None:
                query = query.where(in_order > _position(after, "s"))
            query = query.order_by(source.c.starts_at, source.c.id).limit(limit + 1)
            rows = list((await self.session.execute(query)).mappings())
            if len(rows) > limit:
                break
        return rows

    async def _search_nearby(self, criteria: EventSearch, limit: int, after: dict[str, Any] | None) -> ListedPage:
        # The bounding box is an indexed range on lat (and a cheap check on lng) that narrows the candidates; the
        # chord to the centre (domain.unit_vector) drops the box's corners and orders by distance, all in the query
        # and from ix_events_nearby alone; then the page's whole rows are read (the same transaction: same rows).
        assert criteria.near is not None
        by_distance = criteria.order is SearchOrder.DISTANCE
        # Nearest first, a smaller circle is tried first: when it holds more than a page, that page is the whole
        # circle's too (everything outside it is farther), and a dense city reads a few dozen rows, not thousands.
        radii = [r for r in (criteria.radius_km / 16, criteria.radius_km / 4) if by_distance] + [criteria.radius_km]
        rows, exact = ([], False) if by_distance else await self._soonest_nearby(criteria, limit, after)
        # Soonest first, when the next upcoming events hold less than a page within the radius (a sparse area), the
        # radius is read as a whole in the lat band instead: it holds few events then.
        for radius in [] if exact else radii:
            rows = await self._nearby_candidates(criteria, radius, limit, after)
            if len(rows) > limit:
                break
        page = rows[:limit]
        listed_rows = (
            select(*LISTED_COLUMNS, group_summaries.c.name.label("group_name"))
            .join(group_summaries, group_summaries.c.group_id == events.c.group_id)
            .where(events.c.id.in_([row["id"] for row in page]))
        )
        by_id = {row["id"]: row for row in (await self.session.execute(listed_rows)).mappings()}
        values = [[by_id[row["id"]][key] for key in LISTED_KEYS] for row in page]
        listed = [
            _listed(value, by_id[row["id"]]["group_name"], km_of_chord2(row["chord2"]))
            for value, row in zip(values, page, strict=True)
        ]
        position = None
        if len(rows) > limit:
            last_row = rows[limit - 1]
            if by_distance:
                position = {"c": last_row["chord2"], "i": last_row["id"]}
            else:
                position = {"s": last_row["starts_at"].isoformat(), "i": last_row["id"]}
        return _listed_page(values, listed, position)

    async def _soonest_nearby(
        self, criteria: EventSearch, limit: int, after: dict[str, Any] | None
    ) -> tuple[list[RowMapping], bool]:
        """Up to limit + 1 (id, starts_at, chord2) within the radius, soonest first, from the next SOONEST_SCAN
        upcoming events only, walked in start order (ix_events_upcoming_places covers the place) until a page is
        found: a page of a dense radius without reading, let alone sorting, every event in it. Exact (True) when
        more than a page was found (every event not walked starts later) or nothing is beyond the scan; else the
        caller reads the radius as a whole."""
        assert criteria.near is not None
        if criteria.text:  # the text is not in the index: the lat band's query reads it
            return [], False
        in_order = tuple_(events.c.starts_at, events.c.id)
        upcoming = _upcoming_in_start_order(criteria, after)
        last_scanned = (
            select(events.c.starts_at, events.c.id)
            .where(*upcoming)
            .order_by(events.c.starts_at, events.c.id)
            .offset(SOONEST_SCAN - 1)
            .limit(1)
        )
        cutoff = (await self.session.execute(last_scanned)).first()
        box = bounding_box(criteria.near, criteria.radius_km)
        chord2 = _chord2(events.c, criteria.near)
        # `lat + 0` and `lng + 0`: the same tests, but no index serves them, so the walk is in start order; and
        # the group is checked per event walked (EXISTS), so the walk is not turned into a loop over groups.
        lat, lng = events.c.lat + 0, events.c.lng + 0
        group_filters, event_filters = _filters_split(criteria)
        query = (
            select(events.c.id, events.c.starts_at, chord2.label("chord2"))
            .where(
                *event_filters,
                *upcoming,
                lat.between(box.min_lat, box.max_lat),
                or_(*(lng.between(west, east) for west, east in box.lng_ranges)),
                chord2 <= chord2_within(criteria.radius_km),
                exists().where(group_summaries.c.group_id == events.c.group_id, *group_filters),
            )
            .order_by(events.c.starts_at, events.c.id)
            .limit(limit + 1)
        )
        if cutoff is not None:
            query = query.where(in_order <= tuple(cutoff))
        rows = list((await self.session.execute(query)).mappings())
        return rows, len(rows) > limit or cutoff is None

    async def _nearby_candidates(
        self, criteria: EventSearch, radius_km: float, limit: int, after: dict[str, Any] | None
    ) -> list[RowMapping]:
        """Up to limit + 1 (id, starts_at, chord2) of the events within `radius_km` of the centre, in the order asked,
        after the cursor's position."""
        assert criteria.near is not None
        box = bounding_box(criteria.near, radius_km)
        chord2 = _chord2(events.c, criteria.near)
        query = (
            select(events.c.id, events.c.starts_at, chord2.label("chord2"))
            .join(group_summaries, group_summaries.c.group_id == events.c.group_id)
            .where(
                *_filters(criteria, BAND_COLUMNS),
                events.c.lat.between(box.min_lat, box.max_lat),
                or_(*(events.c.lng.between(west, east) for west, east in box.lng_ranges)),
                chord2 <= chord2_within(radius_km),
            )
        )
        if criteria.order is SearchOrder.DISTANCE:
            query = query.order_by(chord2, events.c.id)
            if after is not None:
                last, last_id = _position(after, "c")
                query = query.where(or_(chord2 > last, and_(chord2 == last, events.c.id > last_id)))
        else:
            query = query.order_by(events.c.starts_at, events.c.id)
            if after is not None:
                since, last_id = _position(after, "s")
                query = query.where(
                    or_(events.c.starts_at > since, and_(events.c.starts_at == since, events.c.id > last_id))
                )
        return list((await self.session.execute(query.limit(limit + 1))).mappings())


# The covers of a page of events with their uploaders' roles (EventStore.cover_roles).
COVER_ROLES = FixedRead(
    select(cover_images.c.image_id, cover_images.c.variants, group_members.c.group_id, group_members.c.role)
    .join(group_members, group_members.c.user_id == cover_images.c.owner_id)
    .where(
        cover_images.c.image_id.in_(bindparam("image_ids", expanding=True)),
        group_members.c.group_id.in_(bindparam("group_ids", expanding=True)),
    )
)

# The search in start order, one statement per shape (which filters are given, first page or not): built and
# compiled once, run on the driver (FixedRead). Built per call, its construction, cache key and compilation were
# most of a list's CPU (docs/request-path.md, events). Bounded: the shapes are the combinations of seven flags.
_SOONEST_PAGES: dict[tuple[bool, ...], FixedRead] = {}
GROUP_NAME = len(LISTED_COLUMNS)  # where the group's name is in its rows, after the listed columns


def _soonest_page(criteria: EventSearch, after: bool) -> FixedRead:
    shape = (
        criteria.caller is not None,
        criteria.starts_before is not None,
        bool(criteria.text),
        bool(criteria.topic),
        bool(criteria.group_id),
        criteria.attending is not None,
        after,
    )
    read = _SOONEST_PAGES.get(shape)
    if read is None:
        query = (
            select(*LISTED_COLUMNS, group_summaries.c.name.label("group_name"))
            .join(group_summaries, group_summaries.c.group_id == events.c.group_id)
            .where(*_filters(criteria, bound=True))
            .order_by(events.c.starts_at, events.c.id)
        )
        if after:
            since, last_id = (
                bindparam("since", type_=events.c.starts_at.type),
                bindparam("last_id", type_=events.c.id.type),
            )
            query = query.where(
                or_(events.c.starts_at > since, and_(events.c.starts_at == since, events.c.id > last_id))
            )
        read = _SOONEST_PAGES[shape] = FixedRead(query.limit(bindparam("limit", type_=Integer)))
    return read


def _search_values(criteria: EventSearch) -> dict[str, Any]:
    """The values of the parameters `_filters(criteria, bound=True)` names."""
    return {
        "caller": criteria.caller,
        "starts_from": criteria.starts_from,
        "starts_before": criteria.starts_before,
        "text": _like_escaped(criteria.text) if criteria.text else None,
        "topic": criteria.topic,
        "group_id": criteria.group_id,
        "attending": criteria.attending,
    }


def _like_escaped(text: str) -> str:
    """The text with LIKE's wildcards escaped by LIKE_ESCAPE, as SQLAlchemy's `autoescape=True` does it."""
    return text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%").replace("_", LIKE_ESCAPE + "_")


LIKE_ESCAPE = "/"


# Of the nearby search soonest first: how many upcoming events (in start order) are looked at for a page before
# the whole radius is read instead. A radius holding 1 in 200 of the upcoming events fills a page of 20 from them.
SOONEST_SCAN = 4096


# The lat band's query tests `status || ''`: the same test, but one no index serves, so SQLite (which plans without
# statistics) reads the band from ix_events_nearby rather than every upcoming event in start order.
BAND_COLUMNS = SimpleNamespace(
    **({column.name: column for column in events.c} | {"status": events.c.status.concat("")})
)


def _chord2(columns: Any, center: Location) -> ColumnElement[float]:
    """The squared chord from the centre to the venue (domain.unit_vector), of the events table or a subquery."""
    cx, cy, cz = unit_vector(center)
    return ((columns.x - cx) * (columns.x - cx) + (columns.y - cy) * (columns.y - cy)) + (columns.z - cz) * (
        columns.z - cz
    )


def _filters(criteria: EventSearch, columns: Any = events.c, *, bound: bool = False) -> list[ColumnElement[bool]]:
    """Scheduled events of live groups the caller may see, and whatever else was asked (the query joins
    group_summaries); on the events table's columns, or stand-ins of the same names. `bound`: the criteria's
    values are parameters, named as `_search_values` gives them (for a statement compiled once)."""
    group_filters, event_filters = _filters_split(criteria, columns, bound=bound)
    return [*group_filters, *event_filters]


def _filters_split(
    criteria: EventSearch, columns: Any = events.c, *, bound: bool = False
) -> tuple[list[ColumnElement[bool]], list[ColumnElement[bool]]]:
    """The search's conditions on the event's group (live, visible to the caller) and on the event itself."""
    values = _search_values(criteria)

    def given(name: str, column: ColumnElement[Any]) -> Any:
        return bindparam(name, type_=column.type) if bound else values[name]

    visible = group_summaries.c.visibility == Visibility.PUBLIC.value
    if criteria.caller is not None:
        mine = select(group_members.c.group_id).where(
            group_members.c.user_id == given("caller", group_members.c.user_id)
        )
        visible = or_(visible, columns.group_id.in_(mine))
    group_filters = [group_summaries.c.deleted_at.is_(None), visible]
    filters: list[ColumnElement[bool]] = [
        columns.status == EventStatus.SCHEDULED.value,
        columns.starts_at >= given("starts_from", events.c.starts_at),
    ]
    if criteria.starts_before is not None:
        filters.append(columns.starts_at < given("starts_before", events.c.starts_at))
    if criteria.text:
        filters.append(columns.search_text.contains(given("text", events.c.search_text), escape=LIKE_ESCAPE))
    if criteria.topic:
        topic = given("topic", group_topics.c.topic)
        filters.append(columns.group_id.in_(select(group_topics.c.group_id).where(group_topics.c.topic == topic)))
    if criteria.group_id:
        filters.append(columns.group_id == given("group_id", events.c.group_id))
    if criteria.attending is not None:
        going = select(rsvps.c.event_id).where(
            rsvps.c.user_id == given("attending", rsvps.c.user_id), rsvps.c.status == RsvpStatus.GOING.value
        )
        filters.append(columns.id.in_(going))
    return group_filters, filters


def _postgis_nearby(criteria: EventSearch, source: Any) -> Select[Any]:
    """The listed columns of the events of `source` (the events table, or a subquery of its rows and location) that the
    caller may see, with their group's name and their distance (postgis.DISTANCE); in no order, and not yet within
    the radius."""
    assert criteria.near is not None
    columns = [source.c[column.name] for column in LISTED_COLUMNS]
    distance_m = postgis.nearest_first(postgis.location_of(source), criteria.near)
    return (
        select(*columns, group_summaries.c.name.label("group_name"), distance_m.label(postgis.DISTANCE))
        .join(group_summaries, group_summaries.c.group_id == source.c.group_id)
        .where(*_filters(criteria, source.c))
    )


def _upcoming_in_start_order(criteria: EventSearch, after: dict[str, Any] | None) -> list[ColumnElement[bool]]:
    """The conditions of a walk of the upcoming events in start order (soonest first), from the cursor on."""
    upcoming = [events.c.status == EventStatus.SCHEDULED.value, events.c.starts_at >= criteria.starts_from]
    if criteria.starts_before is not None:
        upcoming.append(events.c.starts_at < criteria.starts_before)
    if after is not None:
        upcoming.append(tuple_(events.c.starts_at, events.c.id) > _position(after, "s"))  # the columns' types
    return upcoming


def _position(after: dict[str, Any], key: str) -> tuple[Any, str]:
    """The (sort key, id) of a cursor: a start time ("s"), a squared chord to the centre ("c", SQLite) or a distance in
    metres ("m", PostgreSQL)."""
    try:
        value, last_id = after[key], str(after["i"])
        if key == "s":
            return cursor_time(value), last_id
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(value)
        return float(value), last_id
    except (KeyError, TypeError, ValueError):
        raise InvalidEvent("The cursor is not one this API issued (or belongs to another sort).", field="cursor")


def _series(row: RowMapping) -> Series:
    through, ends = row["generated_through"], row["ends_before"]
    return Series(
        id=SeriesId(row["id"]),
        group_id=GroupId(row["group_id"]),
        rule=row["rule"],
        first=datetime.fromisoformat(row["first_start"]),
        template=Template.from_json(row["template"]),
        generated_through=date.fromisoformat(through) if through else None,
        ends_before=date.fromisoformat(ends) if ends else None,
        created_by=UserId(row["created_by"]),
        created_at=row["created_at"],
        source_uid=row["source_uid"],
        excluded_days=frozenset(date.fromisoformat(day) for day in row["excluded_days"] or ()),
        added_days=frozenset(date.fromisoformat(day) for day in row["added_days"] or ()),
        changed_days={
            date.fromisoformat(day): Template.from_json(details).details
            for day, details in (row["changed_days"] or {}).items()
        },
    )


class SeriesStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    @staticmethod
    def _columns(found: Series) -> dict[str, Any]:
        return {
            "group_id": found.group_id,
            "rule": found.rule,
            "first_start": found.first.isoformat(timespec="seconds"),
            "template": found.template.to_json(),
            "generated_through": found.generated_through.isoformat() if found.generated_through else None,
            "ends_before": found.ends_before.isoformat() if found.ends_before else None,
            "created_by": found.created_by,
            "created_at": found.created_at,
            "source_uid": found.source_uid,
            "excluded_days": sorted(day.isoformat() for day in found.excluded_days) or None,
            "added_days": sorted(day.isoformat() for day in found.added_days) or None,
            "changed_days": {
                day.isoformat(): Template.of(details).to_json() for day, details in sorted(found.changed_days.items())
            }
            or None,
        }

    async def add(self, found: Series) -> None:
        await self.session.execute(insert(series).values(id=found.id, **self._columns(found)))

    async def save(self, found: Series) -> None:
        await self.session.execute(update(series).where(series.c.id == found.id).values(**self._columns(found)))

    async def get_for_update(self, series_id: str) -> Series | None:
        """The series locked: two top-up rounds (or a top-up and an edit) never make the same dates twice."""
        query = select(series).where(series.c.id == series_id).with_for_update()
        row = (await self.session.execute(query)).mappings().first()
        return _series(row) if row else None

    async def imported_for_update(self, group_id: str, uid: str) -> Series | None:
        """The group's series imported from this recurring VEVENT UID, locked (ux_series_group_id_source_uid)."""
        query = select(series).where(series.c.group_id == group_id, series.c.source_uid == uid).with_for_update()
        row = (await self.session.execute(query)).mappings().first()
        return _series(row) if row else None

    async def due_ids(self, through: date) -> list[SeriesId]:
        """Series not cut short whose occurrences are made only up to a date before `through` (a few days'
        slack against time zones: a series made up to its horizon is skipped by its own check)."""
        query = select(series.c.id).where(
            series.c.ends_before.is_(None),
            or_(series.c.generated_through.is_(None), series.c.generated_through < through.isoformat()),
        )
        return [SeriesId(i) for i in await self.session.scalars(query)]


def _counts(event: Seats) -> dict[str, Any]:
    """The values of SAVE_COUNTS (and ANSWER_WITH_COUNTS): the event's seat counters and FIFO counter."""
    return {
        "event_id": event.id,
        "going": event.going_count,
        "waiting": event.waitlist_count,
        "queue_counter": event.queue_counter,
    }


def _rsvp_values(event_id: str, rsvp: Rsvp) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": rsvp.user_id,
        "status": rsvp.status.value,
        "guests": rsvp.guests,
        "queue_no": rsvp.queue_no,
        "responded_at": rsvp.responded_at,
        "checked_in_at": rsvp.checked_in_at,
    }


def _rsvp(row: Mapping[Any, Any], prefix: str = "") -> Rsvp:
    return Rsvp(
        user_id=UserId(row[prefix + "user_id"]),
        status=RsvpStatus(row[prefix + "status"]),
        guests=row[prefix + "guests"],
        queue_no=row[prefix + "queue_no"],
        responded_at=row[prefix + "responded_at"],
        checked_in_at=row[prefix + "checked_in_at"],
    )


# Going first, then the waitlist, each in FIFO order; "not going" last.
STATUS_RANK = case({RsvpStatus.GOING.value: 0, RsvpStatus.WAITLISTED.value: 1}, value=rsvps.c.status, else_=2)
# The ranks of the people an attendees page lists (going, waiting), and the range of rsvps.queue_no (Integer: 32
# bits on PostgreSQL): a forged cursor's values outside them are a 422.
LISTED_RANKS = (0, 1)
QUEUE_NUMBERS = range(-(2**31), 2**31)


def _attendees(after: bool) -> FixedRead:
    """A page of an event's attendees with their names and avatars: the first, or the one after a cursor's
    (status rank, queue_no, user_id). Built and compiled once per shape, run on the driver."""
    query = (
        select(rsvps, profiles.c.display_name, profiles.c.avatar)
        .select_from(rsvps.outerjoin(profiles, profiles.c.user_id == rsvps.c.user_id))
        .where(
            rsvps.c.event_id == bindparam("event_id"),
            rsvps.c.status.in_([RsvpStatus.GOING, RsvpStatus.WAITLISTED]),
        )
        .order_by(STATUS_RANK, rsvps.c.queue_no, rsvps.c.user_id)
    )
    if after:
        rank = bindparam("rank", type_=Integer)
        queue_no, user_id = bindparam("queue_no", type_=Integer), bindparam("user_id", type_=rsvps.c.user_id.type)
        query = query.where(
            or_(
                rank < STATUS_RANK,
                and_(
                    rank == STATUS_RANK,
                    or_(rsvps.c.queue_no > queue_no, and_(rsvps.c.queue_no == queue_no, rsvps.c.user_id > user_id)),
                ),
            )
        )
    return FixedRead(query.limit(bindparam("limit", type_=Integer)))


ATTENDEES = {False: _attendees(after=False), True: _attendees(after=True)}


@dataclass(frozen=True)
class AttendeeRow:
    rsvp: Rsvp
    position: int | None  # on the waitlist, 1 = next
    display_name: str | None = None
    avatar: ImageVariants | None = None


class RsvpStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def attending(self, event_id: str, also: str | None = None) -> list[Rsvp]:
        """The event's RSVPs that hold or wait for a seat, plus `also`'s own answer whatever it is."""
        holding = rsvps.c.status.in_([RsvpStatus.GOING, RsvpStatus.WAITLISTED])
        wanted = or_(holding, rsvps.c.user_id == also) if also is not None else holding
        query = select(rsvps).where(rsvps.c.event_id == event_id, wanted)
        return [_rsvp(row) for row in (await self.session.execute(query)).mappings()]

    async def waitlist_head(self, event_id: str, limit: int) -> list[Rsvp]:
        """The first `limit` parties waiting, in FIFO order (ix_rsvps_event_id_status_queue_no)."""
        return [_rsvp(row) for row in await WAITLIST_HEAD.rows(self.session, {"event_id": event_id, "limit": limit})]

    async def going_ids(self, event_id: str) -> list[UserId]:
        query = select(rsvps.c.user_id).where(rsvps.c.event_id == event_id, rsvps.c.status == RsvpStatus.GOING)
        return [UserId(u) for u in await self.session.scalars(query)]

    async def of(self, event_id: str, user_id: str) -> Rsvp | None:
        row = await RSVP_OF.first(self.session, {"event_id": event_id, "user_id": user_id})
        return _rsvp(row) if row else None

    async def waitlist_position(self, event_id: str, rsvp: Rsvp) -> int | None:
        if rsvp.status is not RsvpStatus.WAITLISTED:
            return None
        ahead = await WAITLIST_AHEAD.scalar(self.session, {"event_id": event_id, "queue_no": rsvp.queue_no})
        return 1 + int(ahead or 0)

    async def checked_in_count(self, event_id: str) -> int:
        """People checked in: those still listed plus those who deleted their account since (a count only)."""
        listed = (
            select(func.count())
            .select_from(rsvps)
            .where(rsvps.c.event_id == event_id, rsvps.c.checked_in_at.is_not(None))
            .scalar_subquery()
        )
        query = select(events.c.anonymous_check_ins + listed).where(events.c.id == event_id)
        return int(await self.session.scalar(query) or 0)

    async def of_person(self, user_id: str) -> list[tuple[EventId, Rsvp]]:
        """Every RSVP of the person, whatever its status, by event (ix_rsvps_user_id)."""
        query = select(rsvps).where(rsvps.c.user_id == user_id).order_by(rsvps.c.event_id)
        return [(EventId(row["event_id"]), _rsvp(row)) for row in (await self.session.execute(query)).mappings()]

    async def remove(self, event_id: str, user_id: str) -> None:
        await self.session.execute(delete(rsvps).where(rsvps.c.event_id == event_id, rsvps.c.user_id == user_id))

    async def save(self, event_id: str, changed: Sequence[Rsvp]) -> None:
        """Write the changed RSVPs, new or not (one upsert each)."""
        upsert = UPSERT_RSVP[self.session.dialect.name]
        for rsvp in changed:
            await upsert.execute(self.session, _rsvp_values(event_id, rsvp))

    async def save_answer(self, changed: Sequence[Rsvp], counted: Seats, counts_changed: bool) -> None:
        """What an answer changed: its RSVPs, and the event's counters (`counted`) when they changed. One RSVP with
        the counters is one statement on PostgreSQL (ANSWER_WITH_COUNTS)."""
        if counts_changed and len(changed) == 1 and self.session.dialect.name == "postgresql":
            answer = {f"rsvp_{name}": value for name, value in _rsvp_values(counted.id, changed[0]).items()}
            await ANSWER_WITH_COUNTS.execute(self.session, {**answer, **_counts(counted)})
            return
        await self.save(counted.id, changed)
        if counts_changed:
            await SAVE_COUNTS.execute(self.session, _counts(counted))

    async def page(self, event_id: str, limit: int, after: dict[str, Any] | None) -> tuple[list[AttendeeRow], Any]:
        """Going first, then the waitlist in order (with positions); keyset-paged by (status rank, queue_no)."""
        params: dict[str, Any] = {"event_id": event_id, "limit": limit + 1}
        waiting_before = 0
        if after is not None:
            try:
                params["rank"], params["queue_no"] = cursor_int(after["r"]), cursor_int(after["q"])
                params["user_id"] = str(after["u"])
                waiting_before = cursor_int(after["w"])
            except (KeyError, TypeError, ValueError):
                raise InvalidEvent("The cursor is not one this API issued.", field="cursor")
            # What an issued cursor holds: a listed rank, a queue number the column stores (asyncpg refuses one
            # past its 32 bits with a DataError, a 500) and a count of parties before it.
            if params["rank"] not in LISTED_RANKS or params["queue_no"] not in QUEUE_NUMBERS or waiting_before < 0:
                raise InvalidEvent("The cursor is not one this API issued.", field="cursor")
        rows = await ATTENDEES[after is not None].rows(self.session, params)
        found: list[AttendeeRow] = []
        for row in rows[:limit]:
            rsvp = _rsvp(row)
            position = None
            if rsvp.status is RsvpStatus.WAITLISTED:
                waiting_before += 1
                position = waiting_before
            avatar = ImageVariants(**row["avatar"]) if row["avatar"] else None
            found.append(AttendeeRow(rsvp, position, row["display_name"], avatar))
        position_after = None
        if len(rows) > limit:
            last = found[-1].rsvp
            rank = 0 if last.status is RsvpStatus.GOING else 1
            position_after = {"r": rank, "q": last.queue_no, "u": last.user_id, "w": waiting_before}
        return found, position_after


def _comment(row: RowMapping) -> Comment:
    return Comment(
        id=CommentId(row["id"]),
        event_id=EventId(row["event_id"]),
        author_id=UserId(row["author_id"]) if row["author_id"] is not None else None,
        body=row["body"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class CommentStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def add(self, comment: Comment) -> None:
        await self.session.execute(
            insert(comments).values(
                id=comment.id,
                event_id=comment.event_id,
                author_id=comment.author_id,
                body=comment.body,
                created_at=comment.created_at,
                updated_at=comment.updated_at,
            )
        )

    async def get(self, event_id: str, comment_id: str) -> Comment | None:
        query = select(comments).where(comments.c.id == comment_id, comments.c.event_id == event_id)
        row = (await self.session.execute(query)).mappings().first()
        return _comment(row) if row else None

    async def save(self, comment: Comment) -> None:
        await self.session.execute(
            update(comments).where(comments.c.id == comment.id).values(body=comment.body, updated_at=comment.updated_at)
        )

    async def remove(self, comment_id: str) -> None:
        await self.session.execute(delete(comments).where(comments.c.id == comment_id))

    async def unname_author(self, user_id: str) -> int:
        """The person's comments stay, by nobody (the author deleted their account); returns how many."""
        result = await self.session.execute(
            update(comments).where(comments.c.author_id == user_id).values(author_id=None)
        )
        return rowcount(result)

    async def page(self, event_id: str, limit: int, after: dict[str, Any] | None) -> tuple[list[Comment], Any]:
        """Oldest first, keyset-paged by (created_at, id)."""
        query = select(comments).where(comments.c.event_id == event_id).order_by(comments.c.created_at, comments.c.id)
        if after is not None:
            try:
                since, last_id = cursor_time(after["t"]), str(after["i"])
            except (KeyError, TypeError, ValueError):
                raise InvalidEvent("The cursor is not one this API issued.", field="cursor")
            query = query.where(
                or_(comments.c.created_at > since, and_(comments.c.created_at == since, comments.c.id > last_id))
            )
        rows = list((await self.session.execute(query.limit(limit + 1))).mappings())
        found = [_comment(row) for row in rows[:limit]]
        position = {"t": found[-1].created_at.isoformat(), "i": found[-1].id} if len(rows) > limit else None
        return found, position


class FeedStore:
    """Secret calendar feed tokens, one per person."""

    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def token_of(self, user_id: str) -> str | None:
        token: str | None = await self.session.scalar(
            select(calendar_feeds.c.token).where(calendar_feeds.c.user_id == user_id)
        )
        return token

    async def add(self, user_id: str, token: str, now: datetime) -> None:
        await self.session.execute(insert(calendar_feeds).values(user_id=user_id, token=token, created_at=now))

    async def remove(self, user_id: str) -> bool:
        result = await self.session.execute(delete(calendar_feeds).where(calendar_feeds.c.user_id == user_id))
        return rowcount(result) == 1

    async def owner_of(self, token: str) -> UserId | None:
        owner = await self.session.scalar(select(calendar_feeds.c.user_id).where(calendar_feeds.c.token == token))
        return UserId(owner) if owner else None


# The read models' upserts from group.created/updated and user.profile_updated (a consumer applies one per message:
# every PATCH of a group or a profile), built once and run on sqlite3 directly inside the consumer's transaction on
# inline SQLite (FixedWrite). Built per call through SQLAlchemy they were most of those consumers' CPU. An UPDATE's
# row is named by `key`: through SQLAlchemy (PostgreSQL) a parameter named after a column not in its SET would be
# taken for one more column to set.
_SUMMARY_VALUES = ("slug", "name", "visibility", "topics", "city", "lat", "lng")
_KEPT_VALUES = (*_SUMMARY_VALUES, "updated_at")
# The time is checked in the UPDATE too, not only on the row read before it: two appliers of the same group (a
# rebalance's overlap, a dead letter replayed beside the live message) cannot both pass the read's check and let the
# older commit last.
KEEP_GROUP = FixedWrite(
    update(group_summaries)
    .where(
        group_summaries.c.group_id == bindparam("key"),
        group_summaries.c.deleted_at.is_(None),
        or_(group_summaries.c.updated_at.is_(None), group_summaries.c.updated_at <= bindparam("updated_at")),
    )
    .values({name: bindparam(name) for name in _KEPT_VALUES})
)
ADD_GROUP = FixedWrite(insert(group_summaries).values({name: bindparam(name) for name in ("group_id", *_KEPT_VALUES)}))
GROUP_STATE = FixedWrite(
    select(*(group_summaries.c[name] for name in _KEPT_VALUES), group_summaries.c.deleted_at).where(
        group_summaries.c.group_id == bindparam("group_id")
    )
)
CLEAR_GROUP_TOPICS = FixedWrite(delete(group_topics).where(group_topics.c.group_id == bindparam("group_id")))
ADD_GROUP_TOPIC = FixedWrite(insert(group_topics).values(group_id=bindparam("group_id"), topic=bindparam("topic")))
_PROFILE_VALUES = ("display_name", "avatar", "updated_at")
# An older message arriving late (a retry, a replay) never overwrites a newer one; a deletion is final.
KEEP_PROFILE = FixedWrite(
    update(profiles)
    .where(
        profiles.c.user_id == bindparam("key"),
        profiles.c.deleted_at.is_(None),
        profiles.c.updated_at <= bindparam("updated_at"),
    )
    .values({name: bindparam(name) for name in _PROFILE_VALUES})
)
ADD_PROFILE = FixedWrite(insert(profiles).values({name: bindparam(name) for name in ("user_id", *_PROFILE_VALUES)}))
PROFILE_KEPT = FixedWrite(select(profiles.c.user_id).where(profiles.c.user_id == bindparam("user_id")))


class GroupStore:
    """The read model of groups: what the events service shows of a group and whether it still exists."""

    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def get(self, group_id: str) -> GroupSummary | None:
        """A group that exists (not deleted), or None."""
        row = (await self.session.execute(GROUP_BY_ID, {"group_id": group_id})).mappings().first()
        if row is None:
            return None
        return GroupSummary(
            GroupId(row["group_id"]), row["name"], Visibility(row["visibility"]), tuple(row["topics"]), row["city"]
        )

    async def apply(self, snapshot: GroupCreated | GroupUpdated) -> None:
        """Upsert from group.created / group.updated; a deleted group stays deleted, and a message older than the
        state kept (one replayed late) changes nothing."""
        location = snapshot.location
        changed_at = snapshot.created_at if isinstance(snapshot, GroupCreated) else snapshot.updated_at
        values = {
            "slug": snapshot.slug,
            "name": snapshot.name,
            "visibility": snapshot.visibility,
            "topics": list(snapshot.topics),
            "city": snapshot.city,
            "lat": location.lat if location else None,
            "lng": location.lng if location else None,
        }
        kept = await GROUP_STATE.first(self.session, {"group_id": snapshot.group_id})
        if kept is None:
            await ADD_GROUP.execute(self.session, {"group_id": snapshot.group_id, **values, "updated_at": changed_at})
        elif kept["deleted_at"] is not None or (kept["updated_at"] is not None and kept["updated_at"] > changed_at):
            return
        else:
            # Most group edits change nothing kept here (a description, the join policy): only the time is written
            # then (a late message older than this edit must still be refused).
            if any(kept[name] != value for name, value in values.items()) or kept["updated_at"] != changed_at:
                kept_now = {"key": snapshot.group_id, **values, "updated_at": changed_at}
                if not await KEEP_GROUP.execute(self.session, kept_now):
                    return  # a newer message was applied since the read (or the group was deleted)
            if kept["topics"] == values["topics"]:
                return  # the topic rows were written from these very topics
        await CLEAR_GROUP_TOPICS.execute(self.session, {"group_id": snapshot.group_id})
        for topic in sorted({t.casefold() for t in snapshot.topics}):
            await ADD_GROUP_TOPIC.execute(self.session, {"group_id": snapshot.group_id, "topic": topic})

    async def mark_deleted(self, group_id: str, name: str, slug: str, when: datetime) -> None:
        result = await self.session.execute(
            update(group_summaries).where(group_summaries.c.group_id == group_id).values(deleted_at=when)
        )
        if rowcount(result) == 0:
            # group.deleted overtook group.created (another topic): the tombstone keeps a late creation out.
            await self.session.execute(
                insert(group_summaries).values(
                    group_id=group_id, slug=slug, name=name, visibility="private", topics=[], deleted_at=when
                )
            )

    async def is_deleted(self, group_id: str) -> bool:
        query = select(group_summaries.c.deleted_at).where(group_summaries.c.group_id == group_id)
        return (await self.session.scalar(query)) is not None


class ProfileStore:
    """The read model of people's public names and avatars. A message carries the whole profile and its time, so
    an older one arriving late (a retry, a replay) never overwrites a newer one, and a deletion is final."""

    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def apply(self, event: UserProfileUpdated) -> None:
        values = {
            "display_name": event.display_name,
            "avatar": event.avatar.model_dump() if event.avatar else None,
            "updated_at": event.updated_at,
        }
        kept = await KEEP_PROFILE.execute(self.session, {"key": event.user_id, **values})
        if kept == 0 and await self._absent(event.user_id):
            await ADD_PROFILE.execute(self.session, {"user_id": event.user_id, **values})

    async def forget(self, user_id: str, deleted_at: datetime) -> None:
        values = {"display_name": None, "avatar": None, "updated_at": deleted_at, "deleted_at": deleted_at}
        result = await self.session.execute(update(profiles).where(profiles.c.user_id == user_id).values(**values))
        if rowcount(result) == 0:
            await self.session.execute(insert(profiles).values(user_id=user_id, **values))

    async def _absent(self, user_id: str) -> bool:
        return await PROFILE_KEPT.first(self.session, {"user_id": user_id}) is None


class MemberStore:
    """The read model of memberships and roles: who belongs to which group, as what."""

    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def role(self, group_id: str, user_id: str | None) -> str | None:
        """The person's role in the group, None when not a member (or anonymous)."""
        if user_id is None:
            return None
        role: str | None = await self.session.scalar(ROLE, {"group_id": group_id, "user_id": user_id})
        return role

    async def put(self, group_id: str, user_id: str, role: str) -> None:
        result = await self.session.execute(
            update(group_members)
            .where(group_members.c.group_id == group_id, group_members.c.user_id == user_id)
            .values(role=role)
        )
        if rowcount(result) == 0:
            await self.session.execute(insert(group_members).values(group_id=group_id, user_id=user_id, role=role))

    async def remove(self, group_id: str, user_id: str) -> None:
        await self.session.execute(
            delete(group_members).where(group_members.c.group_id == group_id, group_members.c.user_id == user_id)
        )

    async def remove_all(self, group_id: str) -> None:
        await self.session.execute(delete(group_members).where(group_members.c.group_id == group_id))

    async def remove_person(self, user_id: str) -> None:
        """A deleted account belongs to no group here any more (its token, valid a while longer, answers nothing)."""
        await self.session.execute(delete(group_members).where(group_members.c.user_id == user_id))


# --- unit of work -----------------------------------------------------------------------------------------------


class PersonalDataStore:
    """What the events service holds of one person, as the files of their data export (others' ids left out)."""

    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def files_of(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        event = [events.c.id.label("event_id"), events.c.title.label("event_title"), events.c.starts_at]
        rsvps_query = (
            select(*event, rsvps.c.status, rsvps.c.guests, rsvps.c.responded_at)
            .join(events, events.c.id == rsvps.c.event_id)
            .where(rsvps.c.user_id == user_id)
            .order_by(events.c.starts_at, events.c.id)
        )
        comments_query = (
            select(
                *event, comments.c.id.label("comment_id"), comments.c.body, comments.c.created_at, comments.c.updated_at
            )
            .join(events, events.c.id == comments.c.event_id)
            .where(comments.c.author_id == user_id)
            .order_by(comments.c.created_at, comments.c.id)
        )
        check_ins_query = (
            select(*event, rsvps.c.checked_in_at)
            .join(events, events.c.id == rsvps.c.event_id)
            .where(rsvps.c.user_id == user_id, rsvps.c.checked_in_at.is_not(None))
            .order_by(rsvps.c.checked_in_at, events.c.id)
        )
        return {
            "events/rsvps.json": rows((await self.session.execute(rsvps_query)).mappings()),
            "events/comments.json": rows((await self.session.execute(comments_query)).mappings()),
            "events/check_ins.json": rows((await self.session.execute(check_ins_query)).mappings()),
        }


class Stores:
    """Every store of the service on one session."""

    def __init__(self, session: AsyncConnection) -> None:
        self.session = session
        self.events = EventStore(session)
        self.rsvps = RsvpStore(session)
        self.groups = GroupStore(session)
        self.members = MemberStore(session)
        self.comments = CommentStore(session)
        self.feeds = FeedStore(session)
        self.profiles = ProfileStore(session)
        self.series = SeriesStore(session)
        self.personal_data = PersonalDataStore(session)

    @cached_property
    def covers(self) -> ReadyImageStore:
        # Made when first used: it builds its query on creation, a tenth of an RSVP's own CPU when every unit of
        # work made one (an RSVP never reads covers).
        return ReadyImageStore(self.session, cover_images)


class EventsUnitOfWork(UnitOfWork):
    """One transaction of the events service: its stores plus the outbox."""

    stores: Stores

    def open_stores(self, session: AsyncConnection) -> None:
        self.stores = Stores(session)

    @property
    def events(self) -> EventStore:
        return self.stores.events

    @property
    def rsvps(self) -> RsvpStore:
        return self.stores.rsvps

    @property
    def groups(self) -> GroupStore:
        return self.stores.groups

    @property
    def members(self) -> MemberStore:
        return self.stores.members

    @property
    def comments(self) -> CommentStore:
        return self.stores.comments

    @property
    def feeds(self) -> FeedStore:
        return self.stores.feeds

    @property
    def profiles(self) -> ProfileStore:
        return self.stores.profiles

    @property
    def series(self) -> SeriesStore:
        return self.stores.series

    @property
    def covers(self) -> ReadyImageStore:
        return self.stores.covers


def unit_of_work(context: ServiceContext) -> EventsUnitOfWork:
    return EventsUnitOfWork(context.db, clock=context.clock, signal=context.signal)


@asynccontextmanager
async def reading(db: Database) -> AsyncIterator[Stores]:
    """Stores on a read-only connection (Core, no ORM session): queries that do not wait for SQLite's write turn."""
    async with db.read_connection() as connection:
        yield Stores(connection)
