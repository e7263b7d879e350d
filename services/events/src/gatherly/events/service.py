"""Use cases of the events service: one function per thing a person does, state and outbox committed together.

Every use case that changes an event or its seats locks the event row first (`get_for_update`): seats are counted
and handed out while no one else can change them, so concurrent answers queue and the event is never overbooked.
Who may do what is decided by domain.py from the local read models of groups and memberships (no call to the
groups service)."""

from __future__ import annotations

import secrets
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from gatherly.contracts.events import (
    CommentPosted,
    EventCancelled,
    EventCheckedIn,
    EventScheduled,
    EventUpdated,
    RsvpCancelled,
    RsvpConfirmed,
    RsvpEvent,
    RsvpPromoted,
    RsvpWaitlisted,
)
from gatherly.contracts.events import Venue as VenueOut
from gatherly.contracts.groups import GroupDeleted, GroupEventsCancelled
from gatherly.contracts.users import GeoPoint, ImageVariants, UserDeleted, UserDeletionStepDone, UserExportRequested
from gatherly.events.domain import (
    IMPORTED_FIELDS,
    TIME_OR_PLACE,
    Answer,
    Attendance,
    Change,
    Comment,
    CommentNotFound,
    Event,
    EventDetails,
    EventId,
    EventNotFound,
    EventSearch,
    EventStatus,
    FeedNotFound,
    GroupId,
    GroupNotFound,
    GroupSummary,
    ImportEntry,
    ImportOutcome,
    ImportResult,
    InvalidEvent,
    Reason,
    Rsvp,
    RsvpChange,
    RsvpStatus,
    Seats,
    UserId,
    check_cover,
    check_in,
    check_leader,
    check_may_delete,
    check_may_edit,
    check_member,
    check_schedulable,
    comment_body,
    may_see,
    may_see_in,
    new_comment_id,
    new_event_id,
    shows_cover,
    waitlist_to_read,
)
from gatherly.events.recurrence import HORIZON, Series, SeriesId, Template, check_rule, local
from gatherly.events.store import AttendeeRow, EventsUnitOfWork, Stores, Viewing
from gatherly.kernel.exports import export_part
from gatherly.kernel.read_models import variants_json
from gatherly.kernel.web import FilteredCursors, Listed, PageRequest


def _snapshot(event: Event, group_name: str) -> dict[str, Any]:
    details, venue = event.details, event.details.venue
    location = venue.location if venue else None
    return {
        "event_id": event.id,
        "group_id": event.group_id,
        "group_name": group_name,
        "title": details.title,
        "starts_at": details.starts_at,
        "ends_at": details.ends_at,
        "timezone": details.timezone,
        "venue": VenueOut(
            name=venue.name,
            address=venue.address,
            location=GeoPoint(lat=location.lat, lng=location.lng) if location else None,
        )
        if venue
        else None,
        "online": details.online_url is not None,
        "capacity": details.capacity,
        "sequence": event.sequence,
    }


async def _visible_group(stores: Stores, group_id: GroupId, caller: UserId | None) -> tuple[GroupSummary, str | None]:
    """The event's group and the caller's role in it; EventNotFound when the caller may not know of it."""
    group = await stores.groups.get(group_id)
    role = await stores.members.role(group_id, caller)
    if group is None or not may_see(group, role):
        raise EventNotFound("No such event.")
    return group, role


async def _viewed(stores: Stores, event_id: str, caller: UserId | None) -> tuple[Viewing, GroupSummary]:
    """The event's page in one read (event, group, role, own answer and place, check-ins, cover) and its group;
    EventNotFound when the caller may not know of it (the rule of `_visible_group`)."""
    found = await stores.events.viewing(event_id, caller)
    if found is None or found.group is None or not may_see(found.group, found.role):
        raise EventNotFound("No such event.")
    return found, found.group


async def _locked(uow: EventsUnitOfWork, event_id: str, caller: UserId) -> tuple[Event, GroupSummary, str | None]:
    event = await uow.events.get_for_update(event_id)
    if event is None:
        raise EventNotFound("No such event.")
    group, role = await _visible_group(uow.stores, event.group_id, caller)
    return event, group, role


# --- events -----------------------------------------------------------------------------------------------------


async def schedule_event(
    uow: EventsUnitOfWork, leader: UserId, group_id: GroupId, details: EventDetails, recurrence: str | None = None
) -> Event:
    """One event, or with an RRULE a series: its occurrences up to the horizon become events at once (the first
    is returned), later ones as time passes (`top_up_series`)."""
    rule = check_rule(recurrence) if recurrence is not None else None
    async with uow:
        now = uow.clock.now()
        group = await uow.groups.get(group_id)
        role = await uow.members.role(group_id, leader)
        if group is None or not may_see(group, role):
            raise GroupNotFound(f"No group {group_id} (or it has not reached the events service yet).")
        check_leader(role)
        check_schedulable(details, now)
        await _check_cover(uow, details.cover_image_id, leader)
        if rule is not None:
            return await _schedule_series(uow, leader, group, details, rule, now)
        event = Event(new_event_id(), group_id, details, created_by=leader, created_at=now, updated_at=now)
        await uow.events.add(event)
        uow.publish(EventScheduled(**_snapshot(event, group.name), scheduled_by=leader, scheduled_at=now))
        return event


