"""The notifications service's copies of other services' data (recipients, members, events, attendees) are built
from events alone; replaying the topics from the beginning rebuilds them and tells nobody a second time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from gatherly.app.compose import build_log
from gatherly.app.services import ALL
from gatherly.app.testing import running_gatherly, sign_up
from gatherly.kernel.db import Database
from gatherly.kernel.delivery import forget_processed
from gatherly.kernel.testing import DB_BACKENDS, migrated_database, rows_written, scratch_databases
from gatherly.notifications import SERVICE
from gatherly.notifications.store import NotificationsUnitOfWork
from gatherly.notifications.tables import attendees, events, group_members, groups, notifications, recipients

FAST = {"password_time_cost": 1, "password_memory_kib": 8, "password_parallelism": 1, "signup_limit_per_minute": 0}
GROUPS = ("notifications.recipients", "notifications.members", "notifications.events", "notifications.requests")
READ_MODELS = (recipients, group_members, events, attendees)


async def _counts(db: Database) -> dict[str, int]:
    async with db.read_session() as session:
        tables = (*READ_MODELS, notifications)
        return {t.name: int(await session.scalar(select(func.count()).select_from(t)) or 0) for t in tables}


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_replaying_the_topics_rebuilds_the_read_models_and_tells_nobody_twice(
    tmp_path: Path, database_backend: str
) -> None:
    async with scratch_databases(database_backend, tmp_path, list(ALL)) as database_url:
        async with running_gatherly(tmp_path, database_url=database_url, **FAST) as gatherly:
            olga = await sign_up(gatherly, display_name="Olga")
            ann = await sign_up(gatherly, display_name="Ann")
            group = await gatherly.client.post("/api/groups", json={"name": "Runners"}, headers=olga.auth)
            group_id = group.json()["id"]
            await gatherly.client.post(f"/api/groups/{group_id}/join", json={}, headers=ann.auth)
            await gatherly.settle()
            body = {
                "group_id": group_id,
                "title": "Night run",
                "starts_at": "2099-01-01T19:00:00+01:00",
                "ends_at": "2099-01-01T21:00:00+01:00",
                "timezone": "Europe/Berlin",
                "online_url": "https://meet.example.org/night",
            }
            event = await gatherly.client.post("/api/events", json=body, headers=olga.auth)
            assert event.status_code == 201, event.text
            await gatherly.settle()
            rsvp = await gatherly.client.put(
                f"/api/events/{event.json()['id']}/rsvp", json={"response": "yes", "guests": 0}, headers=ann.auth
            )
            assert rsvp.status_code == 200
            await gatherly.settle()
            settings = gatherly.settings

        db = Database(settings.database_url_for("notifications"))
        try:
            before = await _counts(db)
            assert all(before[t.name] > 0 for t in READ_MODELS), before
            async with db.writing() as session:
                for table in READ_MODELS:
                    await session.execute(delete(table))
            for group_name in GROUPS:
                await forget_processed(db, group_name)
            log = build_log(settings)
            await log.start()
            try:
                for group_name in GROUPS:
                    topics = sorted(ALL["notifications"].consumers.specs[group_name].topics)
                    await log.reset_group(group_name, topics, "earliest")
            finally:
                await log.close()

            async with running_gatherly(tmp_path, database_url=database_url, **FAST) as gatherly:
                await gatherly.settle()
            assert await _counts(db) == before
        finally:
            await db.dispose()


@pytest.fixture(params=DB_BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path, SERVICE.migrations) as database:
        yield database


async def _keep_group(db: Database, visibility: str) -> int:
    """group.created/updated's handling of the group's visibility; returns the rows it wrote."""
    async with NotificationsUnitOfWork(db) as uow:
        before = await rows_written(uow.session, ["groups"])
        await uow.members.keep_group("g-runners", visibility)
        return await rows_written(uow.session, ["groups"]) - before


async def _visibility(db: Database) -> tuple[str | None, datetime | None] | None:
    async with db.read_session() as session:
        row = (await session.execute(select(groups.c.visibility, groups.c.deleted_at))).first()
        return None if row is None else (row[0], row[1])


async def test_a_group_edit_that_keeps_its_visibility_writes_no_row_and_one_that_changes_it_does(db: Database) -> None:
    assert await _keep_group(db, "public") == 1  # the first news of the group
    assert await _visibility(db) == ("public", None)
    assert await _keep_group(db, "public") == 0  # an edit of its name or description: nothing of ours changed
    assert await _visibility(db) == ("public", None)
    assert await _keep_group(db, "private") == 1
    assert await _visibility(db) == ("private", None)
    gone = datetime(2026, 1, 1, tzinfo=UTC)
    async with NotificationsUnitOfWork(db) as uow:
        await uow.members.forget_group("g-runners", gone)
    assert await _keep_group(db, "public") == 0  # a late update never brings a deleted group back
    state = await _visibility(db)
    assert state is not None and state[0] == "private" and state[1] is not None
