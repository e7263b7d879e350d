"""Stores of the notifications service: read models kept from other services' events, the inbox, preferences,
deliveries (claimed with a lease, SKIP LOCKED on PostgreSQL), stream tickets and kept secrets; and the unit of work."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, NamedTuple

from sqlalchemy import (
    BindParameter,
    Integer,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gatherly.contracts.events import EventSnapshot
from gatherly.kernel.clock import Clock
from gatherly.kernel.db import Database, rowcount
from gatherly.kernel.exports import rows
from gatherly.kernel.fixed_reads import FixedRead, FixedWrite
from gatherly.kernel.geo import Point, bounding_box, distance_km
from gatherly.kernel.runtime import ServiceContext
from gatherly.kernel.uow import OutboxSignal, UnitOfWork
from gatherly.notifications.domain import (
    Channel,
    EventFacts,
    EventId,
    GroupId,
    InvitationMail,
    Kind,
    Notice,
    Preferences,
    UserId,
)
from gatherly.notifications.tables import (
    attendees,
    deliveries,
    events,
    group_members,
    groups,
    invitation_mails,
    invitation_opt_outs,
    metadata,
    notifications,
    preferences,
    push_receipts,
    push_subscriptions,
    recipients,
    reminders,
    secrets,
    stream_tickets,
)

__all__ = ["NotificationsUnitOfWork", "metadata", "reading", "unit_of_work"]

# IN lists stay well under SQLite's and asyncpg's parameter limits.
CHUNK = 500


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


# The statements every notification runs (telling people, an RSVP's read models and reminders), built once: building
# one and its cache key per call cost more CPU than SQLite running it (cProfile of an RSVP, bench/rsvp_cpu.py).
# Those of a consumer's transaction (an RSVP's, `tell`'s) are FixedWrites: on inline SQLite they run on sqlite3
# directly, as the events service's RSVP does, where SQLAlchemy's execution path cost several times what SQLite
# takes for each (docs/request-path.md, "Twelfth pass: RSVP"); elsewhere through SQLAlchemy as before.
# Where the two databases need their own INSERT ... ON CONFLICT, there is one statement per dialect.
USER_IDS: BindParameter[Any] = bindparam("user_ids", expanding=True)
RECIPIENTS_AMONG = FixedWrite(select(recipients).where(recipients.c.user_id.in_(USER_IDS)))
DELETED_AMONG = select(recipients.c.user_id).where(
    recipients.c.user_id.in_(USER_IDS), recipients.c.deleted_at.is_not(None)
)
PREFERENCES_AMONG = FixedWrite(select(preferences).where(preferences.c.user_id.in_(USER_IDS)))
SUBSCRIBED_AMONG = FixedWrite(
    select(push_subscriptions.c.user_id).where(push_subscriptions.c.user_id.in_(USER_IDS)).distinct()
)
# The rsvp.* handler (one person, one event per message) reads in one statement, with the person and the event bound
# once (RecipientStore.at_event): what the service knows of the person (nothing, for a message that overtook their
# registration), the preferences they set (none: no row), whether they have a push subscription, the event as kept
# (none: not known yet) and whether the person has reminders of it not sent yet (so a first answer, with none to
# drop, runs no DELETE). The handler read these in five statements before (docs/request-path.md).
_wanted = select(bindparam("user_id", type_=recipients.c.user_id.type).label("user_id")).subquery("wanted")
_EVENT_ID = bindparam("event_id", type_=events.c.event_id.type)
EVENT_FACTS = ("event_id", "group_id", "group_name", "title", "starts_at", "timezone", "place", "status")
PERSON_AT_EVENT = FixedWrite(
    select(
        recipients.c.user_id,
        recipients.c.email,
        recipients.c.display_name,
        recipients.c.confirmed,
        recipients.c.deleted_at,
        preferences.c.user_id.label("preferences_of"),
        preferences.c.email.label("email_choices"),
        preferences.c.push.label("push_choices"),
        preferences.c.reminder_hours,
        exists().where(push_subscriptions.c.user_id == _wanted.c.user_id).label("subscribed"),
        *(events.c[name].label(f"event_{name}") for name in EVENT_FACTS),
        exists()
        .where(
            reminders.c.event_id == _EVENT_ID,
            reminders.c.user_id == _wanted.c.user_id,
            reminders.c.sent_at.is_(None),
        )
        .label("reminders_pending"),
    ).select_from(
        _wanted.outerjoin(recipients, recipients.c.user_id == _wanted.c.user_id)
        .outerjoin(preferences, preferences.c.user_id == _wanted.c.user_id)
        .outerjoin(events, events.c.event_id == _EVENT_ID)
    )
)
EVENT_BY_ID = FixedWrite(select(events).where(events.c.event_id == bindparam("event_id")))
DELIVERY_VALUES = (
    "id",
    "notification_id",
    "user_id",
    "channel",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
)
INSERT_DELIVERIES = FixedWrite(insert(deliveries).values({name: bindparam(name) for name in DELIVERY_VALUES}))
DROP_UNSENT_REMINDERS = FixedWrite(
    delete(reminders).where(
        reminders.c.event_id == bindparam("event_id"),
        reminders.c.user_id == bindparam("user_id"),
        reminders.c.sent_at.is_(None),
    )
)
# Both spell INSERT ... ON CONFLICT alike; SQLAlchemy has a construct per dialect.
DIALECTS: dict[str, Callable[[Table], Any]] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
NOTIFICATION_VALUES = ("id", "user_id", "kind", "title", "body", "link", "source", "created_at")
# A notice's row unless its cause already told the person (the unique source and person): the ids of those written.
INSERT_NEW_NOTIFICATIONS = {
    name: FixedWrite(
        make(notifications)
        .values({column: bindparam(column) for column in NOTIFICATION_VALUES})
        .on_conflict_do_nothing(index_elements=[notifications.c.source, notifications.c.user_id])
        .returning(notifications.c.id)
    )
    for name, make in DIALECTS.items()
}
UPSERT_ATTENDEE = {
    name: FixedWrite(
        (upsert := make(attendees)).on_conflict_do_update(
            index_elements=[attendees.c.event_id, attendees.c.user_id], set_={"status": upsert.excluded.status}
        )
    )
    for name, make in DIALECTS.items()
}
# The reminders not sent yet are deleted first, so a conflict is one already sent: it stays sent, never again. A
# person's reminders of an event (up to MAX_REMINDERS) go in one INSERT of as many rows: one statement per count and
# dialect, built when first needed.
_NEW_REMINDERS: dict[tuple[str, int], FixedWrite] = {}


def _new_reminders(dialect: str, count: int) -> FixedWrite:
    found = _NEW_REMINDERS.get((dialect, count))
    if found is None:
        rows = [
            {
                "event_id": bindparam("event_id", type_=reminders.c.event_id.type),
                "user_id": bindparam("user_id", type_=reminders.c.user_id.type),
                "hours_before": bindparam(f"hours_before_{index}", type_=reminders.c.hours_before.type),
                "due_at": bindparam(f"due_at_{index}", type_=reminders.c.due_at.type),
            }
            for index in range(count)
        ]
        found = _NEW_REMINDERS[dialect, count] = FixedWrite(
            DIALECTS[dialect](reminders).values(rows).on_conflict_do_nothing()
        )
    return found


def _dialect(session: AsyncConnection) -> str:
    return session.dialect.name


# --- read models ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    user_id: UserId
    email: str | None
    display_name: str
    confirmed: bool
    deleted: bool = False  # a tombstone: they deleted their account

    @property
    def mailable(self) -> bool:
        return self.confirmed and bool(self.email) and not self.deleted


@dataclass(frozen=True)
class PersonToTell:
    """What RecipientStore.person reads of one person."""

    recipient: Recipient | None  # None: the service does not know them
    preferences: Preferences | None  # None: they set none (the defaults)
    subscribed: bool  # has at least one push subscription


@dataclass(frozen=True)
class PersonAtEvent:
    """What RecipientStore.at_event reads of one person and one event."""

    person: PersonToTell
    event: EventFacts | None  # None: the service does not know the event (yet)
    reminders_pending: bool  # the person has reminders of the event not sent yet


# A person and where they are (their profile's location, when they gave one).
Located = tuple[UserId, float | None, float | None]


# What user.* and group.created/updated events keep (one consumer transaction per profile or group edit), built once
# and run on sqlite3 directly inside the consumer's transaction on inline SQLite (FixedWrite). A recipient's INSERT
# and UPDATE name the columns an event gives: one statement per set of them (a handful in all). An UPDATE's row is
# named by `key`: through SQLAlchemy (PostgreSQL) a parameter named after a column not in its SET would be taken for
# one more column to set.
RECIPIENT_STATE = FixedWrite(select(recipients.c.deleted_at).where(recipients.c.user_id == bindparam("user_id")))
_KEEPING: dict[tuple[str, tuple[str, ...]], FixedWrite] = {}


def _keeping(kind: str, names: tuple[str, ...]) -> FixedWrite:
    found = _KEEPING.get((kind, names))
    if found is None:
        if kind == "insert":
            columns = ("user_id", "confirmed", "updated_at", *names)
            found = FixedWrite(insert(recipients).values({name: bindparam(name) for name in columns}))
        else:
            found = FixedWrite(
                update(recipients)
                .where(recipients.c.user_id == bindparam("key"))
                .values({name: bindparam(name) for name in ("updated_at", *names)})
            )
        _KEEPING[(kind, names)] = found
    return found


GROUP_STATE = FixedWrite(
    select(groups.c.deleted_at, groups.c.visibility).where(groups.c.group_id == bindparam("group_id"))
)
ADD_GROUP = FixedWrite(insert(groups).values(group_id=bindparam("group_id"), visibility=bindparam("visibility")))
KEEP_VISIBILITY = FixedWrite(
    update(groups).where(groups.c.group_id == bindparam("key")).values(visibility=bindparam("visibility"))
)


class RecipientStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def keep(self, user_id: str, at: datetime, *, confirmed: bool | None = None, **values: Any) -> None:
        """Upsert what an event says of a person (unless they are deleted); `confirmed` only ever turns on."""
        row = await RECIPIENT_STATE.first(self.session, {"user_id": user_id})
        if row is None:
            names = tuple(sorted(values))
            await _keeping("insert", names).execute(
                self.session, {"user_id": user_id, "confirmed": bool(confirmed), "updated_at": at, **values}
            )
            return
        if row["deleted_at"] is not None:
            return
        if confirmed:
            values["confirmed"] = True
        await _keeping("update", tuple(sorted(values))).execute(
            self.session, {"key": user_id, "updated_at": at, **values}
        )

    async def forget(self, user_id: str, at: datetime) -> None:
        """The person is gone: keep a tombstone only (no address, no name, no place)."""
        await self.keep(user_id, at)
        await self.session.execute(
            update(recipients)
            .where(recipients.c.user_id == user_id)
            .values(email=None, display_name=None, lat=None, lng=None, confirmed=False, deleted_at=at)
        )

    async def without_digest(
        self, source: str, after: str, limit: int
    ) -> list[tuple[UserId, float | None, float | None]]:
        """Confirmed people (by id, after `after`) who have not had this week's digest: (id, lat, lng)."""
        had = select(notifications.c.seq).where(
            notifications.c.source == source, notifications.c.user_id == recipients.c.user_id
        )
        rows = await self.session.execute(
            select(recipients.c.user_id, recipients.c.lat, recipients.c.lng)
            .where(
                recipients.c.confirmed.is_(True),
                recipients.c.deleted_at.is_(None),
                recipients.c.user_id > after,
                ~had.exists(),
            )
            .order_by(recipients.c.user_id)
            .limit(limit)
        )
        return [(UserId(r.user_id), r.lat, r.lng) for r in rows]

    async def with_email(self, email: str) -> UserId | None:
        """The person whose confirmed account has this address (addresses are stored lower-cased)."""
        found = await self.session.scalar(
            select(recipients.c.user_id).where(
                recipients.c.email == email, recipients.c.confirmed.is_(True), recipients.c.deleted_at.is_(None)
            )
        )
        return UserId(found) if found is not None else None

    async def deleted(self, user_ids: Sequence[str]) -> set[UserId]:
        """Those of `user_ids` who deleted their account (their tombstones)."""
        gone: set[UserId] = set()
        for chunk in _chunks(user_ids):
            rows = await self.session.execute(DELETED_AMONG, {"user_ids": list(chunk)})
            gone.update(UserId(user_id) for user_id in rows.scalars())
        return gone

    async def get(self, user_id: str) -> Recipient | None:
        found = await self.many([user_id])
        return found.get(UserId(user_id))

    async def many(self, user_ids: Sequence[str]) -> dict[UserId, Recipient]:
        """Those of `user_ids` the service knows and who did not delete their account."""
        return {user_id: found for user_id, found in (await self.known(user_ids)).items() if not found.deleted}

    async def at_event(self, user_id: str, event_id: str) -> PersonAtEvent:
        """What telling one person about one event needs, in one read: what the service knows of them (a tombstone
        too), their preferences, whether they have a push subscription, the event as kept, and whether they have
        reminders of it not sent yet."""
        row = await PERSON_AT_EVENT.first(self.session, {"user_id": user_id, "event_id": event_id})
        assert row is not None  # the statement reads from the person's id: always one row
        chosen = None
        if row["preferences_of"] is not None:
            chosen = _preferences(row["email_choices"], row["push_choices"], row["reminder_hours"])
        recipient = _recipient(row) if row["user_id"] is not None else None
        event = None
        if row["event_event_id"] is not None:
            event = _facts({name: row[f"event_{name}"] for name in EVENT_FACTS})
        return PersonAtEvent(
            PersonToTell(recipient, chosen, bool(row["subscribed"])), event, bool(row["reminders_pending"])
        )

    async def known(self, user_ids: Sequence[str]) -> dict[UserId, Recipient]:
        """Those of `user_ids` the service knows, tombstones too (`deleted`)."""
        found: dict[UserId, Recipient] = {}
        for chunk in _chunks(user_ids):
            for row in await RECIPIENTS_AMONG.rows(self.session, {"user_ids": list(chunk)}):
                found[UserId(row["user_id"])] = _recipient(row)
        return found