async def _schedule_series(
    uow: EventsUnitOfWork,
    leader: UserId,
    group: GroupSummary,
    details: EventDetails,
    rule: str,
    now: datetime,
    imported: ImportEntry | None = None,
) -> Event:
    """The series and its occurrences up to the horizon; `imported`: the VEVENT it comes from, whose EXDATEs,
    RDATEs and changed occurrences it keeps."""
    first = local(details.starts_at, details.timezone)
    series = Series(
        SeriesId(str(uuid.uuid4())),
        group.id,
        rule,
        first,
        Template.of(details),
        None,
        None,
        leader,
        now,
        imported.uid if imported else None,
        excluded_days=imported.excluded if imported else frozenset(),
        added_days=imported.added if imported else frozenset(),
        changed_days=dict(imported.changed) if imported else {},
    )
    # A series that began long ago (an imported one) is expanded from today, not through its whole past.
    yesterday = local(now, details.timezone).date() - timedelta(days=1)
    if first.date() < yesterday:
        series = replace(series, generated_through=yesterday)
    days = series.due_days(now)
    if not days:
        raise InvalidEvent("The rule gives no occurrence within the next six months.", field="recurrence")
    await uow.series.add(series)
    made = await _make_occurrences(uow, series, group.name, days, now)
    return made[0]


async def _make_occurrences(
    uow: EventsUnitOfWork, series: Series, group_name: str, days: list[date], now: datetime
) -> list[Event]:
    made: list[Event] = []
    for day in days:
        event = Event(
            new_event_id(),
            series.group_id,
            series.details_on(day),
            created_by=series.created_by,
            created_at=now,
            updated_at=now,
            series_id=series.id,
            occurrence_date=day,
        )
        await uow.events.add(event)
        uow.publish(EventScheduled(**_snapshot(event, group_name), scheduled_by=series.created_by, scheduled_at=now))
        made.append(event)
    # Days made again below the series' end (a re-import's new RDATE) do not move that end back.
    through = max(days[-1], series.generated_through) if series.generated_through else days[-1]
    await uow.series.save(replace(series, generated_through=through))
    return made


async def top_up_series(uow: EventsUnitOfWork) -> int:
    """Makes the occurrences that came within the horizon since the last round, one transaction per series;
    returns how many. A series whose group is gone makes no more."""
    async with uow:
        now = uow.clock.now()
        due = await uow.series.due_ids((now + HORIZON + timedelta(days=2)).date())
    made = 0
    for series_id in due:
        async with uow:
            series = await uow.series.get_for_update(series_id)
            assert series is not None
            group = await uow.groups.get(series.group_id)
            days = series.due_days(now)
            if group is None:
                await uow.series.save(replace(series, ends_before=series.generated_through or series.first.date()))
            elif days:
                made += len(await _make_occurrences(uow, series, group.name, days, now))
    return made


class Scope(StrEnum):
    """Which occurrences of a series an edit or a cancellation is for (a one-off event: always itself)."""

    THIS = "this"
    FOLLOWING = "following"  # this one and every later one, including those made later


async def update_event(
    uow: EventsUnitOfWork, event_id: str, editor: UserId, changes: Mapping[str, Any], scope: Scope = Scope.THIS
) -> Event:
    """`changes` names EventDetails fields; the rest stay. More seats (or a higher guest limit) promote from the
    waitlist at once; fewer seats than are taken send nobody away. With scope=following the same changes go to
    the later occurrences of the series (times as the same local time of day on each one's date) and to those
    made from now on."""
    async with uow:
        event, group, role = await _locked(uow, event_id, editor)
        check_leader(role)
        now = uow.clock.now()
        event.check_changeable(now)
        if "cover_image_id" in changes and changes["cover_image_id"] != event.details.cover_image_id:
            await _check_cover(uow, changes["cover_image_id"], editor)
        if scope is Scope.THIS:
            return await _edit(uow, event, group.name, editor, changes, now)
        series, day = await _series_of(uow, event)
        template = series.template.changed(day, changes)
        edited = await _edit_following(uow, series, template, day, set(changes), group.name, editor, now)
        return edited.get(event.id, event)


