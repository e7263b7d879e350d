"""PUT /api/events/{id}/rsvp and GET …/attendees through HTTP: seats that count guests, the FIFO waitlist with
positions, automatic promotion in strict FIFO order, the RSVP window, and never a seat too many under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy import update

from gatherly.app.testing import Person
from gatherly.events.store import unit_of_work
from gatherly.events.tables import events
from gatherly.kernel import routes
from gatherly.kernel.web import encode_cursor

pytestmark = pytest.mark.asyncio(loop_scope="module")

EventsApi = Any  # the `api` fixture of conftest.py (test modules do not import conftest)


async def _group_of(api: EventsApi, *names: str) -> tuple[str, Person, list[Person]]:
    """An open group founded by "Olga", with these people as members."""
    organizer = await api.person("Olga")
    people = await api.people(*names)
    return await api.group(organizer, members=dict.fromkeys(people, "member")), organizer, people


async def test_guests_take_seats_and_a_full_event_puts_people_on_the_waitlist_in_order(api: EventsApi) -> None:
    group_id, olga, [ann, bob, cat, dan] = await _group_of(api, "Ann", "Bob", "Cat", "Dan")
    event = await api.schedule(olga, group_id, capacity=4, guest_limit=2)
    assert await api.going(ann, event["id"], guests=2) == {"status": "going", "guests": 2, "waitlist_position": None}
    assert (await api.going(bob, event["id"], guests=1))["status"] == "waitlisted"  # 3 + 2 > 4
    assert (await api.going(cat, event["id"]))["waitlist_position"] == 2
    shown = await api.get(event["id"], bob)
    assert shown["my_rsvp"] == {"status": "waitlisted", "guests": 1, "waitlist_position": 1}
    assert (shown["going_count"], shown["waitlist_count"]) == (3, 2)
    # Bob brings no guest after all: now his party fits, and he is seated; Cat's place moves up.
    assert (await api.going(bob, event["id"], guests=0))["status"] == "going"
    assert (await api.get(event["id"], cat))["my_rsvp"]["waitlist_position"] == 1
    assert (await api.going(dan, event["id"]))["waitlist_position"] == 2


async def test_a_new_place_on_the_waitlist_is_known_without_counting_the_waitlist(api: EventsApi) -> None:
    # The answer that puts someone at the back of the queue knows their place from the event's counters: no COUNT
    # over the waitlist while the event is locked (one statement of the four an answer runs).
    group_id, olga, [ann, bob, cat] = await _group_of(api, "Ann", "Bob", "Cat")
    event = await api.schedule(olga, group_id, capacity=1)
    await api.going(ann, event["id"])
    await api.going(bob, event["id"])
    engine = api.running.process.host("events").context.db.engine.sync_engine
    counted: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "count(" in statement.lower() and "rsvps" in statement:
            counted.append(statement)

    sqlalchemy_events.listen(engine, "before_cursor_execute", record)
    try:
        answer = await api.going(cat, event["id"])
    finally:
        sqlalchemy_events.remove(engine, "before_cursor_execute", record)
    assert answer == {"status": "waitlisted", "guests": 0, "waitlist_position": 2}
    assert counted == []
    assert (await api.get(event["id"], cat))["my_rsvp"]["waitlist_position"] == 2  # as counted when read


async def test_nobody_overtakes_the_waitlist_and_promotion_is_strict_fifo(api: EventsApi) -> None:
    group_id, olga, [ann, bob, cat, dan] = await _group_of(api, "Ann", "Bob", "Cat", "Dan")
    event = await api.schedule(olga, group_id, capacity=3, guest_limit=2)
    event_id = event["id"]
    assert (await api.going(ann, event_id, guests=1))["status"] == "going"  # 2 of 3 seats
    assert (await api.going(bob, event_id, guests=2))["waitlist_position"] == 1  # a party of 3 does not fit
    # One seat is free, and Cat alone would fit, but Bob's party waits before her: she queues behind.
    assert (await api.going(cat, event_id))["waitlist_position"] == 2
    assert (await api.going(dan, event_id))["waitlist_position"] == 3
    assert await api.attendees(event_id) == [
        (ann.user_id, "going", None),
        (bob.user_id, "waitlisted", 1),
        (cat.user_id, "waitlisted", 2),
        (dan.user_id, "waitlisted", 3),
    ]

    # Ann says no: 3 seats free, Bob's party of 3 gets them; Cat is not seated before him.
    assert (await api.rsvp(ann, event_id, "no")).json() == {
        "status": "not_going",
        "guests": 0,
        "waitlist_position": None,
    }
    assert await api.attendees(event_id) == [
        (bob.user_id, "going", None),
        (cat.user_id, "waitlisted", 1),
        (dan.user_id, "waitlisted", 2),
    ]
    assert (await api.get(event_id, cat))["my_rsvp"]["waitlist_position"] == 1
    # Names come from the events service's own copy of people's profiles.
    listed = await api.client.get(f"/api/events/{event_id}/attendees")
    assert [(a["display_name"], a["guests"]) for a in listed.json()["items"]] == [("Bob", 2), ("Cat", 0), ("Dan", 0)]
    shown = await api.get(event_id)
    assert (shown["going_count"], shown["waitlist_count"]) == (3, 2)

    rsvps = [(e.type, e.payload["user_id"]) for e in await api.published("rsvp", event_id)]
    assert rsvps == [
        ("rsvp.confirmed", ann.user_id),
        ("rsvp.waitlisted", bob.user_id),
        ("rsvp.waitlisted", cat.user_id),
        ("rsvp.waitlisted", dan.user_id),
        ("rsvp.cancelled", ann.user_id),
        ("rsvp.promoted", bob.user_id),
    ]


async def test_more_capacity_promotes_as_far_as_the_seats_go(api: EventsApi) -> None:
    group_id, olga, [ann, bob, cat, dan] = await _group_of(api, "Ann", "Bob", "Cat", "Dan")
    event = await api.schedule(olga, group_id, capacity=1)
    for person in (ann, bob, cat, dan):
        await api.going(person, event["id"])
    response = await api.client.patch(f"/api/events/{event['id']}", json={"capacity": 3}, headers=olga.auth)
    assert response.status_code == 200, response.text
    assert (response.json()["going_count"], response.json()["waitlist_count"]) == (3, 1)
    assert [(status, position) for _, status, position in await api.attendees(event["id"])] == [
        ("going", None),
        ("going", None),
        ("going", None),
        ("waitlisted", 1),
    ]
    promoted = [e.payload["user_id"] for e in await api.published("rsvp", event["id"]) if e.type == "rsvp.promoted"]
    assert promoted == [bob.user_id, cat.user_id]
    # Unlimited seats: everyone goes.
    await api.client.patch(f"/api/events/{event['id']}", json={"capacity": None}, headers=olga.auth)
    assert (await api.get(event["id"]))["waitlist_count"] == 0


async def test_a_member_who_leaves_or_is_removed_frees_their_seat_for_the_waitlist(api: EventsApi) -> None:
    group_id, olga, [ann, bob, cat] = await _group_of(api, "Ann", "Bob", "Cat")
    event = await api.schedule(olga, group_id, capacity=1)
    await api.going(ann, event["id"])
    await api.going(bob, event["id"])
    await api.going(cat, event["id"])

    assert (await api.client.delete(f"/api/groups/{group_id}/members/me", headers=ann.auth)).status_code == 204
    await api.running.settle()
    assert [(u, s) for u, s, _ in await api.attendees(event["id"])] == [
        (bob.user_id, "going"),
        (cat.user_id, "waitlisted"),
    ]

    removed = await api.client.delete(f"/api/groups/{group_id}/members/{bob.user_id}?ban=true", headers=olga.auth)
    assert removed.status_code == 204
    await api.running.settle()
    assert [(u, s) for u, s, _ in await api.attendees(event["id"])] == [(cat.user_id, "going")]
    cancelled = [
        (e.payload["user_id"], e.payload["reason"])
        for e in await api.published("rsvp", event["id"])
        if e.type == "rsvp.cancelled"
    ]
    assert cancelled == [(ann.user_id, "left_group"), (bob.user_id, "banned")]
    # Ann is no member any more: she cannot answer.
    assert (await api.rsvp(ann, event["id"])).status_code == 403


async def test_only_members_answer_and_guests_are_bounded(api: EventsApi) -> None:
    group_id, olga, [ann] = await _group_of(api, "Ann")
    outsider = await api.person("Otto Outsider")
    event = await api.schedule(olga, group_id, capacity=10, guest_limit=1)
    assert (await api.rsvp(outsider, event["id"])).status_code == 403
    assert (await api.client.put(f"/api/events/{event['id']}/rsvp", json={"response": "yes"})).status_code == 401
    too_many = await api.rsvp(ann, event["id"], guests=2)
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["field"] == "guests"
    assert (await api.rsvp(ann, event["id"], "maybe")).status_code == 422


async def test_an_answer_with_a_field_it_does_not_have_is_refused_and_not_recorded(api: EventsApi) -> None:
    """An outsider's probe: {"response": "yes", "guest": 2} was a 200 going with no guests, the typo dropped."""
    group_id, olga, [ann] = await _group_of(api, "Ann")
    event = await api.schedule(olga, group_id, capacity=10, guest_limit=2)
    body = {"response": "yes", "guest": 2}
    refused = await api.client.put(f"/api/events/{event['id']}/rsvp", json=body, headers=ann.auth)
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["guest"]
    assert (await api.get(event["id"], ann))["my_rsvp"] is None