def _recipient(row: Any) -> Recipient:
    return Recipient(
        UserId(row["user_id"]),
        row["email"],
        row["display_name"] or "",
        row["confirmed"],
        deleted=row["deleted_at"] is not None,
    )


class MemberStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def put(self, group_id: str, user_id: str, role: str) -> None:
        if await self.session.scalar(select(groups.c.deleted_at).where(groups.c.group_id == group_id)):
            return
        changed = await self.session.execute(
            update(group_members)
            .where(group_members.c.group_id == group_id, group_members.c.user_id == user_id)
            .values(role=role)
        )
        if rowcount(changed) == 0:
            await self.session.execute(insert(group_members).values(group_id=group_id, user_id=user_id, role=role))

    async def remove(self, group_id: str, user_id: str) -> None:
        await self.session.execute(
            delete(group_members).where(group_members.c.group_id == group_id, group_members.c.user_id == user_id)
        )

    async def keep_group(self, group_id: str, visibility: str) -> None:
        """A group's visibility (unless it is gone: a late update must not bring it back). Most group edits leave
        it as it was: the row is then not written again (a statement, and its page at the commit)."""
        kept = await GROUP_STATE.first(self.session, {"group_id": group_id})
        if kept is None:
            await ADD_GROUP.execute(self.session, {"group_id": group_id, "visibility": visibility})
        elif kept["deleted_at"] is None and kept["visibility"] != visibility:
            await KEEP_VISIBILITY.execute(self.session, {"key": group_id, "visibility": visibility})

    async def forget_group(self, group_id: str, at: datetime) -> None:
        await self.session.execute(delete(group_members).where(group_members.c.group_id == group_id))
        if await self.session.scalar(select(groups.c.group_id).where(groups.c.group_id == group_id)) is None:
            await self.session.execute(insert(groups).values(group_id=group_id, deleted_at=at))
        else:
            await self.session.execute(update(groups).where(groups.c.group_id == group_id).values(deleted_at=at))

    async def of(self, group_id: str) -> list[UserId]:
        rows = await self.session.scalars(select(group_members.c.user_id).where(group_members.c.group_id == group_id))
        return [UserId(r) for r in rows]

    async def lock_group(self, group_id: str) -> None:
        """Hold the group until the transaction ends, so handling an event scheduled in it and a member joining it
        (two consumers, two topics) never run side by side, each missing the other's uncommitted row. SQLite's
        writers run one at a time already (BEGIN IMMEDIATE)."""
        if _dialect(self.session) == "postgresql":
            await self.session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(group_id, 0))))