async def _edit_following(
    uow: EventsUnitOfWork,
    series: Series,
    template: Template,
    day: date,
    named: set[str],
    group_name: str,
    editor: UserId,
    now: datetime,
) -> dict[str, Event]:
    """The series made from `template` from now on, and its occurrences from `day` on that have not started
    given the `named` fields as the template has them on their dates (with new times, the RSVP window moves
    along). Returns the occurrences by id, edited or not."""
    await uow.series.save(replace(series, template=template))
    if named & {*TIMES, "timezone"}:
        named = named | set(TIMES)
    result: dict[str, Event] = {}
    for occurrence_id in await uow.events.upcoming_ids_of_series(series.id, day, now):
        occurrence = await uow.events.get_for_update(occurrence_id)
        assert occurrence is not None and occurrence.occurrence_date is not None
        at_date = template.on(occurrence.occurrence_date)
        changes = {n: getattr(at_date, n) for n in named}
        result[occurrence.id] = await _edit(uow, occurrence, group_name, editor, changes, now)
    return result


async def _check_cover(uow: EventsUnitOfWork, image_id: str | None, leader: UserId) -> None:
    """A newly chosen cover must be a ready event cover the leader uploaded (none: no cover)."""
    if image_id is not None:
        image = await uow.covers.get(image_id)
        check_cover(image_id, image.owner_id if image else None, leader)


# Fields an edit of a series' following occurrences sets per date, from the edited one's local time of day.
TIMES = ("starts_at", "ends_at", "rsvp_opens_at", "rsvp_closes_at")


async def _series_of(uow: EventsUnitOfWork, event: Event) -> tuple[Series, date]:
    if event.series_id is None or event.occurrence_date is None:
        raise InvalidEvent("scope=following is for occurrences of a recurring series.", field="scope")
    series = await uow.series.get_for_update(event.series_id)
    assert series is not None
    return series, event.occurrence_date


async def _edit(
    uow: EventsUnitOfWork, event: Event, group_name: str, editor: UserId, changes: Mapping[str, Any], now: datetime
) -> Event:
    edited, changed = event.edited(changes, now)
    if not changed:
        return event
    # More seats (edited.details.capacity) may seat people waiting.
    attendance = await _attendance(uow, edited)
    attendance.promote()
    edited = await _save_attendance(uow, edited, attendance)
    going = await uow.rsvps.going_ids(event.id) if TIME_OR_PLACE & set(changed) else []
    uow.publish(
        EventUpdated(
            **_snapshot(edited, group_name),
            changed=changed,
            attendee_ids=sorted(going),
            updated_by=editor,
            updated_at=now,
        )
    )
    return edited


async def cancel_event(uow: EventsUnitOfWork, event_id: str, leader: UserId, scope: Scope = Scope.THIS) -> Event:
    """With scope=following: this occurrence, every later one, and the series makes no more (from its first
    occurrence: the whole series)."""
    async with uow:
        event, group, role = await _locked(uow, event_id, leader)
        check_leader(role)
        now = uow.clock.now()
        event.check_changeable(now)
        if scope is Scope.THIS:
            return await _cancel(uow, event, group.name, reason="cancelled", by=leader)
        series, day = await _series_of(uow, event)
        await uow.series.save(replace(series, ends_before=day))
        result = event
        for occurrence_id in await uow.events.upcoming_ids_of_series(series.id, day, now):
            occurrence = await uow.events.get_for_update(occurrence_id)
            assert occurrence is not None
            cancelled = await _cancel(uow, occurrence, group.name, reason="cancelled", by=leader)
            result = cancelled if occurrence.id == event.id else result
        return result


async def _cancel(uow: EventsUnitOfWork, event: Event, group_name: str, *, reason: str, by: str) -> Event:
    now = uow.clock.now()
    cancelled = event.cancelled(now)
    await uow.events.save(cancelled)
    attendance = Attendance.of(event.seats, await uow.rsvps.attending(event.id))
    uow.publish(
        EventCancelled(
            event_id=event.id,
            group_id=event.group_id,
            group_name=group_name,
            title=event.details.title,
            starts_at=event.details.starts_at,
            reason=reason,
            cancelled_by=by,
            attendee_ids=sorted(r.user_id for r in attendance.rsvps.values() if r.status is RsvpStatus.GOING),
            waitlist_ids=[r.user_id for r in attendance.waitlist],
            sequence=cancelled.sequence,
            cancelled_at=now,
        )
    )
    return cancelled


# --- import of calendar files ---------------------------------------------------------------------------------------


async def leader_group(stores: Stores, leader: UserId, group_id: GroupId) -> GroupSummary:
    """The group, if `leader` leads it: checked again before a file is read (a non-leader's upload is refused
    before the parse)."""
    group = await stores.groups.get(group_id)
    role = await stores.members.role(group_id, leader)
    if group is None or not may_see(group, role):
        raise GroupNotFound(f"No group {group_id} (or it has not reached the events service yet).")
    check_leader(role)
    return group


