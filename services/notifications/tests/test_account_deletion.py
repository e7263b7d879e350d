"""The notifications service's step of the account-deletion saga: on user.deleted the person's inbox, preferences,
sends, push subscriptions and reminders go, the recipient keeps no address, and the reply
(user_deletion.step_done) commits with the erasure; nothing of anyone else is touched."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import OperationalError

from gatherly.contracts.base import IntegrationEvent
from gatherly.contracts.events import EventCancelled
from gatherly.contracts.users import UserConfirmed, UserDeleted, UserProfileUpdated
from gatherly.kernel.messages import Envelope
from gatherly.notifications.store import InboxStore
from gatherly.notifications.tables import (
    attendees,
    deliveries,
    group_members,
    notifications,
    preferences,
    push_subscriptions,
    recipients,
    reminders,
)

from .conftest import eventually, soon

pytestmark = pytest.mark.asyncio(loop_scope="module")
# `api` is conftest.NotificationsApi: one whole Gatherly per module and database backend.

PERSONAL = (notifications, deliveries, preferences, push_subscriptions, reminders, attendees, group_members)


async def _deliver(api: Any, *events: IntegrationEvent) -> None:
    now = datetime.now(UTC)
    await api.running.process.platform.log.publish([Envelope.wrap(event, now).to_message() for event in events])
    await api.running.settle()


def _context(api: Any) -> Any:
    return api.running.process.host("notifications").context


async def _rows_of(api: Any, user_id: str) -> dict[str, int]:
    async with _context(api).db.read_session() as session:
        return {
            table.name: int(
                await session.scalar(select(func.count()).select_from(table).where(table.c.user_id == user_id)) or 0
            )
            for table in PERSONAL
        }


async def _recipient(api: Any, user_id: str) -> dict[str, Any]:
    async with _context(api).db.read_session() as session:
        row = (await session.execute(select(recipients).where(recipients.c.user_id == user_id))).mappings().one()
    return dict(row)


async def _replies(api: Any, user_id: str) -> list[dict[str, Any]]:
    await api.running.settle()
    records = await api.running.process.platform.log.read("user_deletion", limit=100_000)
    envelopes = [Envelope.from_record(record) for record in records]
    return [e.payload for e in envelopes if e.aggregate_id == user_id and e.payload["service"] == "notifications"]


async def _subscribe(api: Any, user_id: str) -> None:
    """A push subscription as the API would store it (registering one through the API needs a public endpoint)."""
    async with _context(api).db.writing() as connection:
        await connection.execute(
            insert(push_subscriptions).values(
                id=uuid.uuid4().hex,
                user_id=user_id,
                endpoint=f"https://push.example.org/{uuid.uuid4().hex}",
                p256dh="key",
                auth="auth",
                created_at=datetime.now(UTC),
            )
        )


async def _everything_of_two(api: Any) -> tuple[Any, Any, Any, str]:
    """Olga's group with Ann and Bob, both going to an event (reminders), both told of it (inbox, emails), both
    with preferences and a push subscription."""
    olga, ann, bob = await api.person("Olga"), await api.person("Ann"), await api.person("Bob")
    group_id = await api.group(olga, ann, bob)
    event = await api.schedule(olga, group_id)
    for person in (ann, bob):
        await api.rsvp(person, event["id"])
        chosen = {"email": {"comment_posted": True}, "reminders": {"hours_before": [24, 2]}}
        put = await api.client.put("/api/notifications/preferences", json=chosen, headers=person.auth)
        assert put.status_code == 200, put.text
        await _subscribe(api, person.user_id)
    await api.wait_for_mail(ann, "Evening run")
    await api.running.settle()
    return olga, ann, bob, event["id"]


async def test_a_deletion_erases_the_persons_notifications_and_replies_with_what_went(api: Any) -> None:
    _, ann, bob, _ = await _everything_of_two(api)
    ann_before, bob_before = await _rows_of(api, ann.user_id), await _rows_of(api, bob.user_id)
    assert all(ann_before[t] for t in ("notifications", "deliveries", "preferences", "push_subscriptions"))
    assert ann_before["reminders"] == 2

    await _deliver(api, UserDeleted(user_id=ann.user_id, deleted_at=datetime.now(UTC), deletion_id="deletion-1"))

    assert set((await _rows_of(api, ann.user_id)).values()) == {0}
    assert await _rows_of(api, bob.user_id) == bob_before, "nothing of Bob's is touched"
    kept = await _recipient(api, ann.user_id)
    assert (kept["email"], kept["display_name"], kept["confirmed"]) == (None, None, False)
    assert kept["deleted_at"] is not None
    assert (await _recipient(api, bob.user_id))["email"] == bob.email
    [reply] = await _replies(api, ann.user_id)
    assert reply["deletion_id"] == "deletion-1"
    assert reply["what"] == {
        "notifications": ann_before["notifications"],
        "sends": ann_before["deliveries"],
        "preferences": 1,
        "push_subscriptions": 1,
        "reminders": 2,
    }


async def test_a_repeated_deletion_replies_again_with_its_own_id(api: Any) -> None:
    ann = await api.person("Ann")
    put = await api.client.put("/api/notifications/preferences", json={"email": {}}, headers=ann.auth)
    assert put.status_code == 200, put.text
    now = datetime.now(UTC)
    # Another deletion after a failed one (its saga timed out): erased already, but the new saga needs its reply.
    await _deliver(api, UserDeleted(user_id=ann.user_id, deleted_at=now, deletion_id="first"))
    await _deliver(api, UserDeleted(user_id=ann.user_id, deleted_at=now, deletion_id="second"))
    replies = await _replies(api, ann.user_id)
    assert [(r["deletion_id"], r["what"]) for r in replies] == [("first", {"preferences": 1}), ("second", {})]


async def test_a_deletion_without_a_saga_erases_the_same_and_replies_to_nobody(api: Any) -> None:
    _, ann, _, _ = await _everything_of_two(api)
    await _deliver(api, UserDeleted(user_id=ann.user_id, deleted_at=datetime.now(UTC)))
    assert set((await _rows_of(api, ann.user_id)).values()) == {0}
    assert (await _recipient(api, ann.user_id))["email"] is None
    assert await _replies(api, ann.user_id) == []


async def test_no_email_reaches_the_address_after_the_deletion_not_even_from_a_late_event(api: Any) -> None:
    olga, ann, bob, event_id = await _everything_of_two(api)
    now = datetime.now(UTC)
    await _deliver(api, UserDeleted(user_id=ann.user_id, deleted_at=now, deletion_id="late"))
    mails_before = len(api.mail(ann))
    # Late messages still naming Ann: her profile with the address, her confirmation, and a cancellation of an
    # event she was going to, published before the events service heard of the deletion.
    late = datetime.now(UTC)
    await _deliver(
        api,
        UserProfileUpdated(user_id=ann.user_id, email=ann.email, display_name="Ann", updated_at=late),
        UserConfirmed(user_id=ann.user_id, email=ann.email, display_name="Ann", confirmed_at=late),
        EventCancelled(
            event_id=event_id,
            group_id="g",
            group_name="Runners",
            title="Late run",
            starts_at=soon(),
            reason="cancelled",
            cancelled_by=olga.user_id,
            attendee_ids=[ann.user_id, bob.user_id],
            waitlist_ids=[],
            sequence=99,
            cancelled_at=late,
        ),
    )
    await api.wait_for_mail(bob, "Cancelled: Late run")  # the mailer has sent this cancellation's emails
    assert (await _recipient(api, ann.user_id))["email"] is None
    assert set((await _rows_of(api, ann.user_id)).values()) == {0}
    assert len(api.mail(ann)) == mails_before


async def test_a_database_error_during_the_erasure_is_retried_not_parked(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ann, _, _ = await _everything_of_two(api)
    erase = InboxStore.forget_person
    calls: list[str] = []

    async def failing_once(self: InboxStore, user_id: str) -> dict[str, int]:
        calls.append(user_id)
        if len(calls) == 1:
            raise OperationalError("DELETE FROM notifications", {}, Exception("the database went away"))
        return await erase(self, user_id)

    monkeypatch.setattr(InboxStore, "forget_person", failing_once)
    await _deliver(api, UserDeleted(user_id=ann.user_id, deleted_at=datetime.now(UTC), deletion_id="retried"))

    async def erased() -> bool:
        return set((await _rows_of(api, ann.user_id)).values()) == {0}

    await eventually(erased, what="the erasure after the retry")
    assert len(calls) >= 2
    assert [r["deletion_id"] for r in await _replies(api, ann.user_id)] == ["retried"]
    # Nothing of hers parked (the module's service is shared: other tests' messages may be parked meanwhile).
    parked = await api.running.process.platform.log.read("user.dlq", limit=100_000)
    assert [r for r in parked if Envelope.from_record(r).aggregate_id == ann.user_id] == []


async def test_the_tombstone_keeps_no_location_of_the_person(api: Any) -> None:
    ann = await api.person("Ann")
    where = {"city": "Lyon", "location": {"lat": 45.764, "lng": 4.8357}}
    patched = await api.client.patch("/api/users/me", json=where, headers=ann.auth)
    assert patched.status_code == 200, patched.text
    await api.running.settle()
    await eventually(lambda: _has_location(api, ann.user_id))

    await _deliver(api, UserDeleted(user_id=ann.user_id, deleted_at=datetime.now(UTC), deletion_id="deletion-4"))

    kept = await _recipient(api, ann.user_id)
    assert kept["deleted_at"] is not None
    assert (kept["lat"], kept["lng"]) == (None, None), "a deleted person's exact place stays behind"


async def _has_location(api: Any, user_id: str) -> bool:
    return (await _recipient(api, user_id))["lat"] is not None