def _place(snapshot: EventSnapshot) -> str:
    if snapshot.venue is not None:
        return ", ".join(part for part in (snapshot.venue.name, snapshot.venue.address) if part)
    return "Online" if snapshot.online else ""


class EventStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def keep(self, snapshot: EventSnapshot) -> None:
        """Upsert from a snapshot unless what is kept is as new or newer (by the event's sequence)."""
        values = {
            "group_id": snapshot.group_id,
            "group_name": snapshot.group_name,
            "title": snapshot.title,
            "starts_at": snapshot.starts_at,
            "timezone": snapshot.timezone,
            "place": _place(snapshot),
            "lat": snapshot.venue.location.lat if snapshot.venue and snapshot.venue.location else None,
            "lng": snapshot.venue.location.lng if snapshot.venue and snapshot.venue.location else None,
            "sequence": snapshot.sequence,
        }
        kept = await self.session.scalar(select(events.c.sequence).where(events.c.event_id == snapshot.event_id))
        if kept is None:
            await self.session.execute(insert(events).values(event_id=snapshot.event_id, status="scheduled", **values))
        elif kept < snapshot.sequence:
            await self.session.execute(update(events).where(events.c.event_id == snapshot.event_id).values(**values))

    async def scheduled(self, event_id: str, at: datetime, by: str, cause: str) -> None:
        """Note when and by whom the event was scheduled, and the message that told the members (`cause`)."""
        await self.session.execute(
            update(events)
            .where(events.c.event_id == event_id)
            .values(scheduled_at=at, scheduled_by=by, scheduled_cause=cause)
        )

    async def scheduled_since(self, group_id: str, since: datetime, now: datetime) -> list[Scheduling]:
        """The group's events still to come that were scheduled at or after `since`, with who scheduled them and
        the cause their members were told under."""
        rows = await self.session.execute(
            select(events).where(
                events.c.group_id == group_id,
                events.c.scheduled_at >= since,
                events.c.status == "scheduled",
                events.c.starts_at > now,
            )
        )
        return [Scheduling(_facts(row), row["scheduled_by"], row["scheduled_cause"]) for row in rows.mappings()]

    async def cancel(self, event_id: str, sequence: int) -> None:
        await self.session.execute(
            update(events).where(events.c.event_id == event_id).values(status="cancelled", sequence=sequence)
        )
        await self.session.execute(delete(attendees).where(attendees.c.event_id == event_id))

    async def get(self, event_id: str) -> EventFacts | None:
        row = await EVENT_BY_ID.first(self.session, {"event_id": event_id})
        return _facts(row) if row is not None else None

    async def upcoming_in_groups_of(self, user_id: str, start: datetime, end: datetime, limit: int) -> list[EventFacts]:
        rows = await self.session.execute(
            select(events)
            .join(group_members, group_members.c.group_id == events.c.group_id)
            .where(
                group_members.c.user_id == user_id,
                events.c.status == "scheduled",
                events.c.starts_at >= start,
                events.c.starts_at < end,
            )
            .order_by(events.c.starts_at, events.c.event_id)
            .limit(limit)
        )
        return [_facts(row) for row in rows.mappings()]

    async def upcoming_near(
        self, center: Point, radius_km: float, start: datetime, end: datetime, limit: int
    ) -> list[EventFacts]:
        """Public groups' scheduled events in the window within `radius_km`, nearest first."""
        box = bounding_box(center, radius_km)
        longitudes = or_(*(events.c.lng.between(west, east) for west, east in box.lng_ranges))
        rows = await self.session.execute(
            select(events)
            .join(groups, groups.c.group_id == events.c.group_id)
            .where(
                groups.c.visibility == "public",
                groups.c.deleted_at.is_(None),
                events.c.status == "scheduled",
                events.c.starts_at >= start,
                events.c.starts_at < end,
                events.c.lat.between(box.min_lat, box.max_lat),
                longitudes,
            )
        )
        near = [
            (distance, _facts(row))
            for row in rows.mappings()
            if (distance := distance_km(center, Point(row["lat"], row["lng"]))) <= radius_km
        ]
        return [facts for _, facts in sorted(near, key=lambda pair: (pair[0], pair[1].event_id))][:limit]