async def import_events(
    uow: EventsUnitOfWork, leader: UserId, group_id: GroupId, entries: list[ImportEntry]
) -> list[ImportResult]:
    """Events from another platform's calendar file, in one transaction: a UID seen before in this group updates
    its event (or cancels it, when the file says so) instead of making another; past events come in as the
    group's history. Each entry gets its outcome, skipped ones with the reason."""
    async with uow:
        now = uow.clock.now()
        group = await leader_group(uow.stores, leader, group_id)
        results: list[ImportResult] = []
        seen: set[str] = set()
        for entry in entries:
            if entry.skipped is not None or entry.details is None:
                results.append(ImportResult(entry.uid, ImportOutcome.SKIPPED, reason=entry.skipped))
            elif entry.uid in seen:
                results.append(ImportResult(entry.uid, ImportOutcome.SKIPPED, reason="UID repeated in the file"))
            else:
                seen.add(entry.uid)
                importer = _import_series if entry.rule is not None else _import_one
                results.append(await importer(uow, leader, group, entry, entry.details, now))
        return results


async def _import_one(
    uow: EventsUnitOfWork, leader: UserId, group: GroupSummary, entry: ImportEntry, details: EventDetails, now: datetime
) -> ImportResult:
    existing = await uow.events.imported_for_update(group.id, entry.uid)
    if existing is None:
        if await uow.series.imported_for_update(group.id, entry.uid) is not None:
            return ImportResult(entry.uid, ImportOutcome.SKIPPED, reason=IMPORTED_AS_OTHER)
        if entry.cancelled:
            return ImportResult(entry.uid, ImportOutcome.SKIPPED, reason="cancelled in the file")
        event = Event(new_event_id(), group.id, details, leader, now, now, source_uid=entry.uid)
        await uow.events.add(event)
        uow.publish(EventScheduled(**_snapshot(event, group.name), scheduled_by=leader, scheduled_at=now))
        return ImportResult(entry.uid, ImportOutcome.CREATED, event.id)
    if existing.status is EventStatus.CANCELLED:
        return ImportResult(entry.uid, ImportOutcome.SKIPPED, existing.id, "the event was cancelled here")
    if now >= existing.details.starts_at:
        # What happened stays as it happened here (attendance, check-ins): another platform's later edit of a past
        # event does not rewrite the group's history.
        return ImportResult(entry.uid, ImportOutcome.SKIPPED, existing.id, "the event has started here")
    if entry.cancelled:
        await _cancel(uow, existing, group.name, reason="cancelled", by=leader)
        return ImportResult(entry.uid, ImportOutcome.UPDATED, existing.id, "cancelled")
    changes = {name: getattr(details, name) for name in IMPORTED_FIELDS}
    edited = await _edit(uow, existing, group.name, leader, changes, now)
    if edited is existing:
        return ImportResult(entry.uid, ImportOutcome.SKIPPED, existing.id, "unchanged")
    return ImportResult(entry.uid, ImportOutcome.UPDATED, existing.id)


def _same_occurrences(one: Template, other: Template) -> bool:
    """Whether two templates make the same occurrences (their `starts_at` is only the date they were taken on)."""
    first, second = one.to_json(), other.to_json()
    return first | {"starts_at": None} == second | {"starts_at": None}


IMPORTED_AS_OTHER = "this UID was imported as a single event and now recurs (or the reverse): cancel it here first"