async def test_more_guests_than_free_seats_is_a_conflict_and_the_answer_stays(api: EventsApi) -> None:
    group_id, olga, [ann, bob] = await _group_of(api, "Ann", "Bob")
    event = await api.schedule(olga, group_id, capacity=3, guest_limit=3)
    await api.going(ann, event["id"], guests=1)
    await api.going(bob, event["id"])
    refused = await api.rsvp(ann, event["id"], guests=2)
    assert refused.status_code == 409, refused.text
    assert (await api.get(event["id"], ann))["my_rsvp"] == {"status": "going", "guests": 1, "waitlist_position": None}
    assert (await api.going(ann, event["id"], guests=0))["guests"] == 0
    assert (await api.get(event["id"]))["going_count"] == 2


async def test_answers_outside_the_rsvp_window_or_after_the_start_are_refused(api: EventsApi) -> None:
    group_id, olga, [ann] = await _group_of(api, "Ann")
    now = datetime.now(UTC)
    not_yet = await api.schedule(olga, group_id, rsvp_opens_at=(now + timedelta(days=1)).isoformat())
    closed = await api.schedule(olga, group_id, rsvp_closes_at=(now - timedelta(minutes=1)).isoformat())
    started = await api.schedule(olga, group_id)
    async with api.running.process.host("events").context.db.writing() as session:
        await session.execute(
            update(events).where(events.c.id == started["id"]).values(starts_at=now - timedelta(minutes=5))
        )
    for event in (not_yet, closed, started):
        for answer in ("yes", "no"):
            response = await api.rsvp(ann, event["id"], answer)
            assert response.status_code == 409, response.text
            assert response.headers["content-type"] == "application/problem+json"


