"""The seat and waitlist rules and the event rules of domain.py, without a database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gatherly.events.domain import (
    Answer,
    Attendance,
    Change,
    Event,
    EventCancelled,
    EventId,
    EventStarted,
    GroupId,
    GroupSummary,
    InvalidEvent,
    NotEnoughSeats,
    Reason,
    Rsvp,
    RsvpStatus,
    RsvpWindowClosed,
    UserId,
    Venue,
    Visibility,
    details_from,
    may_see,
    waitlist_to_read,
)

NOON = datetime(2030, 3, 1, 12, tzinfo=UTC)


def an_event(**fields: object) -> Event:
    values: dict[str, object] = {
        "title": "Run",
        "starts_at": NOON + timedelta(days=1),
        "ends_at": NOON + timedelta(days=1, hours=2),
        "timezone": "Europe/Berlin",
        "venue": Venue("Park"),
        "guest_limit": 3,
        **fields,
    }
    return Event(EventId("e"), GroupId("g"), details_from(**values), UserId("olga"), NOON, NOON)


def seats(capacity: int | None, *answers: tuple[str, int]) -> Attendance:
    attendance = Attendance.of(an_event(capacity=capacity).seats, [])
    for user, guests in answers:
        attendance.respond(UserId(user), Answer.YES, guests, NOON)
    attendance.changes.clear()
    return attendance


def statuses(attendance: Attendance) -> dict[str, str]:
    return {u: r.status.value for u, r in attendance.rsvps.items()}


def test_a_freed_seat_goes_to_the_head_of_the_waitlist() -> None:
    event = seats(1, ("ann", 0), ("bob", 0), ("cat", 0))
    event.respond(UserId("ann"), Answer.NO, 0, NOON)
    assert statuses(event) == {"ann": "not_going", "bob": "going", "cat": "waitlisted"}
    assert [r.user_id for r in event.waitlist] == ["cat"]
    assert [c.change for c in event.changes] == [Change.CANCELLED, Change.PROMOTED]


def test_a_party_at_the_head_is_not_skipped_for_a_smaller_one_behind_it() -> None:
    event = seats(3, ("ann", 1), ("bob", 2), ("cat", 0))
    assert statuses(event) == {"ann": "going", "bob": "waitlisted", "cat": "waitlisted"}
    assert event.free_seats() == 1  # Cat would fit, but Bob waits before her
    event.respond(UserId("ann"), Answer.NO, 0, NOON)
    assert statuses(event)["bob"] == "going"
    assert statuses(event)["cat"] == "waitlisted"


def test_promotion_seats_as_many_as_fit_in_order() -> None:
    event = seats(2, ("ann", 1), ("bob", 0), ("cat", 0), ("dan", 1))
    event.respond(UserId("ann"), Answer.NO, 0, NOON)
    assert [u for u, s in statuses(event).items() if s == "going"] == ["bob", "cat"]
    assert event.position_of(UserId("dan")) == 1


def test_unlimited_capacity_seats_everyone() -> None:
    event = seats(None, *((f"p{i}", 3) for i in range(50)))
    assert set(statuses(event).values()) == {"going"}
    assert event.free_seats() is None


def test_a_waitlisted_party_keeps_its_place_when_it_changes_its_guests() -> None:
    event = seats(1, ("ann", 0), ("bob", 2), ("cat", 0))
    event.respond(UserId("bob"), Answer.YES, 1, NOON)
    assert [r.user_id for r in event.waitlist] == ["bob", "cat"]
    assert event.changes[-1].change is Change.WAITLISTED and event.changes[-1].position == 1


def test_more_guests_need_free_seats_and_an_empty_waitlist() -> None:
    event = seats(4, ("ann", 1), ("bob", 0))
    with pytest.raises(NotEnoughSeats):
        event.respond(UserId("ann"), Answer.YES, 3, NOON)
    event.respond(UserId("ann"), Answer.YES, 2, NOON)
    assert event.seats_taken == 4
    crowded = seats(3, ("ann", 0), ("bob", 2))
    with pytest.raises(NotEnoughSeats):  # two seats are free, but Bob's party of 3 waits for them
        crowded.respond(UserId("ann"), Answer.YES, 1, NOON)


def test_an_answer_takes_a_seat_for_the_person_and_one_per_guest() -> None:
    """An answer's seats are its party's size; `seats` is the event's alone (its counters), not a second meaning."""
    assert Rsvp(UserId("ann"), RsvpStatus.GOING, 2, 1, NOON).party_size == 3
    alone = Rsvp(UserId("bob"), RsvpStatus.WAITLISTED, 0, 2, NOON)
    assert alone.party_size == 1
    assert not hasattr(alone, "seats")
    assert an_event(capacity=4).seats.capacity == 4