@dataclass(frozen=True)
class Scheduling:
    """A kept event as `event.scheduled` told its group's members: by whom, under which cause (message id)."""

    event: EventFacts
    by: str
    cause: str


def _facts(row: Any) -> EventFacts:
    return EventFacts(
        EventId(row["event_id"]),
        GroupId(row["group_id"]),
        row["group_name"],
        row["title"],
        row["starts_at"],
        row["timezone"],
        row["place"],
        row["status"],
    )


class AttendeeStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def put(self, event_id: str, user_id: str, status: str) -> None:
        await UPSERT_ATTENDEE[_dialect(self.session)].execute(
            self.session, {"event_id": event_id, "user_id": user_id, "status": status}
        )

    async def remove(self, event_id: str, user_id: str) -> None:
        await self.session.execute(
            delete(attendees).where(attendees.c.event_id == event_id, attendees.c.user_id == user_id)
        )

    async def going(self, event_id: str) -> list[UserId]:
        rows = await self.session.scalars(
            select(attendees.c.user_id).where(attendees.c.event_id == event_id, attendees.c.status == "going")
        )
        return [UserId(r) for r in rows]

    async def going_to(self, user_id: str) -> list[EventId]:
        rows = await self.session.scalars(
            select(attendees.c.event_id).where(attendees.c.user_id == user_id, attendees.c.status == "going")
        )
        return [EventId(r) for r in rows]

    async def forget_person(self, user_id: str) -> None:
        await self.session.execute(delete(attendees).where(attendees.c.user_id == user_id))
        await self.session.execute(delete(group_members).where(group_members.c.user_id == user_id))


# --- the inbox -----------------------------------------------------------------------------------------------------


class Notification(NamedTuple):
    """One notification of someone's inbox. A named tuple (as immutable as a frozen dataclass): a page makes up to a
    hundred, and a frozen dataclass sets each field through `object.__setattr__` (docs/request-path.md)."""

    seq: int
    id: str
    user_id: UserId
    kind: Kind
    title: str
    body: str
    link: str
    created_at: datetime
    read_at: datetime | None


# Each kind by its value: the same member `Kind(value)` gives, without EnumMeta's call per row; a value this build
# does not know still goes through `Kind(value)`, whose error is the same as before.
_KIND_OF = {kind.value: kind for kind in Kind}


def _notification_from(values: Sequence[Any]) -> Notification:
    """The notification whose row holds the values of NOTIFICATION_COLUMNS, in their order (UserId is `str` at run
    time: the id as read)."""
    seq, notification_id, user_id, kind, title, body, link, created_at, read_at = values
    return Notification(
        seq, notification_id, user_id, _KIND_OF.get(kind) or Kind(kind), title, body, link, created_at, read_at
    )


# The inbox's page, in the four shapes `?unread=` and a cursor make: each compiled once (FixedRead), run on the
# driver's connection; the newest first, `limit` rows (the API asks for one more than a page, to know of a next).
NOTIFICATION_COLUMNS = (
    notifications.c.seq,
    notifications.c.id,
    notifications.c.user_id,
    notifications.c.kind,
    notifications.c.title,
    notifications.c.body,
    notifications.c.link,
    notifications.c.created_at,
    notifications.c.read_at,
)


def _inbox_page(unread_only: bool, before: bool) -> FixedRead:
    query = select(*NOTIFICATION_COLUMNS).where(notifications.c.user_id == bindparam("user_id"))
    if unread_only:
        query = query.where(notifications.c.read_at.is_(None))
    if before:
        query = query.where(notifications.c.seq < bindparam("before"))
    return FixedRead(query.order_by(notifications.c.seq.desc()).limit(bindparam("limit", type_=Integer)))


INBOX_PAGES = {
    (unread_only, before): _inbox_page(unread_only, before) for unread_only in (False, True) for before in (False, True)
}
UNREAD_COUNT = FixedRead(
    select(func.count().label("unread"))
    .select_from(notifications)
    .where(notifications.c.user_id == bindparam("user_id"), notifications.c.read_at.is_(None))
)
# The live stream's reads (on every wake of every open stream, and as a stream opens) and a send's notification:
# compiled once and run on the driver's connection too.
STREAM_AFTER = FixedRead(
    select(*NOTIFICATION_COLUMNS)
    .where(notifications.c.user_id == bindparam("user_id"), notifications.c.seq > bindparam("seq"))
    .order_by(notifications.c.seq)
    .limit(bindparam("limit", type_=Integer))
)
NEWEST_SEQ = FixedRead(
    select(func.max(notifications.c.seq).label("newest")).where(notifications.c.user_id == bindparam("user_id"))
)
NOTIFICATION_BY_ID = FixedRead(select(*NOTIFICATION_COLUMNS).where(notifications.c.id == bindparam("id")))


class InboxStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def add(self, notices: Sequence[Notice], source: str, now: datetime) -> list[tuple[str, Notice]]:
        """Put each notice in its person's inbox unless this cause already told them (a redelivery, a replay);
        returns the new notifications' ids with their notice."""
        if not notices:
            return []
        # One statement: a row that the same cause and person already have is skipped, and only the ids of the rows
        # written come back.
        numbered = {str(uuid.uuid4()): notice for notice in notices}
        written = await INSERT_NEW_NOTIFICATIONS[_dialect(self.session)].execute_many(
            self.session,
            [
                {
                    "id": notification_id,
                    "user_id": notice.user_id,
                    "kind": notice.kind.value,
                    "title": notice.title[:300],
                    "body": notice.body,
                    "link": notice.link[:500],
                    "source": source,
                    "created_at": now,
                }
                for notification_id, notice in numbered.items()
            ],
        )
        new = {row["id"] for row in written}
        return [(notification_id, notice) for notification_id, notice in numbered.items() if notification_id in new]

    async def page(self, user_id: str, *, unread_only: bool, limit: int, before: int | None) -> list[Notification]:
        """Newest first; `before` is the seq the previous page ended at."""
        read = INBOX_PAGES[unread_only, before is not None]
        found = await read.values(self.session, {"user_id": user_id, "before": before, "limit": limit})
        return [_notification_from(values) for values in found]

    async def after(self, user_id: str, seq: int, limit: int) -> list[Notification]:
        """Oldest first from just after `seq`: what a live stream has not sent yet."""
        found = await STREAM_AFTER.values(self.session, {"user_id": user_id, "seq": seq, "limit": limit})
        return [_notification_from(values) for values in found]

    async def newest_seq(self, user_id: str) -> int:
        return int(await NEWEST_SEQ.scalar(self.session, {"user_id": user_id}) or 0)

    async def unread_count(self, user_id: str) -> int:
        return int(await UNREAD_COUNT.scalar(self.session, {"user_id": user_id}) or 0)

    async def get(self, notification_id: str) -> Notification | None:
        found = await NOTIFICATION_BY_ID.values(self.session, {"id": notification_id})
        return _notification_from(found[0]) if found else None

    async def mark_read(self, user_id: str, notification_id: str, now: datetime) -> bool:
        """Whether the person has this notification (reading it twice is fine)."""
        found = await self.session.scalar(
            select(notifications.c.seq).where(notifications.c.id == notification_id, notifications.c.user_id == user_id)
        )
        if found is None:
            return False
        await self.session.execute(
            update(notifications)
            .where(notifications.c.seq == found, notifications.c.read_at.is_(None))
            .values(read_at=now)
        )
        return True

    async def mark_all_read(self, user_id: str, now: datetime) -> None:
        await self.session.execute(
            update(notifications)
            .where(notifications.c.user_id == user_id, notifications.c.read_at.is_(None))
            .values(read_at=now)
        )

    async def forget_person(self, user_id: str) -> dict[str, int]:
        """Deletes the person's inbox, sends (queued or not), preferences and stream tickets; counts by kind."""
        counted = {}
        for kind, table in (
            ("notifications", notifications),
            ("sends", deliveries),
            ("preferences", preferences),
            ("stream_tickets", stream_tickets),
        ):
            counted[kind] = rowcount(await self.session.execute(delete(table).where(table.c.user_id == user_id)))
        return counted


# --- preferences -----------------------------------------------------------------------------------------------------


def _preferences(email: Mapping[str, Any], push: Mapping[str, Any], reminder_hours: Iterable[int]) -> Preferences:
    """The preferences a row holds (its JSON columns as read). A kind this build no longer knows is ignored rather
    than refused: the row outlives the code that wrote it."""
    return Preferences(
        {_KIND_OF[k]: bool(v) for k, v in email.items() if k in _KIND_OF},
        {_KIND_OF[k]: bool(v) for k, v in push.items() if k in _KIND_OF},
        tuple(reminder_hours),
    )


# One person's preferences (the API's read, an unsubscribe, a person's reminders): compiled once, on the driver's
# connection, where the IN list of `many` cost an expanded statement per call (docs/request-path.md).
PREFERENCES_OF = FixedRead(
    select(preferences.c.email, preferences.c.push, preferences.c.reminder_hours).where(
        preferences.c.user_id == bindparam("user_id")
    )
)


class PreferenceStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def of(self, user_id: str) -> Preferences:
        """The person's preferences; the defaults for one who set none (no row)."""
        found = await PREFERENCES_OF.values(self.session, {"user_id": user_id})
        return _preferences(*found[0]) if found else Preferences()

    async def many(self, user_ids: Sequence[str]) -> dict[UserId, Preferences]:
        """The preferences of those who set any (the others have the defaults)."""
        found: dict[UserId, Preferences] = {}
        for chunk in _chunks(user_ids):
            for row in await PREFERENCES_AMONG.rows(self.session, {"user_ids": list(chunk)}):
                found[UserId(row["user_id"])] = _preferences(row["email"], row["push"], row["reminder_hours"])
        return found

    async def put(self, user_id: str, chosen: Preferences, now: datetime) -> None:
        values = {
            "email": {k.value: v for k, v in chosen.email.items()},
            "push": {k.value: v for k, v in chosen.push.items()},
            "reminder_hours": list(chosen.reminder_hours),
            "updated_at": now,
        }
        changed = await self.session.execute(
            update(preferences).where(preferences.c.user_id == user_id).values(**values)
        )
        if rowcount(changed) == 0:
            await self.session.execute(insert(preferences).values(user_id=user_id, **values))


# --- deliveries ----------------------------------------------------------------------------------------------------


class DeliveryStatus:
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up after the bounded retries: listed and retried by an operator
    DROPPED = "dropped"  # nobody to send to any more (the person deleted their account or address)


@dataclass(frozen=True)
class Delivery:
    id: str
    notification_id: str
    user_id: UserId
    channel: Channel
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None


def delivery_key(notification_id: str, channel: Channel) -> str:
    """The send's idempotency key: one notification is sent at most once per channel."""
    return f"{notification_id}:{channel.value}"


def _delivery(row: Any) -> Delivery:
    return Delivery(
        row["id"],
        row["notification_id"],
        UserId(row["user_id"]),
        Channel(row["channel"]),
        row["status"],
        row["attempts"],
        row["next_attempt_at"],
        row["last_error"],
    )


class DeliveryStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def add(self, items: Sequence[tuple[str, UserId, Channel]], now: datetime) -> None:
        if not items:
            return
        await INSERT_DELIVERIES.execute_many(
            self.session,
            [
                {
                    "id": delivery_key(notification_id, channel),
                    "notification_id": notification_id,
                    "user_id": user_id,
                    "channel": channel.value,
                    "status": DeliveryStatus.PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for notification_id, user_id, channel in items
            ],
        )

    async def claim_due(self, channel: Channel, now: datetime, lease: timedelta, limit: int) -> list[Delivery]:
        """Due sends of a channel, leased to the caller: other workers skip them until the lease ends (then a
        sender that died mid-send is taken over). PostgreSQL: rows another worker is claiming are skipped
        (SKIP LOCKED); SQLite: one writer at a time, so the read and the lease are one step for everyone."""
        query = (
            select(deliveries)
            .where(
                deliveries.c.status == DeliveryStatus.PENDING,
                deliveries.c.channel == channel.value,
                deliveries.c.next_attempt_at <= now,
            )
            .order_by(deliveries.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        due = [_delivery(row) for row in (await self.session.execute(query)).mappings()]
        if not due:
            return []
        held_until = now + lease
        await self.session.execute(
            update(deliveries).where(deliveries.c.id.in_([d.id for d in due])).values(next_attempt_at=held_until)
        )
        return [replace(d, next_attempt_at=held_until) for d in due]

    # A lease is held while the send is pending and its `next_attempt_at` is still the lease end its holder set:
    # a sender that took it over after the lease ran out set a later one. So every change below is made only by
    # the holder, and says which sends it changed (the others' leases were lost: another sender owns them now).

    def _held(self, ids: Sequence[str], held_until: datetime) -> Any:
        return and_(
            deliveries.c.id.in_(ids),
            deliveries.c.status == DeliveryStatus.PENDING,
            deliveries.c.next_attempt_at == held_until,
        )

    async def _change_held(self, ids: Sequence[str], held_until: datetime, **values: Any) -> set[str]:
        """One UPDATE for a batch of sends (CONCURRENCY of them at most); the ids it changed."""
        if not ids:
            return set()
        result = await self.session.execute(
            update(deliveries).where(self._held(ids, held_until)).values(**values).returning(deliveries.c.id)
        )
        return set(result.scalars())

    async def renew(self, ids: Sequence[str], held_until: datetime, until: datetime) -> set[str]:
        """The leases extended to `until` while the sends are still in progress."""
        return await self._change_held(ids, held_until, next_attempt_at=until)

    async def sent(self, ids: Sequence[str], held_until: datetime, now: datetime) -> set[str]:
        return await self._change_held(ids, held_until, status=DeliveryStatus.SENT, sent_at=now, last_error=None)

    async def failed(self, delivery_id: str, held_until: datetime, error: str, *, retry_at: datetime | None) -> bool:
        """One more failed attempt: retried at `retry_at`, or given up (status failed) when None."""
        values: dict[str, Any] = {"attempts": deliveries.c.attempts + 1, "last_error": error[:2000]}
        if retry_at is None:
            values["status"] = DeliveryStatus.FAILED
        else:
            values["next_attempt_at"] = retry_at
        return bool(await self._change_held([delivery_id], held_until, **values))

    async def postpone(self, ids: Sequence[str], held_until: datetime, until: datetime) -> set[str]:
        """Not an attempt (the channel's circuit is open): try again at `until`."""
        return await self._change_held(ids, held_until, next_attempt_at=until)

    async def dropped(self, ids: Sequence[str], held_until: datetime, reason: str) -> set[str]:
        return await self._change_held(ids, held_until, status=DeliveryStatus.DROPPED, last_error=reason)

    async def failed_ones(self, limit: int) -> list[Delivery]:
        return await self.with_status(DeliveryStatus.FAILED, limit)

    async def with_status(self, status: str, limit: int) -> list[Delivery]:
        rows = await self.session.execute(
            select(deliveries)
            .where(deliveries.c.status == status)
            .order_by(deliveries.c.created_at, deliveries.c.id)
            .limit(limit)
        )
        return [_delivery(row) for row in rows.mappings()]

    async def retry_failed(self, now: datetime, ids: Sequence[str] = ()) -> int:
        """Failed sends back in the queue with fresh attempts (all of them, or those named)."""
        condition = deliveries.c.status == DeliveryStatus.FAILED
        if ids:
            condition = and_(condition, deliveries.c.id.in_(ids))
        result = await self.session.execute(
            update(deliveries).where(condition).values(status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now)
        )
        return rowcount(result)

    async def next_due_at(self, channel: Channel) -> datetime | None:
        due: datetime | None = await self.session.scalar(
            select(func.min(deliveries.c.next_attempt_at)).where(
                deliveries.c.status == DeliveryStatus.PENDING, deliveries.c.channel == channel.value
            )
        )
        return due

    async def count(self, status: str) -> int:
        return int(
            await self.session.scalar(select(func.count()).select_from(deliveries).where(deliveries.c.status == status))
            or 0
        )


# --- push subscriptions --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushSubscription:
    id: str
    user_id: UserId
    endpoint: str
    p256dh: str
    auth: str


def subscription_id(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()


class PushSubscriptionStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def put(self, user_id: str, endpoint: str, p256dh: str, auth: str, now: datetime) -> str:
        """The browser's subscription, now the caller's (a browser profile has one endpoint per service)."""
        key = subscription_id(endpoint)
        await self.session.execute(delete(push_subscriptions).where(push_subscriptions.c.id == key))
        await self.session.execute(
            insert(push_subscriptions).values(
                id=key, user_id=user_id, endpoint=endpoint, p256dh=p256dh, auth=auth, created_at=now
            )
        )
        return key

    async def remove(self, user_id: str, key: str) -> bool:
        result = await self.session.execute(
            delete(push_subscriptions).where(push_subscriptions.c.id == key, push_subscriptions.c.user_id == user_id)
        )
        return rowcount(result) > 0

    async def remove_gone(self, key: str) -> None:
        await self.session.execute(delete(push_receipts).where(push_receipts.c.subscription_id == key))
        await self.session.execute(delete(push_subscriptions).where(push_subscriptions.c.id == key))

    async def delivered_to(self, delivery_id: str) -> set[str]:
        """The subscriptions that already took this push send."""
        rows = await self.session.scalars(
            select(push_receipts.c.subscription_id).where(push_receipts.c.delivery_id == delivery_id)
        )
        return set(rows)

    async def record_delivered(self, delivery_id: str, key: str, now: datetime) -> None:
        """A subscription took the push send (recorded once: a sender that lost its lease may record it too)."""
        recorded = select(push_receipts.c.delivery_id).where(
            push_receipts.c.delivery_id == delivery_id, push_receipts.c.subscription_id == key
        )
        if await self.session.scalar(recorded) is None:
            await self.session.execute(
                insert(push_receipts).values(delivery_id=delivery_id, subscription_id=key, delivered_at=now)
            )

    async def prune_receipts(self, before: datetime, limit: int) -> int:
        """Deletes up to `limit` receipts recorded before `before` whose send is finished (sent, dropped, or gone):
        a pending or failed send may still be retried, and its receipts are what keep the browsers that took it
        from getting it twice. Returns how many went."""
        finished = or_(
            deliveries.c.id.is_(None), deliveries.c.status.in_([DeliveryStatus.SENT, DeliveryStatus.DROPPED])
        )
        oldest = (
            select(push_receipts.c.delivery_id, push_receipts.c.subscription_id)
            .select_from(push_receipts.outerjoin(deliveries, deliveries.c.id == push_receipts.c.delivery_id))
            .where(push_receipts.c.delivered_at < before, finished)
            .order_by(push_receipts.c.delivered_at)
            .limit(limit)
        )
        keys = (await self.session.execute(oldest)).all()
        if not keys:
            return 0
        result = await self.session.execute(
            delete(push_receipts).where(
                tuple_(push_receipts.c.delivery_id, push_receipts.c.subscription_id).in_([tuple(k) for k in keys])
            )
        )
        return rowcount(result)

    async def receipts(self) -> list[tuple[str, str]]:
        """Every receipt (delivery, subscription), for tests and the operator."""
        rows = await self.session.execute(
            select(push_receipts.c.delivery_id, push_receipts.c.subscription_id).order_by(
                push_receipts.c.delivery_id, push_receipts.c.subscription_id
            )
        )
        return [(r.delivery_id, r.subscription_id) for r in rows]

    async def of(self, user_id: str) -> list[PushSubscription]:
        rows = await self.session.execute(
            select(push_subscriptions).where(push_subscriptions.c.user_id == user_id).order_by(push_subscriptions.c.id)
        )
        return [
            PushSubscription(r["id"], UserId(r["user_id"]), r["endpoint"], r["p256dh"], r["auth"])
            for r in rows.mappings()
        ]

    async def subscribed(self, user_ids: Sequence[str]) -> set[UserId]:
        """Which of these people have at least one subscription."""
        found: set[UserId] = set()
        for chunk in _chunks(user_ids):
            rows = await SUBSCRIBED_AMONG.rows(self.session, {"user_ids": list(chunk)})
            found |= {UserId(row["user_id"]) for row in rows}
        return found

    async def forget_person(self, user_id: str) -> int:
        """Deletes the person's subscriptions (and their receipts); returns how many subscriptions."""
        theirs = select(push_subscriptions.c.id).where(push_subscriptions.c.user_id == user_id)
        await self.session.execute(delete(push_receipts).where(push_receipts.c.subscription_id.in_(theirs)))
        result = await self.session.execute(delete(push_subscriptions).where(push_subscriptions.c.user_id == user_id))
        return rowcount(result)


# --- reminders -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DueReminder:
    event_id: EventId
    user_id: UserId
    hours_before: int


class ReminderStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def schedule(
        self, event_id: str, user_id: str, times: Sequence[tuple[int, datetime]], *, pending: bool = True
    ) -> None:
        """A person's reminders of an event are these from now on (those already sent stay sent, never again).
        `pending`: whether they may have unsent ones to replace (False, known from a read: nothing to delete)."""
        if pending:
            await DROP_UNSENT_REMINDERS.execute(self.session, {"event_id": event_id, "user_id": user_id})
        if not times:
            return
        values: dict[str, Any] = {"event_id": event_id, "user_id": user_id}
        for index, (hours, due_at) in enumerate(times):
            values[f"hours_before_{index}"], values[f"due_at_{index}"] = hours, due_at
        await _new_reminders(_dialect(self.session), len(times)).execute(self.session, values)

    async def drop(self, event_id: str, user_id: str | None = None) -> None:
        """Unsent reminders of an event (of one person, or everyone's) are not sent."""
        if user_id is not None:
            await DROP_UNSENT_REMINDERS.execute(self.session, {"event_id": event_id, "user_id": user_id})
            return
        await self.session.execute(
            delete(reminders).where(reminders.c.event_id == event_id, reminders.c.sent_at.is_(None))
        )

    async def claim_due(self, now: datetime, limit: int) -> list[DueReminder]:
        """Unsent reminders due now, locked for this transaction: another worker on PostgreSQL skips them (SKIP
        LOCKED) and, once this transaction marks them sent, never sees them; on SQLite this transaction is the only
        writer until it commits, so the same holds."""
        rows = await self.session.execute(
            select(reminders.c.event_id, reminders.c.user_id, reminders.c.hours_before)
            .where(reminders.c.sent_at.is_(None), reminders.c.due_at <= now)
            .order_by(reminders.c.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [DueReminder(EventId(r.event_id), UserId(r.user_id), r.hours_before) for r in rows]

    async def mark_sent(self, reminder: DueReminder, now: datetime) -> None:
        await self.session.execute(
            update(reminders)
            .where(
                reminders.c.event_id == reminder.event_id,
                reminders.c.user_id == reminder.user_id,
                reminders.c.hours_before == reminder.hours_before,
            )
            .values(sent_at=now)
        )

    async def next_due_at(self) -> datetime | None:
        due: datetime | None = await self.session.scalar(
            select(func.min(reminders.c.due_at)).where(reminders.c.sent_at.is_(None))
        )
        return due

    async def of(self, event_id: str) -> list[tuple[UserId, int, datetime, datetime | None]]:
        """(person, hours before, due at, sent at) of an event's schedule."""
        rows = await self.session.execute(
            select(reminders.c.user_id, reminders.c.hours_before, reminders.c.due_at, reminders.c.sent_at)
            .where(reminders.c.event_id == event_id)
            .order_by(reminders.c.user_id, reminders.c.hours_before)
        )
        return [(UserId(r.user_id), r.hours_before, r.due_at, r.sent_at) for r in rows]

    async def forget_person(self, user_id: str) -> int:
        """Deletes the person's reminder schedule (sent or not); returns how many rows."""
        return rowcount(await self.session.execute(delete(reminders).where(reminders.c.user_id == user_id)))


# --- stream tickets and secrets ------------------------------------------------------------------------------------


class TicketStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def add(self, ticket_hash: str, user_id: str, expires_at: datetime, now: datetime) -> None:
        # Spent and expired tickets go as new ones come: the table stays as small as the tickets in flight.
        await self.session.execute(delete(stream_tickets).where(stream_tickets.c.expires_at <= now))
        await self.session.execute(
            insert(stream_tickets).values(ticket_hash=ticket_hash, user_id=user_id, expires_at=expires_at)
        )

    async def take(self, ticket_hash: str, now: datetime) -> UserId | None:
        """The ticket's person if it is valid; it is spent either way (single use). One DELETE ... RETURNING: of two
        concurrent redemptions only the one whose delete removed the row gets the person (a SELECT first would let
        both read it before either deleted it)."""
        row = (
            (
                await self.session.execute(
                    delete(stream_tickets)
                    .where(stream_tickets.c.ticket_hash == ticket_hash)
                    .returning(stream_tickets.c.user_id, stream_tickets.c.expires_at)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        return UserId(row["user_id"]) if row["expires_at"] > now else None


class SecretStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def get(self, name: str) -> str | None:
        value: str | None = await self.session.scalar(select(secrets.c.value).where(secrets.c.name == name))
        return value

    async def add(self, name: str, value: str, now: datetime) -> bool:
        """Whether it was stored (False: another process stored one first; use theirs)."""
        try:
            async with self.session.begin_nested():
                await self.session.execute(insert(secrets).values(name=name, value=value, created_at=now))
        except IntegrityError:
            return False
        return True


class InvitationMailStore:
    """Invitations to addresses with no account, until mailed, and the addresses that opted out of them."""

    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def add(self, mail: InvitationMail, now: datetime) -> bool:
        """False when this invitation was queued before (a redelivery or a replay: it is mailed once)."""
        try:
            async with self.session.begin_nested():
                await self.session.execute(
                    insert(invitation_mails).values(
                        invitation_id=mail.invitation_id,
                        email=mail.email,
                        group_name=mail.group_name,
                        inviter_name=mail.inviter_name,
                        link=mail.link,
                        expires_at=mail.expires_at,
                        created_at=now,
                    )
                )
        except IntegrityError:
            return False
        return True

    async def get(self, invitation_id: str) -> InvitationMail | None:
        query = select(invitation_mails).where(invitation_mails.c.invitation_id == invitation_id)
        row = (await self.session.execute(query)).mappings().first()
        if row is None:
            return None
        return InvitationMail(
            row["invitation_id"], row["email"], row["group_name"], row["inviter_name"], row["link"], row["expires_at"]
        )

    async def forget(self, invitation_id: str) -> None:
        """Once sent: the row held the address and a live link."""
        await self.session.execute(delete(invitation_mails).where(invitation_mails.c.invitation_id == invitation_id))

    async def opt_out(self, email_hash: str, now: datetime) -> None:
        if not await self.opted_out(email_hash):
            await self.session.execute(insert(invitation_opt_outs).values(email_hash=email_hash, created_at=now))

    async def opted_out(self, email_hash: str) -> bool:
        query = select(invitation_opt_outs.c.email_hash).where(invitation_opt_outs.c.email_hash == email_hash)
        return await self.session.scalar(query) is not None


# --- unit of work -------------------------------------------------------------------------------------------------


class PersonalDataStore:
    """What the notifications service holds of one person, as the files of their data export (no push keys: those
    are the browser's secrets, not the person's data)."""

    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def files_of(self, user_id: str) -> dict[str, Any]:
        inbox_query = (
            select(
                notifications.c.id,
                notifications.c.kind,
                notifications.c.title,
                notifications.c.body,
                notifications.c.link,
                notifications.c.created_at,
                notifications.c.read_at,
            )
            .where(notifications.c.user_id == user_id)
            .order_by(notifications.c.seq)
        )
        preferences_query = select(
            preferences.c.email, preferences.c.push, preferences.c.reminder_hours, preferences.c.updated_at
        ).where(preferences.c.user_id == user_id)
        push_query = (
            select(push_subscriptions.c.endpoint, push_subscriptions.c.created_at)
            .where(push_subscriptions.c.user_id == user_id)
            .order_by(push_subscriptions.c.created_at, push_subscriptions.c.id)
        )
        chosen = rows((await self.session.execute(preferences_query)).mappings())
        return {
            "notifications/inbox.json": rows((await self.session.execute(inbox_query)).mappings()),
            "notifications/preferences.json": chosen[0] if chosen else {},
            "notifications/push_subscriptions.json": rows((await self.session.execute(push_query)).mappings()),
        }


class Stores:
    """Every store of the service on one session (read-only sessions use these too)."""

    def __init__(self, session: AsyncConnection) -> None:
        self.recipients = RecipientStore(session)
        self.members = MemberStore(session)
        self.events = EventStore(session)
        self.attendees = AttendeeStore(session)
        self.inbox = InboxStore(session)
        self.preferences = PreferenceStore(session)
        self.deliveries = DeliveryStore(session)
        self.tickets = TicketStore(session)
        self.secrets = SecretStore(session)
        self.reminders = ReminderStore(session)
        self.push = PushSubscriptionStore(session)
        self.invitations = InvitationMailStore(session)
        self.personal_data = PersonalDataStore(session)


class NotificationsUnitOfWork(UnitOfWork):
    """One transaction of the notifications service: its stores plus the outbox. Sends queued in it are written
    in the same transaction; after the commit this process's senders are woken (others find them by polling)."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock | None = None,
        signal: OutboxSignal | None = None,
        sends_signals: Mapping[Channel, OutboxSignal] | None = None,
    ) -> None:
        super().__init__(db, clock=clock, signal=signal)
        self.sends_signals = sends_signals or {}
        self._queued: set[Channel] = set()

    recipients: RecipientStore
    members: MemberStore
    events: EventStore
    attendees: AttendeeStore
    inbox: InboxStore
    preferences: PreferenceStore
    deliveries: DeliveryStore
    tickets: TicketStore
    secrets: SecretStore
    reminders: ReminderStore
    push: PushSubscriptionStore
    invitations: InvitationMailStore
    personal_data: PersonalDataStore

    def open_stores(self, session: AsyncConnection) -> None:
        stores = Stores(session)
        self.recipients = stores.recipients
        self.members = stores.members
        self.events = stores.events
        self.attendees = stores.attendees
        self.inbox = stores.inbox
        self.preferences = stores.preferences
        self.deliveries = stores.deliveries
        self.tickets = stores.tickets
        self.secrets = stores.secrets
        self.reminders = stores.reminders
        self.push = stores.push
        self.invitations = stores.invitations
        self.personal_data = stores.personal_data
        self._queued = set()

    async def queue_sends(self, items: Sequence[tuple[str, UserId, Channel]]) -> None:
        """Sends (notification id, person, channel) to make once this transaction commits."""
        await self.deliveries.add(items, self.clock.now())
        self._queued.update(channel for _, _, channel in items)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await super().__aexit__(exc_type, exc, tb)
        if exc_type is None:
            for channel in self._queued:
                if (signal := self.sends_signals.get(channel)) is not None:
                    signal.notify()
        self._queued = set()


# Where each channel's sender waits to be woken (ServiceContext.extras): {Channel: OutboxSignal}.
SENDS_SIGNALS = "sends_signals"


def unit_of_work(context: ServiceContext) -> NotificationsUnitOfWork:
    return NotificationsUnitOfWork(
        context.db, clock=context.clock, signal=context.signal, sends_signals=context.extras.get(SENDS_SIGNALS)
    )


@asynccontextmanager
async def reading(db: Database) -> AsyncIterator[Stores]:
    """Stores on a read-only connection (Core, no ORM session): queries that do not wait for SQLite's write turn."""
    async with db.read_connection() as connection:
        yield Stores(connection)