async def _import_series(
    uow: EventsUnitOfWork, leader: UserId, group: GroupSummary, entry: ImportEntry, details: EventDetails, now: datetime
) -> ImportResult:
    """A recurring VEVENT: a series made as one scheduled here would be (its occurrences within six months, the
    rest as time passes). Imported again: a new rule or first date is skipped (that is another series), other
    changes go to the occurrences that have not started, and STATUS:CANCELLED ends the series."""
    assert entry.rule is not None
    existing = await uow.series.imported_for_update(group.id, entry.uid)
    if existing is None:
        if await uow.events.imported_for_update(group.id, entry.uid) is not None:
            return ImportResult(entry.uid, ImportOutcome.SKIPPED, reason=IMPORTED_AS_OTHER)
        if entry.cancelled:
            return ImportResult(entry.uid, ImportOutcome.SKIPPED, reason="cancelled in the file")
        try:
            first = await _schedule_series(uow, leader, group, details, entry.rule, now, imported=entry)
        except InvalidEvent as refusal:
            return ImportResult(entry.uid, ImportOutcome.SKIPPED, reason=refusal.detail)
        return ImportResult(entry.uid, ImportOutcome.CREATED, first.id)
    upcoming = await uow.events.upcoming_ids_of_series(existing.id, existing.first.date(), now)
    first_id = upcoming[0] if upcoming else None
    if existing.ends_before is not None and not upcoming:
        return ImportResult(entry.uid, ImportOutcome.SKIPPED, first_id, "the series was cancelled here")
    if entry.cancelled:
        await uow.series.save(replace(existing, ends_before=local(now, existing.template.details.timezone).date()))
        for event_id in upcoming:
            event = await uow.events.get_for_update(event_id)
            assert event is not None
            await _cancel(uow, event, group.name, reason="cancelled", by=leader)
        return ImportResult(entry.uid, ImportOutcome.UPDATED, first_id, "cancelled")
    if entry.rule != existing.rule or local(details.starts_at, details.timezone).date() != existing.first.date():
        reason = "the rule or the first date changed: that is another series (cancel this one here, then import)"
        return ImportResult(entry.uid, ImportOutcome.SKIPPED, first_id, reason)
    # The file's fields on the template; what leaders set here (capacity, guests, RSVP window, cover) stays.
    kept = existing.template
    from_file = Template.of(details)
    template = replace(
        from_file,
        opens_before=kept.opens_before,
        closes_before=kept.closes_before,
        details=replace(kept.details, **{name: getattr(from_file.details, name) for name in IMPORTED_FIELDS}),
    )
    wanted = replace(
        existing,
        template=template,
        excluded_days=entry.excluded,
        added_days=entry.added,
        changed_days=dict(entry.changed),
    )
    if _same_series(wanted, existing):
        return ImportResult(entry.uid, ImportOutcome.SKIPPED, first_id, "unchanged")
    await uow.series.save(wanted)
    await _follow_file(uow, wanted, upcoming, group.name, leader, now)
    upcoming = await uow.events.upcoming_ids_of_series(existing.id, existing.first.date(), now)
    return ImportResult(entry.uid, ImportOutcome.UPDATED, upcoming[0] if upcoming else None)


def _imported_fields(details: EventDetails) -> tuple[Any, ...]:
    return tuple(getattr(details, name) for name in IMPORTED_FIELDS)


def _same_series(one: Series, other: Series) -> bool:
    """Whether two versions of an imported series make the same occurrences."""
    return (
        _same_occurrences(one.template, other.template)
        and (one.excluded_days, one.added_days) == (other.excluded_days, other.added_days)
        and {day: _imported_fields(d) for day, d in one.changed_days.items()}
        == {day: _imported_fields(d) for day, d in other.changed_days.items()}
    )


async def _follow_file(
    uow: EventsUnitOfWork, series: Series, upcoming: list[EventId], group_name: str, leader: UserId, now: datetime
) -> None:
    """The series' occurrences as a re-imported file has them now. Those that have not started take the file's
    details for their date (their own when the file changes that one occurrence); one on a date the series no
    longer has (a new EXDATE, an RDATE gone) is cancelled, its attendees told as for any cancellation; a date it
    has and that was never made (a new RDATE, an EXDATE gone) is made, up to where the series is made so far. An
    occurrence cancelled here stays cancelled."""
    today = local(now, series.template.details.timezone).date()
    through = max(series.generated_through or today, today)
    days = set(series.days_between(today - timedelta(days=2), through + timedelta(days=1)))
    for event_id in upcoming:
        event = await uow.events.get_for_update(event_id)
        assert event is not None and event.occurrence_date is not None
        if event.occurrence_date not in days:
            await _cancel(uow, event, group_name, reason="cancelled", by=leader)
            continue
        target = series.details_on(event.occurrence_date)
        await _edit(uow, event, group_name, leader, {name: getattr(target, name) for name in FROM_FILE}, now)
    made = await uow.events.occurrence_dates(series.id)
    missing = sorted(day for day in days - made if series.details_on(day).starts_at > now)
    if missing:
        await _make_occurrences(uow, series, group_name, missing, now)


# What a re-imported file sets on each occurrence that has not started (the RSVP window moves with the start).
FROM_FILE = (*IMPORTED_FIELDS, "rsvp_opens_at", "rsvp_closes_at")


# --- RSVPs ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MyRsvp:
    status: RsvpStatus
    guests: int
    waitlist_position: int | None


async def respond(uow: EventsUnitOfWork, event_id: str, member: UserId, answer: Answer, guests: int) -> MyRsvp:
    async with uow:
        # One read for what the decision needs (event locked, group, role, own answer), as answers queue on the lock.
        found = await uow.events.answering(event_id, member)
        if found is None or not may_see_in(found.visibility, found.role):
            raise EventNotFound("No such event.")
        seats = found.seats
        check_member(found.role)
        now = uow.clock.now()
        seats.check_rsvp_open(now)
        attendance = await _attendance_with(uow, seats, found.own)
        rsvp = attendance.respond(member, answer, guests, now)
        await _save_seats(uow, seats, attendance)
        return MyRsvp(rsvp.status, rsvp.guests, await _position(uow, seats.id, rsvp, attendance.changes))