async def test_many_concurrent_answers_never_overbook_and_the_rest_wait_in_order(api: EventsApi) -> None:
    names = [f"Runner {i}" for i in range(24)]
    group_id, olga, people = await _group_of(api, *names)
    event = await api.schedule(olga, group_id, capacity=10, guest_limit=1)

    # Everyone at once, some with a guest: the seats must come out exactly, whatever the interleaving.
    answers = await asyncio.gather(*(api.going(p, event["id"], guests=i % 2) for i, p in enumerate(people)))
    going = [a for a in answers if a["status"] == "going"]
    waiting = sorted(a["waitlist_position"] for a in answers if a["status"] == "waitlisted")
    # Filled as far as strict FIFO allows: a waiting party of 2 may leave one seat empty.
    assert sum(1 + a["guests"] for a in going) in (9, 10)
    assert waiting == list(range(1, len(people) - len(going) + 1))
    shown = await api.get(event["id"])
    assert shown["going_count"] == sum(1 + a["guests"] for a in going)
    assert shown["waitlist_count"] == len(waiting)

    # Everyone going says no at once: the waitlist moves up, still never over capacity.
    going_people = [p for p, a in zip(people, answers, strict=True) if a["status"] == "going"]
    await asyncio.gather(*(api.rsvp(p, event["id"], "no") for p in going_people))
    listed = await api.attendees(event["id"])
    seats = {p.user_id: 1 + (i % 2) for i, p in enumerate(people)}
    assert sum(seats[u] for u, status, _ in listed if status == "going") <= 10
    positions = [position for _, status, position in listed if status == "waitlisted"]
    assert positions == list(range(1, len(positions) + 1))


async def test_one_persons_concurrent_answers_leave_the_counters_as_the_answers_are(api: EventsApi) -> None:
    """A double click, a retry: the same person's answers at once. Each is decided on the person's answer as the
    one before it left it (on PostgreSQL a locking read's join gave the answer as it was before the lock was waited
    for: the counters drifted, going_count 5 with nobody going)."""
    group_id, olga, (ben,) = await _group_of(api, "Ben")
    event = await api.schedule(olga, group_id, capacity=10)
    for _ in range(3):
        await asyncio.gather(*(api.rsvp(ben, event["id"], answer) for answer in ["yes", "no"] * 5))
        listed = await api.attendees(event["id"])
        shown = await api.get(event["id"])
        assert shown["going_count"] == sum(1 for _, status, _ in listed if status == "going")
        assert shown["waitlist_count"] == 0


