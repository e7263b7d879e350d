"""Reminders through the API: sent within 10 s of their due time and once, moved with the event's time, dropped when
the event is cancelled or the person answers no; and two workers on one database send each reminder exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from gatherly.kernel.db import Database
from gatherly.kernel.testing import DB_BACKENDS, scratch_database
from gatherly.notifications import SERVICE
from gatherly.notifications.service import send_due_reminders
from gatherly.notifications.store import NotificationsUnitOfWork, ReminderStore, reading
from gatherly.notifications.tables import attendees, events, notifications, reminders

pytestmark = pytest.mark.asyncio(loop_scope="module")
# `api` is conftest.NotificationsApi: one whole Gatherly per module and database backend.


async def _going_with_one_hour_reminder(api: Any, lead: timedelta) -> tuple[Any, Any, dict[str, Any], datetime]:
    """Ann goes to Olga's event starting `lead` from when it is scheduled, with a reminder an hour before."""
    olga, ann = await api.person("Olga"), await api.person("Ann")
    put = await api.client.put(
        "/api/notifications/preferences", json={"reminders": {"hours_before": [1]}}, headers=ann.auth
    )
    assert put.status_code == 200
    group_id = await api.group(olga, ann)
    starts_at = (datetime.now(UTC) + lead).replace(microsecond=0)
    event = await api.schedule(
        olga,
        group_id,
        title="Sunrise yoga",
        starts_at=starts_at.isoformat(),
        ends_at=(starts_at + timedelta(hours=1)).isoformat(),
    )
    await api.rsvp(ann, event["id"])
    return olga, ann, event, starts_at


async def _schedule(api: Any, event_id: str) -> list[tuple[str, int, datetime, datetime | None]]:
    await api.running.settle()
    async with reading(api.running.process.host("notifications").context.db) as stores:
        return await stores.reminders.of(event_id)


async def _reminders(api: Any, person: Any) -> list[dict[str, Any]]:
    return [i for i in (await api.inbox(person, limit=100))["items"] if i["kind"] == "event_reminder"]


async def _wait_for_reminder(api: Any, person: Any, timeout: float) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := await _reminders(api, person)):
        assert asyncio.get_running_loop().time() < deadline, "no reminder came"
        await asyncio.sleep(0.1)
    [reminder] = found
    return reminder


async def test_a_reminder_comes_within_ten_seconds_of_its_due_time_and_once(api: Any) -> None:
    # Due 20 s after the event is scheduled: time for the setup to finish first, even on a busy machine.
    _, ann, event, starts_at = await _going_with_one_hour_reminder(api, timedelta(hours=1, seconds=20))
    [(user_id, hours, due_at, sent_at)] = await _schedule(api, event["id"])
    assert (user_id, hours, due_at, sent_at) == (ann.user_id, 1, starts_at - timedelta(hours=1), None)

    reminder = await _wait_for_reminder(api, ann, timeout=40)
    arrived = datetime.fromisoformat(reminder["created_at"])
    assert due_at <= arrived <= due_at + timedelta(seconds=10), (due_at, arrived)
    assert reminder["title"] == "Reminder: Sunrise yoga"
    assert "starts in an hour" in reminder["body"]
    await api.wait_for_mail(ann, "Reminder: Sunrise yoga")
    [(_, _, _, sent_at)] = await _schedule(api, event["id"])
    assert sent_at is not None
    await api.running.settle()
    assert len(await _reminders(api, ann)) == 1


async def test_moving_the_event_moves_its_reminders(api: Any) -> None:
    olga, ann, event, _ = await _going_with_one_hour_reminder(api, timedelta(days=3))
    starts_at = (datetime.now(UTC) + timedelta(hours=1, seconds=20)).replace(microsecond=0)
    moved = await api.client.patch(
        f"/api/events/{event['id']}",
        json={"starts_at": starts_at.isoformat(), "ends_at": (starts_at + timedelta(hours=1)).isoformat()},
        headers=olga.auth,
    )
    assert moved.status_code == 200, moved.text
    [(_, _, due_at, _)] = await _schedule(api, event["id"])
    assert due_at == starts_at - timedelta(hours=1)
    await _wait_for_reminder(api, ann, timeout=40)


async def test_answering_no_or_a_cancellation_drops_the_reminders(api: Any) -> None:
    olga, ann, event, _ = await _going_with_one_hour_reminder(api, timedelta(days=3))
    assert len(await _schedule(api, event["id"])) == 1
    await api.rsvp(ann, event["id"], "no")
    assert await _schedule(api, event["id"]) == []

    await api.rsvp(ann, event["id"], "yes")
    assert len(await _schedule(api, event["id"])) == 1
    cancelled = await api.client.post(f"/api/events/{event['id']}/cancel", headers=olga.auth)
    assert cancelled.status_code == 200
    assert await _schedule(api, event["id"]) == []