async def _position(uow: EventsUnitOfWork, event_id: str, rsvp: Rsvp, changes: list[RsvpChange]) -> int | None:
    """The person's place on the waitlist after their answer. When the answer put them there and nobody was seated
    by it, the decision knows the place (the back of the queue, from the counters): no query."""
    if rsvp.status is not RsvpStatus.WAITLISTED:
        return None
    known = [c.position for c in changes if c.user_id == rsvp.user_id and c.change is Change.WAITLISTED]
    if known and known[-1] is not None and not any(c.change is Change.PROMOTED for c in changes):
        return known[-1]
    return await uow.rsvps.waitlist_position(event_id, rsvp)


async def _attendance(uow: EventsUnitOfWork, event: Event, person: UserId | None = None) -> Attendance:
    """What a decision about the event's seats reads (under the event row's lock): its counters, the person's own
    answer, and the head of the waitlist as far as seats could free up. A waiting person's answer reads the
    waitlist through them, so the place they keep is known."""
    own = await uow.rsvps.of(event.id, person) if person is not None else None
    return await _attendance_with(uow, event.seats, own)


async def _attendance_with(uow: EventsUnitOfWork, seats: Seats, own: Rsvp | None) -> Attendance:
    head = waitlist_to_read(seats, own)
    if own is not None and own.status is RsvpStatus.WAITLISTED:
        head = max(head, await uow.rsvps.waitlist_position(seats.id, own) or 0)
    waiting = await uow.rsvps.waitlist_head(seats.id, head) if head else []
    return Attendance.of(seats, [*waiting, *([own] if own is not None else [])])


async def _save_attendance(uow: EventsUnitOfWork, event: Event, attendance: Attendance) -> Event:
    """Writes the event with its counters and the changed RSVPs, and publishes an rsvp.* event per change."""
    await uow.rsvps.save(event.id, list(attendance.dirty.values()))
    counted = attendance.counted(event)
    await uow.events.save(counted)
    _publish_changes(uow, counted, attendance)
    return counted


async def _save_seats(uow: EventsUnitOfWork, seats: Seats, attendance: Attendance) -> None:
    """`_save_attendance` for an answer, which changes nothing of the event but its counters: only they are
    written, and only when they changed (the same yes again writes nothing)."""
    counted = attendance.counted(seats)
    await uow.rsvps.save_answer(list(attendance.dirty.values()), counted, counts_changed=counted != seats)
    _publish_changes(uow, counted, attendance)


def _publish_changes(uow: EventsUnitOfWork, event: Event | Seats, attendance: Attendance) -> None:
    now = uow.clock.now()
    uow.publish(*(_rsvp_event(event, change, now) for change in attendance.changes))


def _rsvp_event(event: Event | Seats, change: RsvpChange, now: Any) -> RsvpEvent:
    common = {"event_id": event.id, "group_id": event.group_id, "user_id": change.user_id, "guests": change.guests}
    if change.change is Change.CONFIRMED:
        return RsvpConfirmed(**common, responded_at=now)
    if change.change is Change.WAITLISTED:
        assert change.position is not None
        return RsvpWaitlisted(**common, position=change.position, responded_at=now)
    if change.change is Change.PROMOTED:
        return RsvpPromoted(**common, promoted_at=now)
    assert change.reason is not None and change.previous is not None
    return RsvpCancelled(**common, previous_status=change.previous, reason=change.reason, cancelled_at=now)


# --- reactions to the groups service's events (run in a consumer's unit of work) -----------------------------------


async def drop_member(uow: EventsUnitOfWork, group_id: str, user_id: UserId, reason: Reason) -> None:
    """Someone left the group, was removed or banned: their membership ends here, and their seats and places in
    the group's upcoming events go to the waitlists."""
    await uow.members.remove(group_id, user_id)
    now = uow.clock.now()
    for event_id in await uow.events.upcoming_ids_attended_by(group_id, user_id, now):
        event = await uow.events.get_for_update(event_id)
        assert event is not None
        attendance = await _attendance(uow, event, user_id)
        attendance.withdraw(user_id, reason, now)
        await _save_attendance(uow, event, attendance)


async def cancel_group_events(uow: EventsUnitOfWork, deleted: GroupDeleted) -> list[str]:
    """The events service's step of the group-deletion saga: the group is gone here too, every upcoming event of
    it is cancelled (attendees and waitlist told through event.cancelled), and the saga gets its reply. A repeated
    group.deleted cancels nothing more and replies again, which the saga takes calmly."""
    now = uow.clock.now()
    await uow.groups.mark_deleted(deleted.group_id, deleted.name, deleted.slug, deleted.deleted_at)
    await uow.members.remove_all(deleted.group_id)
    cancelled: list[str] = []
    for event_id in await uow.events.upcoming_ids_of_group(deleted.group_id, now):
        event = await uow.events.get_for_update(event_id)
        assert event is not None
        await _cancel(uow, event, deleted.name, reason="group_deleted", by=deleted.deleted_by)
        cancelled.append(event.id)
    uow.publish(GroupEventsCancelled(group_id=deleted.group_id, cancelled_event_ids=cancelled, cancelled_at=now))
    return cancelled