@pytest.mark.parametrize(
    "position",
    [{"r": 1e300, "q": 1, "u": "x", "w": 0}, {"r": 1, "q": "9" * 30, "u": "x", "w": 0}],
    ids=["float-rank", "thirty-digit-queue-number"],
)
async def test_a_forged_attendees_cursor_with_a_number_past_64_bits_is_a_422(
    api: EventsApi, position: dict[str, Any]
) -> None:
    """FAILS today (500, OverflowError: Python int too large to convert to SQLite INTEGER): the attendees cursor's
    rank and queue number go through int(), which turns 1e300 or a 30-digit string into an integer no database
    takes (decode_cursor bounds the JSON integers only). Found by the s13 probe."""
    olga = await api.person("Olga")
    group_id = await api.group(olga)
    event = await api.schedule(olga, group_id)
    response = await api.client.get(
        f"/api/events/{event['id']}/attendees", params={"cursor": encode_cursor(position)}, headers=olga.auth
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize(
    "position",
    [
        {"r": 2**63 - 1, "q": 1, "u": "x", "w": 0},
        {"r": 0, "q": 2**31, "u": "x", "w": 0},
        {"r": 0, "q": -(2**63), "u": "x", "w": 0},
        {"r": 1, "q": 1, "u": "x", "w": -1},
    ],
    ids=["rank-past-32-bits", "queue-number-past-32-bits", "int64-min-queue-number", "negative-count-before"],
)
async def test_a_forged_attendees_cursor_with_a_number_no_issued_cursor_holds_is_a_422(
    api: EventsApi, position: dict[str, Any]
) -> None:
    """FAILED (500 on PostgreSQL, asyncpg's DataError: value out of int32 range): the cursor's rank and queue
    number are bound as the queue_no column's Integer, 32 bits on PostgreSQL, and decode_cursor bounds integers to
    64 bits only. An issued cursor holds a rank of 0 or 1, a queue number of the column's range and a count of
    parties before it, never negative. Found by the s14 probe."""
    olga = await api.person("Olga")
    group_id = await api.group(olga)
    event = await api.schedule(olga, group_id)
    response = await api.client.get(
        f"/api/events/{event['id']}/attendees", params={"cursor": encode_cursor(position)}, headers=olga.auth
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "cursor"


async def test_the_rsvp_route_answers_as_fastapis_handler_does(api: EventsApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """The RSVP route is a FastRoute (kernel/routes.py: its parameters and body planned, its answer serialized
    without re-validation): the same request through its plan and through FastAPI's own handler (which FastRoute
    hands every request to while FastAPI's telemetry is on) gives the same status, headers and body, for answers and
    refusals alike, on twin events in the same state."""
    handed_over = []

    def telemetry_on() -> object:
        handed_over.append(True)
        return object()

    group_id, olga, [ann, bob, cat] = await _group_of(api, "Ann", "Bob", "Cat")
    outsider = await api.person("Otto Outsider")
    closed_at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()

    async def twins(**fields: Any) -> tuple[str, str]:
        return (await api.schedule(olga, group_id, **fields))["id"], (await api.schedule(olga, group_id, **fields))[
            "id"
        ]

    async def both(person: Person | None, event_ids: tuple[str, str], body: str) -> None:
        headers = {**(person.auth if person else {}), "content-type": "application/json"}
        plain = await api.client.put(f"/api/events/{event_ids[0]}/rsvp", content=body, headers=headers)
        with monkeypatch.context() as patch:
            patch.setattr(routes, "get_telemetry_data", telemetry_on)
            general = await api.client.put(f"/api/events/{event_ids[1]}/rsvp", content=body, headers=headers)
        assert plain.status_code == general.status_code, (plain.text, general.text)
        assert plain.content.replace(event_ids[0].encode(), b"E") == general.content.replace(
            event_ids[1].encode(), b"E"
        )
        assert [(k, v) for k, v in plain.headers.items() if k not in VOLATILE_HEADERS] == [
            (k, v) for k, v in general.headers.items() if k not in VOLATILE_HEADERS
        ]

    one_seat, open_window, closed = (
        await twins(capacity=1, guest_limit=1),
        await twins(),
        await twins(rsvp_closes_at=closed_at),
    )
    yes, no = '{"response": "yes", "guests": 0}', '{"response": "no"}'
    await both(ann, one_seat, yes)  # going
    await both(ann, one_seat, yes)  # the same answer again
    await both(bob, one_seat, yes)  # waitlisted, position 1
    await both(cat, one_seat, '{"response": "yes", "guests": 1}')  # waitlisted behind Bob
    await both(ann, one_seat, no)  # Bob promoted
    await both(cat, one_seat, '{"response": "yes", "guests": 2}')  # more guests than allowed: 422 from the use case
    await both(outsider, open_window, yes)  # 403
    await both(None, open_window, yes)  # 401
    await both(ann, closed, yes)  # 409
    await both(ann, ("no-such-event", "no-such-event"), yes)  # 404
    await both(ann, open_window, '{"response": "maybe"}')  # 422 from validation
    await both(ann, open_window, '{"response": "yes", "guests": "1"}')  # strict: no string for a number
    await both(ann, open_window, "not json")
    await both(ann, open_window, "")
    await both(ann, open_window, "[" * 5000 + "]" * 5000)  # deeper than json.loads goes
    # FastRoute saw the telemetry and handed each request to FastAPI's handler (the last one is refused before it)
    assert len(handed_over) == 14


VOLATILE_HEADERS = {"x-request-id", "traceparent", "date", "server-timing"}


async def test_an_answers_narrow_read_agrees_with_the_whole_event_its_group_and_the_answer(api: EventsApi) -> None:
    # An answer reads only the event's seats, its group's visibility, the role and the answer (EventStore.answering):
    # each must be what the general reads give, for every kind of person and event it meets.
    group_id, olga, [ann, bob, cat] = await _group_of(api, "Ann", "Bob", "Cat")
    outsider = await api.person("Oscar")
    opens, closes = api.soon(days=-1), api.soon(days=5)
    windowed = await api.schedule(
        olga, group_id, capacity=2, guest_limit=3, rsvp_opens_at=opens.isoformat(), rsvp_closes_at=closes.isoformat()
    )
    await api.going(ann, windowed["id"], guests=1)
    await api.going(bob, windowed["id"])  # waitlisted
    assert (await api.rsvp(cat, windowed["id"], "no")).status_code == 200
    plain = await api.schedule(olga, group_id)
    cancelled = await api.schedule(olga, group_id, capacity=5)
    await api.going(ann, cancelled["id"])
    response = await api.client.post(f"/api/events/{cancelled['id']}/cancel", headers=olga.auth)
    assert response.status_code == 200, response.text
    await api.running.settle()
    async with unit_of_work(api.running.process.host("events").context) as uow:
        for event_id in (windowed["id"], plain["id"], cancelled["id"]):
            event = await uow.events.get(event_id)
            group = await uow.groups.get(group_id)
            assert event is not None and group is not None
            for person in (olga, ann, bob, cat, outsider):
                found = await uow.events.answering(event_id, person.user_id)
                assert found is not None
                assert found.seats == event.seats
                assert found.visibility is group.visibility
                assert found.role == await uow.members.role(group_id, person.user_id)
                assert found.own == await uow.rsvps.of(event_id, person.user_id)
        assert await uow.events.answering("no-such-event", ann.user_id) is None


async def test_an_answer_writes_its_rsvp_with_the_counters_in_one_statement_on_postgresql(api: EventsApi) -> None:
    # PostgreSQL takes the upsert inside the counters' UPDATE (a data-modifying WITH); SQLite, which has no INSERT
    # inside WITH, runs the two. Either way the answer and the counters are written.
    group_id, olga, [ann, bob] = await _group_of(api, "Ann", "Bob")
    event = await api.schedule(olga, group_id, capacity=1)
    engine = api.running.process.host("events").context.db.engine.sync_engine
    written: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "WITH")) and "outbox" not in statement:
            written.append(" ".join(statement.split()))

    sqlalchemy_events.listen(engine, "before_cursor_execute", record)
    try:
        assert (await api.going(ann, event["id"]))["status"] == "going"
        assert (await api.going(bob, event["id"]))["waitlist_position"] == 1
    finally:
        sqlalchemy_events.remove(engine, "before_cursor_execute", record)
    if engine.dialect.name == "postgresql":
        assert len(written) == 2
        assert all(s.startswith("WITH answer AS (INSERT INTO rsvps") and "UPDATE events SET" in s for s in written)
    else:
        assert [s.split()[:3] for s in written] == [["INSERT", "INTO", "rsvps"], ["UPDATE", "events", "SET"]] * 2
    page = await api.get(event["id"], ann)
    assert (page["going_count"], page["waitlist_count"]) == (1, 1)
    assert await api.attendees(event["id"], ann) == [(ann.user_id, "going", None), (bob.user_id, "waitlisted", 1)]