async def test_changing_the_reminder_hours_reschedules_the_events_already_planned(api: Any) -> None:
    _, ann, event, starts_at = await _going_with_one_hour_reminder(api, timedelta(days=3))
    put = await api.client.put(
        "/api/notifications/preferences", json={"reminders": {"hours_before": [48, 3]}}, headers=ann.auth
    )
    assert put.status_code == 200
    schedule = await _schedule(api, event["id"])
    assert [(h, due) for _, h, due, _ in schedule] == [
        (3, starts_at - timedelta(hours=3)),
        (48, starts_at - timedelta(hours=48)),
    ]


async def _due_reminders(db: Database, people: list[str], due: datetime) -> None:
    """An event two hours after `due` with `people` going, each with a two-hours-before reminder due at `due`."""
    async with db.writing() as session:
        await session.execute(
            insert(events).values(
                event_id="e1",
                group_id="g1",
                group_name="Runners",
                title="Relay",
                starts_at=due + timedelta(hours=2),
                timezone="UTC",
                place="Track",
                status="scheduled",
                sequence=1,
            )
        )
        await session.execute(insert(attendees), [{"event_id": "e1", "user_id": p, "status": "going"} for p in people])
        await session.execute(
            insert(reminders), [{"event_id": "e1", "user_id": p, "hours_before": 2, "due_at": due} for p in people]
        )


async def _told_and_unsent(db: Database) -> tuple[int, int, int]:
    """Notifications, distinct people told, and reminders not marked sent."""
    async with db.read_session() as session:
        told = await session.scalar(select(func.count()).select_from(notifications))
        distinct = await session.scalar(select(func.count(func.distinct(notifications.c.user_id))))
        unsent = await session.scalar(select(func.count()).select_from(reminders).where(reminders.c.sent_at.is_(None)))
    return int(told or 0), int(distinct or 0), int(unsent or 0)


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_two_workers_send_each_due_reminder_exactly_once(tmp_path: Path, database_backend: str) -> None:
    due = datetime.now(UTC) - timedelta(seconds=1)
    people = [f"person-{n}" for n in range(300)]
    async with scratch_database(database_backend, tmp_path) as url:
        setup = Database(url)
        await setup.migrate(SERVICE.migrations)
        await _due_reminders(setup, people, due)
        # Two engines are two workers' connections (as two processes have); each claims batches of 7 until none is left.
        workers = [Database(url), Database(url)]

        async def work(db: Database) -> int:
            total = 0
            while sent := await send_due_reminders(NotificationsUnitOfWork(db), limit=7):
                total += sent
                await asyncio.sleep(0)
            return total

        try:
            counts = await asyncio.gather(*(work(db) for db in workers))
            told, distinct, unsent = await _told_and_unsent(setup)
        finally:
            for db in (*workers, setup):
                await db.dispose()
    assert sum(counts) == told == distinct == 300
    assert unsent == 0
    assert all(counts), f"both workers took part: {counts}"


class WorkerDied(Exception):
    """The worker's process ending in the middle of a round (a SIGKILL, a power cut): its transaction never commits."""


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_a_worker_dying_mid_round_tells_nobody_and_after_the_restart_each_is_told_once(
    tmp_path: Path, database_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    due = datetime.now(UTC) - timedelta(seconds=1)
    people = [f"person-{n}" for n in range(5)]
    async with scratch_database(database_backend, tmp_path) as url:
        setup = Database(url)
        await setup.migrate(SERVICE.migrations)
        await _due_reminders(setup, people, due)
        marked = 0
        mark_sent = ReminderStore.mark_sent

        async def dies_at_the_third(self: ReminderStore, reminder: Any, now: datetime) -> None:
            nonlocal marked
            marked += 1
            if marked == 3:  # two people told and marked in this round, the third told: then the process dies
                raise WorkerDied
            await mark_sent(self, reminder, now)

        first, restarted = Database(url), Database(url)
        try:
            with monkeypatch.context() as patch:
                patch.setattr(ReminderStore, "mark_sent", dies_at_the_third)
                with pytest.raises(WorkerDied):
                    await send_due_reminders(NotificationsUnitOfWork(first), limit=10)
            assert await _told_and_unsent(setup) == (0, 0, 5), "the dead round told nobody and marked nothing"
            await first.dispose()
            sent = await send_due_reminders(NotificationsUnitOfWork(restarted), limit=10)
            again = await send_due_reminders(NotificationsUnitOfWork(restarted), limit=10)
            told = await _told_and_unsent(setup)
        finally:
            for db in (first, restarted, setup):
                await db.dispose()
    assert (sent, again) == (5, 0)
    assert told == (5, 5, 0), "each told once after the restart, all marked sent"