# --- account deletion (run in a consumer's unit of work) -------------------------------------------------------------


async def forget_person(uow: EventsUnitOfWork, deleted: UserDeleted) -> dict[str, int]:
    """The events service's step of the account-deletion saga. In an event whose seats still move, the person's
    seat or waitlist place is given up as an answer "no" would (the waitlist promotes, rsvp.* events published);
    then each of their RSVPs goes, a check-in staying as a count. Their comments stay by "a deleted member" (no
    author), their calendar feed and memberships here go, and their profile becomes a tombstone. With the saga's
    `deletion_id` the reply (user_deletion.step_done) commits with all of it; a repeated deletion erases nothing
    more and replies again. Returns what went, by kind."""
    person = UserId(deleted.user_id)
    now = uow.clock.now()
    what: Counter[str] = Counter()
    # Events locked one by one in id order, so two transactions locking several events never wait on each other.
    for event_id, _ in await uow.rsvps.of_person(person):
        event = await uow.events.get_for_update(event_id)
        assert event is not None
        attendance = await _attendance(uow, event, person)
        own = attendance.rsvps[person]
        if event.seats_change(now) and own.status is not RsvpStatus.NOT_GOING:
            attendance.withdraw(person, Reason.ACCOUNT_DELETED, now)
            event = await _save_attendance(uow, event, attendance)
            what["rsvps_withdrawn"] += 1
        erased = event.without_rsvp_of_deleted(own)
        if erased != event:
            await uow.events.save(erased)
            what["check_ins_kept_as_counts"] += 1
        await uow.rsvps.remove(event.id, person)
        what["rsvps"] += 1
    what["comments_anonymised"] = await uow.comments.unname_author(person)
    what["calendar_feeds"] = int(await uow.feeds.remove(person))
    await uow.members.remove_person(person)
    await uow.profiles.forget(person, deleted.deleted_at)
    counted = {kind: n for kind, n in what.items() if n}
    if deleted.deletion_id is not None:
        uow.publish(
            UserDeletionStepDone(
                user_id=person, deletion_id=deleted.deletion_id, service="events", what=counted, done_at=now
            )
        )
    return counted


# --- comments and check-in -------------------------------------------------------------------------------------------


async def _event_for_member(stores: Stores, event_id: str, caller: UserId) -> tuple[Event, str | None]:
    event = await stores.events.get(event_id)
    if event is None:
        raise EventNotFound("No such event.")
    _, role = await _visible_group(stores, event.group_id, caller)
    check_member(role)
    return event, role


async def post_comment(uow: EventsUnitOfWork, event_id: str, author: UserId, body: str) -> Comment:
    text = comment_body(body)
    async with uow:
        event, _ = await _event_for_member(uow.stores, event_id, author)
        event.check_open_for_comments()
        now = uow.clock.now()
        comment = Comment(new_comment_id(), event.id, author, text, now, now)
        await uow.comments.add(comment)
        uow.publish(
            CommentPosted(
                event_id=event.id,
                group_id=event.group_id,
                comment_id=comment.id,
                author_id=author,
                body=text,
                posted_at=now,
            )
        )
        return comment


async def edit_comment(uow: EventsUnitOfWork, event_id: str, comment_id: str, editor: UserId, body: str) -> Comment:
    text = comment_body(body)
    async with uow:
        event, _ = await _event_for_member(uow.stores, event_id, editor)
        comment = await uow.comments.get(event.id, comment_id)
        if comment is None:
            raise CommentNotFound("No such comment.")
        check_may_edit(comment, editor)
        edited = replace(comment, body=text, updated_at=uow.clock.now())
        await uow.comments.save(edited)
        return edited


async def delete_comment(uow: EventsUnitOfWork, event_id: str, comment_id: str, caller: UserId) -> None:
    async with uow:
        event, role = await _event_for_member(uow.stores, event_id, caller)
        comment = await uow.comments.get(event.id, comment_id)
        if comment is None:
            raise CommentNotFound("No such comment.")
        check_may_delete(comment, caller, role)
        await uow.comments.remove(comment.id)


async def list_comments(stores: Stores, event_id: str, caller: UserId, page: PageRequest) -> tuple[list[Comment], Any]:
    event, _ = await _event_for_member(stores, event_id, caller)
    return await stores.comments.page(event.id, page.limit, page.cursor)


@dataclass(frozen=True)
class CheckIn:
    user_id: UserId
    checked_in_at: datetime
    attendance: int