def test_decisions_need_only_the_counters_the_own_answer_and_the_waitlists_head() -> None:
    # 20 seats taken and 5 parties waiting, none of their rows read: a new yes goes to the back, place 6.
    full = replace(an_event(capacity=20), going_count=20, waitlist_count=5, queue_counter=25)
    attendance = Attendance.of(full.seats, [])
    rsvp = attendance.respond(UserId("new"), Answer.YES, 0, NOON)
    assert (rsvp.status, rsvp.queue_no, attendance.changes[-1].position) == (RsvpStatus.WAITLISTED, 26, 6)
    assert (attendance.seats_taken, attendance.waiting, list(attendance.dirty)) == (20, 6, ["new"])
    # Someone going with 2 guests says no: 3 seats free, so at most the first 3 waiting parties are read...
    ann = Rsvp(UserId("ann"), RsvpStatus.GOING, 2, 1, NOON)
    assert waitlist_to_read(full.seats, ann) == 3
    assert waitlist_to_read(full.seats, None) == 0
    assert waitlist_to_read(replace(full, details=replace(full.details, capacity=None)).seats, None) == 5
    # ...and the head of 3 (a party of 2, then two of 1) takes exactly the 3 seats.
    head = [
        Rsvp(UserId(u), RsvpStatus.WAITLISTED, g, 20 + i, NOON)
        for i, (u, g) in enumerate([("b", 1), ("c", 0), ("d", 0)])
    ]
    seats = Attendance.of(full.seats, [ann, *head])
    seats.respond(UserId("ann"), Answer.NO, 0, NOON)
    assert [(c.user_id, c.change) for c in seats.changes] == [
        ("ann", Change.CANCELLED),
        ("b", Change.PROMOTED),
        ("c", Change.PROMOTED),
    ]
    assert (seats.seats_taken, seats.waiting) == (20, 3)


def test_guests_beyond_the_limit_are_invalid_and_no_means_no_guests() -> None:
    event = seats(10)
    with pytest.raises(InvalidEvent):
        event.respond(UserId("ann"), Answer.YES, 4, NOON)
    rsvp = event.respond(UserId("ann"), Answer.NO, 3, NOON)
    assert (rsvp.status, rsvp.guests, event.changes) == (RsvpStatus.NOT_GOING, 0, [])


def test_someone_leaving_the_group_frees_their_place() -> None:
    event = seats(1, ("ann", 0), ("bob", 0))
    event.withdraw(UserId("ann"), Reason.BANNED, NOON)
    [cancelled, promoted] = event.changes
    assert (cancelled.user_id, cancelled.reason, cancelled.previous) == ("ann", Reason.BANNED, RsvpStatus.GOING)
    assert (promoted.user_id, promoted.change) == ("bob", Change.PROMOTED)
    event.withdraw(UserId("nobody"), Reason.LEFT_GROUP, NOON)
    assert len(event.changes) == 2


def test_seats_move_until_the_start_of_a_scheduled_event_only() -> None:
    event = an_event()
    assert event.seats_change(NOON)
    assert not event.seats_change(event.details.starts_at)
    assert not event.cancelled(NOON).seats_change(NOON)


def test_a_deleted_persons_check_in_stays_as_a_count_and_nothing_else_changes() -> None:
    event = replace(an_event(), going_count=5, waitlist_count=2)
    answered = Rsvp(UserId("ann"), RsvpStatus.GOING, 1, 3, NOON)
    assert event.without_rsvp_of_deleted(answered) == event
    present = event.without_rsvp_of_deleted(replace(answered, checked_in_at=NOON))
    assert present == replace(event, anonymous_check_ins=1)
    assert present.without_rsvp_of_deleted(replace(answered, checked_in_at=NOON)).anonymous_check_ins == 2


def test_answers_are_taken_within_the_window_before_the_start_of_a_scheduled_event() -> None:
    window = an_event(rsvp_opens_at=NOON, rsvp_closes_at=NOON + timedelta(hours=6))
    window.check_rsvp_open(NOON + timedelta(hours=1))
    with pytest.raises(RsvpWindowClosed):
        window.check_rsvp_open(NOON - timedelta(seconds=1))
    with pytest.raises(RsvpWindowClosed):
        window.check_rsvp_open(NOON + timedelta(hours=7))
    with pytest.raises(EventStarted):
        an_event().check_rsvp_open(NOON + timedelta(days=2))
    with pytest.raises(EventCancelled):
        an_event().cancelled(NOON).check_rsvp_open(NOON)


def test_an_edit_names_what_changed_and_grows_the_sequence() -> None:
    event = an_event()
    same, changed = event.edited({"title": "Run"}, NOON)
    assert (same, changed) == (event, [])
    edited, changed = event.edited({"title": "Long run", "capacity": 5}, NOON)
    assert (changed, edited.sequence) == (["title", "capacity"], 1)
    assert event.cancelled(NOON).sequence == 1


@pytest.mark.parametrize("zone", ["UTC+2", "+02:00", "Europe/Nowhere", "../etc/passwd", ""])
def test_only_iana_zones_are_taken(zone: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        an_event(timezone=zone)
    assert refused.value.field == "timezone"


def test_a_private_groups_events_are_for_its_members() -> None:
    private = GroupSummary(GroupId("g"), "G", Visibility.PRIVATE)
    assert (may_see(private, None), may_see(private, "member"), may_see(None, "organizer")) == (False, True, False)
    assert may_see(GroupSummary(GroupId("g"), "G", Visibility.PUBLIC), None)
