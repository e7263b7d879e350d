"""The group-deletion saga across the groups and events services in one Gatherly: deleting a group cancels its
upcoming events (attendees and waitlist told through event.cancelled), and the events service's reply completes
the groups service's saga."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from gatherly.events.tables import events
from gatherly.kernel.sagas import SagaStore

pytestmark = pytest.mark.asyncio(loop_scope="module")

EventsApi = Any  # the `api` fixture of conftest.py (test modules do not import conftest)


async def _saga(api: EventsApi, group_id: str) -> tuple[str, str]:
    """The groups service's saga state, read from its database with the kernel's saga store."""
    async with api.running.process.host("groups").context.db.read_session() as session:
        saga = await SagaStore(session, "group_deletion").get(group_id)
    assert saga is not None
    return saga.status, saga.step


async def test_deleting_a_group_cancels_its_upcoming_events_and_completes_the_saga(api: EventsApi) -> None:
    olga, ann, bob = await api.people("Olga", "Ann", "Bob")
    group_id = await api.group(olga, members={ann: "member", bob: "member"}, name="Doomed Runners")
    full = await api.schedule(olga, group_id, capacity=1)
    await api.going(ann, full["id"])
    await api.going(bob, full["id"])
    later = await api.schedule(olga, group_id, title="Later run")
    cancelled_before = await api.schedule(olga, group_id, title="Called off")
    assert (await api.client.post(f"/api/events/{cancelled_before['id']}/cancel", headers=olga.auth)).status_code == 200
    started = await api.schedule(olga, group_id, title="Already running")
    async with api.running.process.host("events").context.db.writing() as session:
        await session.execute(
            update(events)
            .where(events.c.id == started["id"])
            .values(starts_at=datetime.now(UTC) - timedelta(minutes=5))
        )
    other_group = await api.group(olga, name="Surviving Runners")
    survivor = await api.schedule(olga, other_group)

    deleted = await api.client.delete(f"/api/groups/{group_id}", headers=olga.auth)
    assert deleted.status_code == 202, deleted.text
    await api.running.settle()

    assert await _saga(api, group_id) == ("completed", "done")
    [reply] = await api.published("group_deletion", group_id)
    assert reply.type == "group_deletion.events_cancelled"
    assert sorted(reply.payload["cancelled_event_ids"]) == sorted([full["id"], later["id"]])

    [told] = [e for e in await api.published("event", full["id"]) if e.type == "event.cancelled"]
    assert (told.payload["reason"], told.payload["cancelled_by"]) == ("group_deleted", olga.user_id)
    assert (told.payload["attendee_ids"], told.payload["waitlist_ids"]) == ([ann.user_id], [bob.user_id])
    # Cancelled once only; a started event is left as it was; other groups are untouched.
    assert [e.type for e in await api.published("event", cancelled_before["id"])].count("event.cancelled") == 1
    assert [e.type for e in await api.published("event", started["id"])] == ["event.scheduled"]
    assert (await api.get(survivor["id"]))["status"] == "scheduled"

    # The group is gone here too: its events are not found, and nobody schedules in it any more.
    assert (await api.client.get(f"/api/events/{later['id']}", headers=olga.auth)).status_code == 404
    response = await api.client.post("/api/events", json=api.event_body(group_id), headers=olga.auth)
    assert response.status_code == 404


async def test_a_group_without_events_is_deleted_too(api: EventsApi) -> None:
    olga = await api.person("Olga")
    group_id = await api.group(olga, name="Empty Runners")
    assert (await api.client.delete(f"/api/groups/{group_id}", headers=olga.auth)).status_code == 202
    await api.running.settle()
    assert await _saga(api, group_id) == ("completed", "done")
    [reply] = await api.published("group_deletion", group_id)
    assert reply.payload["cancelled_event_ids"] == []
