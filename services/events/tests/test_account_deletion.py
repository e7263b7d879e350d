"""The events service's step of the account-deletion saga: on user.deleted the person's seats and waitlist places
in upcoming events are given up as a "no" would (the waitlist promotes in strict FIFO order, never over capacity,
with the usual rsvp.* events), their RSVPs go (check-ins stay as counts), their comments stay by "a deleted
member", their calendar feed and profile go, and the reply (user_deletion.step_done) commits with all of it;
nothing of anyone else is touched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from gatherly.contracts.users import UserDeleted
from gatherly.events.store import RsvpStore
from gatherly.events.tables import comments, events, profiles, rsvps

pytestmark = pytest.mark.asyncio(loop_scope="module")

EventsApi = Any  # the `api` fixture of conftest.py (test modules do not import conftest)


def _deleted(person: Any, deletion_id: str | None) -> UserDeleted:
    return UserDeleted(user_id=person.user_id, deleted_at=datetime.now(UTC), deletion_id=deletion_id)


async def _replies(api: EventsApi, person: Any) -> list[dict[str, Any]]:
    return [e.payload for e in await api.published("user_deletion", person.user_id) if e.payload["service"] == "events"]


async def _rows(api: EventsApi, table: Any, column: Any, value: str) -> int:
    async with api.running.process.host("events").context.db.read_session() as session:
        return int(await session.scalar(select(func.count()).select_from(table).where(column == value)) or 0)


async def _started(api: EventsApi, event_id: str) -> None:
    """The event began five minutes ago (scheduling refuses a past start; time moves on in real life)."""
    async with api.running.process.host("events").context.db.writing() as session:
        await session.execute(
            update(events).where(events.c.id == event_id).values(starts_at=datetime.now(UTC) - timedelta(minutes=5))
        )


async def _check_in(api: EventsApi, leader: Any, event_id: str, person: Any) -> int:
    response = await api.client.post(f"/api/events/{event_id}/check-in/{person.user_id}", headers=leader.auth)
    assert response.status_code == 200, response.text
    attendance: int = response.json()["attendance"]
    return attendance


async def test_seats_given_up_go_to_the_waitlist_in_order_and_never_over_capacity(api: EventsApi) -> None:
    olga, ann, bob, cat, dan = await api.people("Olga", "Ann 1", "Bob 1", "Cat 1", "Dan 1")
    group_id = await api.group(olga, members={ann: "member", bob: "member", cat: "member", dan: "member"})
    full = await api.schedule(olga, group_id, capacity=3, guest_limit=2)
    await api.going(ann, full["id"], guests=1)  # 2 seats
    await api.going(bob, full["id"])  # 1 seat: full
    await api.going(cat, full["id"], guests=1)  # waits, a party of 2
    await api.going(dan, full["id"])  # waits behind Cat
    queue = await api.schedule(olga, group_id, title="Queue run", capacity=1)
    await api.going(bob, queue["id"])
    await api.going(ann, queue["id"])  # waits first
    await api.going(cat, queue["id"])  # waits second

    await api.deliver(_deleted(ann, "deletion-1"))

    # Ann's 2 seats seat Cat's party of 2; Dan (1) does not fit and stays first in line.
    assert await api.attendees(full["id"]) == [
        (bob.user_id, "going", None),
        (cat.user_id, "going", None),
        (dan.user_id, "waitlisted", 1),
    ]
    shown = await api.get(full["id"])
    assert (shown["going_count"], shown["waitlist_count"]) == (3, 1)
    # Ann's place in the queue goes: Cat moves up.
    assert await api.attendees(queue["id"]) == [(bob.user_id, "going", None), (cat.user_id, "waitlisted", 1)]
    assert (await api.get(queue["id"]))["waitlist_count"] == 1

    told = [(e.type, e.payload["user_id"]) for e in await api.published("rsvp", full["id"])][-2:]
    assert told == [("rsvp.cancelled", ann.user_id), ("rsvp.promoted", cat.user_id)]
    [cancelled] = [e.payload for e in await api.published("rsvp", queue["id"]) if e.type == "rsvp.cancelled"]
    assert (cancelled["user_id"], cancelled["reason"], cancelled["previous_status"]) == (
        ann.user_id,
        "account_deleted",
        "waitlisted",
    )
    assert await _rows(api, rsvps, rsvps.c.user_id, ann.user_id) == 0
    [reply] = await _replies(api, ann)
    assert reply["deletion_id"] == "deletion-1"
    assert reply["what"] == {"rsvps_withdrawn": 2, "rsvps": 2}


async def test_comments_stay_by_a_deleted_member_and_check_ins_stay_as_counts(api: EventsApi) -> None:
    olga, ann, bob = await api.people("Olga", "Ann 2", "Bob 2")
    group_id = await api.group(olga, members={ann: "member", bob: "member"})
    upcoming = await api.schedule(olga, group_id, title="Upcoming")
    past = await api.schedule(olga, group_id, title="Past")
    for event in (upcoming, past):
        await api.going(ann, event["id"])
        await api.going(bob, event["id"])
        await _check_in(api, olga, event["id"], ann)
        assert await _check_in(api, olga, event["id"], bob) == 2
    await _started(api, past["id"])
    said = {}
    for person in (ann, bob):
        response = await api.client.post(
            f"/api/events/{past['id']}/comments",
            json={"body": f"Thanks, from {person.display_name}"},
            headers=person.auth,
        )
        assert response.status_code == 201, response.text
        said[person.user_id] = response.json()["id"]
    feed = (await api.client.get("/api/calendar/me", headers=ann.auth)).json()["url"]
    bobs_feed = (await api.client.get("/api/calendar/me", headers=bob.auth)).json()["url"]
    past_rsvps_before = [e.type for e in await api.published("rsvp", past["id"])]

    await api.deliver(_deleted(ann, "deletion-2"))

    listed = await api.client.get(f"/api/events/{past['id']}/comments", headers=bob.auth)
    assert listed.status_code == 200, listed.text
    assert [(c["id"], c["author_id"], c["body"]) for c in listed.json()["items"]] == [
        (said[ann.user_id], None, "Thanks, from Ann 2"),
        (said[bob.user_id], bob.user_id, "Thanks, from Bob 2"),
    ]
    for event in (upcoming, past):
        shown = await api.get(event["id"])
        assert shown["attendance"] == 2, "Ann's check-in stays counted"
        assert await api.attendees(event["id"]) == [(bob.user_id, "going", None)], "but she is not listed"
    # The past event's seats are its history: nothing promoted or told there, its seat count as it was.
    assert [e.type for e in await api.published("rsvp", past["id"])] == past_rsvps_before
    assert (await api.get(past["id"]))["going_count"] == 2
    assert (await api.get(upcoming["id"]))["going_count"] == 1
    # A later check-in counts on from there.
    carl = await api.person("Carl 2")
    await api.join(carl, group_id)
    await api.running.settle()
    await api.going(carl, upcoming["id"])
    assert await _check_in(api, olga, upcoming["id"], carl) == 3

    assert (await api.client.get(feed)).status_code == 404
    assert (await api.client.get(bobs_feed)).status_code == 200
    async with api.running.process.host("events").context.db.read_session() as session:
        profile = (await session.execute(select(profiles).where(profiles.c.user_id == ann.user_id))).mappings().one()
    assert (profile["display_name"], profile["avatar"]) == (None, None)
    assert await _rows(api, comments, comments.c.author_id, ann.user_id) == 0
    assert await _rows(api, comments, comments.c.author_id, bob.user_id) == 1
    [reply] = await _replies(api, ann)
    assert reply["what"] == {
        "rsvps_withdrawn": 1,
        "check_ins_kept_as_counts": 2,
        "rsvps": 2,
        "comments_anonymised": 1,
        "calendar_feeds": 1,
    }


async def test_a_deleted_accounts_token_answers_nothing_any_more(api: EventsApi) -> None:
    olga, ann = await api.people("Olga", "Ann 3")
    group_id = await api.group(olga, members={ann: "member"})
    event = await api.schedule(olga, group_id)
    await api.deliver(_deleted(ann, "deletion-3"))
    # Her access token has minutes left, but the service learnt of the deletion (the kernel's revoked subjects) and
    # refuses it outright; and she is a member nowhere here any more either.
    assert (await api.rsvp(ann, event["id"])).status_code == 401
    response = await api.client.post(f"/api/events/{event['id']}/comments", json={"body": "hi"}, headers=ann.auth)
    assert response.status_code == 401
    assert await _rows(api, rsvps, rsvps.c.user_id, ann.user_id) == 0
    [reply] = await _replies(api, ann)
    assert reply["what"] == {}, "a person who held nothing here is answered too"


async def test_a_repeated_deletion_replies_again_and_one_without_a_saga_replies_to_nobody(api: EventsApi) -> None:
    olga, ann, dan = await api.people("Olga", "Ann 4", "Dan 4")
    group_id = await api.group(olga, members={ann: "member", dan: "member"})
    event = await api.schedule(olga, group_id)
    await api.going(ann, event["id"])
    await api.going(dan, event["id"])
    await api.deliver(_deleted(ann, "first"))
    await api.deliver(_deleted(ann, "second"))
    assert [(r["deletion_id"], r["what"]) for r in await _replies(api, ann)] == [
        ("first", {"rsvps_withdrawn": 1, "rsvps": 1}),
        ("second", {}),
    ]
    await api.deliver(_deleted(dan, None))
    assert await api.attendees(event["id"]) == []
    assert await _replies(api, dan) == []


async def test_a_database_error_during_the_erasure_is_retried_not_parked(
    api: EventsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    olga, ann = await api.people("Olga", "Ann 5")
    group_id = await api.group(olga, members={ann: "member"})
    event = await api.schedule(olga, group_id)
    await api.going(ann, event["id"])
    of_person = RsvpStore.of_person
    calls: list[str] = []

    async def failing_once(self: RsvpStore, user_id: str) -> Any:
        calls.append(user_id)
        if len(calls) == 1:
            raise OperationalError("SELECT FROM rsvps", {}, Exception("the database went away"))
        return await of_person(self, user_id)

    monkeypatch.setattr(RsvpStore, "of_person", failing_once)
    parked_before = len(await api.published("user.dlq"))
    await api.deliver(_deleted(ann, "retried"))
    assert len(calls) >= 2
    assert await api.attendees(event["id"]) == []
    assert [r["deletion_id"] for r in await _replies(api, ann)] == ["retried"]
    assert len(await api.published("user.dlq")) == parked_before
