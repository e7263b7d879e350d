"""Someone who deleted their account is told nothing again: later events that still name them (a cancellation
listing them as an attendee, an RSVP that raced the deletion) and their old unsubscribe link recreate no rows."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from gatherly.contracts.events import RsvpConfirmed
from gatherly.notifications import domain, service
from gatherly.notifications.store import unit_of_work
from gatherly.notifications.tables import attendees, deliveries, notifications, preferences, reminders

from .conftest import soon

pytestmark = pytest.mark.asyncio(loop_scope="module")
# `api` is conftest.NotificationsApi: one whole Gatherly per module and database backend.


async def _rows_of(context: Any, user_id: str) -> dict[str, int]:
    counted = {}
    async with context.db.read_session() as session:
        for table in (notifications, deliveries, preferences, attendees, reminders):
            counted[table.name] = await session.scalar(
                select(func.count()).select_from(table).where(table.c.user_id == user_id)
            )
    return counted


NOTHING = {"notifications": 0, "deliveries": 0, "preferences": 0, "attendees": 0, "reminders": 0}


async def _deleted_member(api: Any) -> tuple[Any, Any, Any, str, Any]:
    """Olga's group with Ann and Bob; Ann had an announcement's email (its unsubscribe link), then left Gatherly."""
    olga, ann, bob = await api.person("Olga"), await api.person("Ann"), await api.person("Bob")
    group_id = await api.group(olga, ann, bob)
    sent = await api.client.post(
        f"/api/groups/{group_id}/announcements", json={"subject": "Kit list", "body": "."}, headers=olga.auth
    )
    assert sent.status_code == 202
    mail = await api.wait_for_mail(ann, "Kit list")
    deleted = await api.client.delete("/api/users/me", headers=ann.auth)
    assert deleted.status_code in (200, 202, 204), deleted.text
    await api.running.settle()
    context = api.running.process.host("notifications").context
    assert await _rows_of(context, ann.user_id) == NOTHING, "the deletion erased Ann's rows"
    return olga, ann, bob, group_id, mail


async def test_a_later_event_naming_a_deleted_person_tells_only_the_others(api: Any) -> None:
    olga, ann, bob, _, _ = await _deleted_member(api)
    context = api.running.process.host("notifications").context
    notices = domain.event_cancelled(
        "ev-deleted-1", "Evening run", soon(), "cancelled", [ann.user_id, bob.user_id], by=olga.user_id
    )
    async with unit_of_work(context) as uow:
        told = await service.tell(uow, notices, "test:cancelled:ev-deleted-1")
    assert told == 1, "Bob only"
    assert "event_cancelled" in await api.kinds(bob)
    assert await _rows_of(context, ann.user_id) == NOTHING


async def test_an_rsvp_that_raced_the_deletion_keeps_nothing_of_theirs(api: Any) -> None:
    olga, ann, _, group_id, _ = await _deleted_member(api)
    event = await api.schedule(olga, group_id)
    context = api.running.process.host("notifications").context
    raced = RsvpConfirmed(
        event_id=event["id"], group_id=group_id, user_id=ann.user_id, guests=0, responded_at=datetime.now(UTC)
    )
    async with unit_of_work(context) as uow:
        await service.rsvp_changed(uow, raced, "test:rsvp:ann")
    assert await _rows_of(context, ann.user_id) == NOTHING, "no attendee, reminders, inbox row or send"


async def test_a_deleted_persons_unsubscribe_link_recreates_no_preferences(api: Any) -> None:
    _, ann, _, _, mail = await _deleted_member(api)
    link = urllib.parse.urlsplit(mail["List-Unsubscribe"].strip("<>"))
    done = await api.client.post(
        f"{link.path}?{link.query}",
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200, done.text
    context = api.running.process.host("notifications").context
    assert await _rows_of(context, ann.user_id) == NOTHING