async def check_in_attendee(uow: EventsUnitOfWork, event_id: str, leader: UserId, attendee: UserId) -> CheckIn:
    """Marks a going attendee present; doing it again changes nothing. The event row is locked so the attendance
    count published with each check-in is exact."""
    async with uow:
        event, _, role = await _locked(uow, event_id, leader)
        check_leader(role)
        now = uow.clock.now()
        rsvp = await uow.rsvps.of(event.id, attendee)
        present = check_in(event, rsvp, now)
        if present is None:
            assert rsvp is not None and rsvp.checked_in_at is not None
            return CheckIn(attendee, rsvp.checked_in_at, await uow.rsvps.checked_in_count(event.id))
        await uow.rsvps.save(event.id, [present])
        attendance = await uow.rsvps.checked_in_count(event.id)
        uow.publish(
            EventCheckedIn(
                event_id=event.id,
                group_id=event.group_id,
                user_id=attendee,
                checked_in_by=leader,
                attendance=attendance,
                checked_in_at=now,
            )
        )
        return CheckIn(attendee, now, attendance)


# --- calendars ----------------------------------------------------------------------------------------------------

# The feed holds what ended at most this long ago, so a calendar keeps recent history without growing forever.
FEED_HISTORY = timedelta(days=30)


async def calendar_feed_token(uow: EventsUnitOfWork, person: UserId) -> str:
    """The person's secret feed token, issued on first use."""
    async with uow:
        token = await uow.feeds.token_of(person)
        if token is None:
            token = secrets.token_urlsafe(32)
            await uow.feeds.add(person, token, uow.clock.now())
        return token


async def revoke_calendar_feed(uow: EventsUnitOfWork, person: UserId) -> None:
    """The old URL stops working; the next request for one issues a new token."""
    async with uow:
        await uow.feeds.remove(person)


async def calendar_feed(stores: Stores, token: str, now: datetime) -> list[tuple[Event, str]]:
    """What the feed's owner is going to (with group names), for `<token>.ics`."""
    owner = await stores.feeds.owner_of(token)
    if owner is None:
        raise FeedNotFound("No calendar feed has this address (it may have been revoked).")
    return await stores.events.going_of(owner, now - FEED_HISTORY)


# --- reading ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventView:
    event: Event
    group: GroupSummary
    my_rsvp: MyRsvp | None
    attendance: int = 0
    cover: ImageVariants | None = None

    @property
    def going(self) -> bool:
        return self.my_rsvp is not None and self.my_rsvp.status is RsvpStatus.GOING


async def view_event(stores: Stores, event_id: str, caller: UserId | None) -> EventView:
    found, group = await _viewed(stores, event_id, caller)
    mine: MyRsvp | None = None
    if found.own is not None:
        waiting = found.own.status is RsvpStatus.WAITLISTED
        mine = MyRsvp(found.own.status, found.own.guests, 1 + found.waiting_ahead if waiting else None)
    cover = found.cover if shows_cover(found.cover_owner_role) else None
    return EventView(found.event, group, mine, found.attendance, cover)


def _show_covers(
    covers: list[tuple[Listed, GroupId, str]], found: Mapping[tuple[str, str], tuple[str, ImageVariants]]
) -> None:
    """Each listed event's cover, as a list shows it, while its image is ready and whoever uploaded it leads the
    event's group (`found`: the images' variants and uploaders' roles, `EventStore.cover_roles`)."""
    for event, group_id, image_id in covers:
        role, variants = found.get((group_id, image_id), (None, None))
        if variants is not None and shows_cover(role):
            event["cover"] = variants_json(variants)


async def list_attendees(
    stores: Stores, event_id: str, caller: UserId | None, page: PageRequest
) -> tuple[list[AttendeeRow], Any]:
    found, _ = await _viewed(stores, event_id, caller)  # who may see them: the page's rule
    return await stores.rsvps.page(found.event.id, page.limit, page.cursor)


async def search_events(stores: Stores, criteria: EventSearch, page: PageRequest) -> tuple[list[Listed], Any]:
    """A page of events as a list shows them, with their covers (one more query for the page, when one names a
    cover), and the position after it."""
    # A cursor is tied to the search's filters (its position means nothing in another list).
    cursors = FilteredCursors(lambda: criteria.filters)
    listed, covers, position = await stores.events.search(criteria, page.limit, cursors.after(page.cursor))
    if covers:
        _show_covers(covers, await stores.events.cover_roles({(group, image) for _, group, image in covers}))
    return listed, cursors.next(position)


# --- data export ------------------------------------------------------------------------------------------------


async def give_export_part(uow: EventsUnitOfWork, event: UserExportRequested) -> None:
    """The events service's part of a person's data export: RSVPs, comments, check-ins."""
    files = await uow.stores.personal_data.files_of(event.user_id)
    uow.publish(export_part(event, "events", files, uow.clock.now()))
