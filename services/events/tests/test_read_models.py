"""The events service's copies of the groups service's data — groups (name, visibility) and memberships with
their roles — are built from group and membership events alone, and replaying those topics rebuilds them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from gatherly.app.compose import build_log
from gatherly.app.services import ALL
from gatherly.app.testing import FAST_SETTINGS, running_gatherly, sign_up
from gatherly.contracts.groups import GroupUpdated, MembershipJoined
from gatherly.contracts.users import GeoPoint, UserDeleted, UserProfileUpdated
from gatherly.events import SERVICE
from gatherly.events.store import EventsUnitOfWork
from gatherly.events.tables import group_members, group_summaries, group_topics, profiles
from gatherly.kernel.db import Database
from gatherly.kernel.delivery import forget_processed
from gatherly.kernel.messages import Envelope
from gatherly.kernel.testing import DB_BACKENDS, migrated_database, rows_written, scratch_databases

READ_MODELS = ("events.groups", "events.members")


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_replaying_the_group_topics_rebuilds_the_read_models(tmp_path: Path, database_backend: str) -> None:
    async with scratch_databases(database_backend, tmp_path, list(ALL)) as database_url:
        async with running_gatherly(tmp_path, database_url=database_url, **FAST_SETTINGS) as gatherly:
            olga = await sign_up(gatherly, display_name="Olga")
            ann = await sign_up(gatherly, display_name="Ann")
            created = await gatherly.client.post(
                "/api/groups", json={"name": "Secret Runners", "visibility": "private"}, headers=olga.auth
            )
            group_id = created.json()["id"]
            joined = await gatherly.client.post(f"/api/groups/{group_id}/join", json={}, headers=ann.auth)
            assert joined.status_code == 200
            role = await gatherly.client.put(
                f"/api/groups/{group_id}/members/{ann.user_id}/role",
                json={"role": "event_organizer"},
                headers=olga.auth,
            )
            assert role.status_code == 200
            await gatherly.settle()
            settings = gatherly.settings

        # The read models are lost (a new replica, a bug fixed in a handler): forget them and rewind.
        db = Database(settings.database_url_for("events"))
        try:
            async with db.writing() as session:
                await session.execute(delete(group_members))
                await session.execute(delete(group_summaries))
            for group in READ_MODELS:
                await forget_processed(db, group)
        finally:
            await db.dispose()
        log = build_log(settings)
        await log.start()
        try:
            for group in READ_MODELS:
                await log.reset_group(group, sorted(ALL["events"].consumers.specs[group].topics), "earliest")
        finally:
            await log.close()

        async with running_gatherly(tmp_path, database_url=database_url, **FAST_SETTINGS) as gatherly:
            await gatherly.settle()
            # Ann's role came back: she schedules; Olga, a member, sees the private group's event.
            body = {
                "group_id": group_id,
                "title": "Night run",
                "starts_at": "2099-01-01T19:00:00+01:00",
                "ends_at": "2099-01-01T21:00:00+01:00",
                "timezone": "Europe/Berlin",
                "online_url": "https://meet.example.org/night",
            }
            scheduled = await gatherly.client.post("/api/events", json=body, headers=ann.auth)
            assert scheduled.status_code == 201, scheduled.text
            assert scheduled.json()["group"] == {"id": group_id, "name": "Secret Runners"}
            event_id = scheduled.json()["id"]
            assert (await gatherly.client.get(f"/api/events/{event_id}", headers=olga.auth)).status_code == 200
            assert (await gatherly.client.get(f"/api/events/{event_id}")).status_code == 404
            events_db = gatherly.process.host("events").context.db
            async with events_db.read_session() as session:
                members = await session.scalar(select(func.count()).select_from(group_members))
            assert members == 2


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_a_deleted_group_stays_deleted_whatever_arrives_late(tmp_path: Path, database_backend: str) -> None:
    async with running_gatherly(tmp_path, database_backend=database_backend, **FAST_SETTINGS) as gatherly:
        olga = await sign_up(gatherly, display_name="Olga")
        created = await gatherly.client.post("/api/groups", json={"name": "Gone Runners"}, headers=olga.auth)
        group = created.json()
        assert (await gatherly.client.delete(f"/api/groups/{group['id']}", headers=olga.auth)).status_code == 202
        await gatherly.settle()
        # A late update and a late membership (other topics, replays) must not bring the group back.
        now = datetime.now(UTC)
        late = [
            GroupUpdated(
                group_id=group["id"],
                slug=group["slug"],
                name="Back from the dead",
                visibility="public",
                join_policy="open",
                updated_by=olga.user_id,
                updated_at=now,
            ),
            MembershipJoined(group_id=group["id"], user_id=olga.user_id, role="organizer", via="open", joined_at=now),
        ]
        await gatherly.process.platform.log.publish([Envelope.wrap(e, now).to_message() for e in late])
        await gatherly.settle()
        body = {
            "group_id": group["id"],
            "title": "Ghost run",
            "starts_at": "2099-01-01T19:00:00+01:00",
            "ends_at": "2099-01-01T21:00:00+01:00",
            "timezone": "Europe/Berlin",
            "online_url": "https://meet.example.org/ghost",
        }
        assert (await gatherly.client.post("/api/events", json=body, headers=olga.auth)).status_code == 404


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_attendee_names_follow_profiles_and_a_deleted_account_stays_nameless(
    tmp_path: Path, database_backend: str
) -> None:
    async with running_gatherly(tmp_path, database_backend=database_backend, **FAST_SETTINGS) as gatherly:
        olga = await sign_up(gatherly, display_name="Olga")
        group_id = (await gatherly.client.post("/api/groups", json={"name": "Named"}, headers=olga.auth)).json()["id"]
        # A second member: when Olga's account goes, the group (and its event) stays with Ann as its organizer.
        ann = await sign_up(gatherly, display_name="Ann")
        joined = await gatherly.client.post(f"/api/groups/{group_id}/join", json={}, headers=ann.auth)
        assert joined.status_code == 200, joined.text
        await gatherly.settle()
        body = {
            "group_id": group_id,
            "title": "Named run",
            "starts_at": "2099-01-01T19:00:00+01:00",
            "ends_at": "2099-01-01T21:00:00+01:00",
            "timezone": "Europe/Berlin",
            "online_url": "https://meet.example.org/named",
        }
        event_id = (await gatherly.client.post("/api/events", json=body, headers=olga.auth)).json()["id"]
        rsvp = await gatherly.client.put(f"/api/events/{event_id}/rsvp", json={"response": "yes"}, headers=olga.auth)
        assert rsvp.status_code == 200

        async def names() -> list[str | None]:
            await gatherly.settle()
            listed = await gatherly.client.get(f"/api/events/{event_id}/attendees")
            return [a["display_name"] for a in listed.json()["items"]]

        assert await names() == ["Olga"]
        renamed = await gatherly.client.patch("/api/users/me", json={"display_name": "Olga K."}, headers=olga.auth)
        assert renamed.status_code == 200
        assert await names() == ["Olga K."]
        now = datetime.now(UTC)
        stale = UserProfileUpdated(
            user_id=olga.user_id, email=olga.email, display_name="Old Olga", updated_at=now - timedelta(days=1)
        )
        deleted = UserDeleted(user_id=olga.user_id, deleted_at=now)
        late = UserProfileUpdated(user_id=olga.user_id, email=olga.email, display_name="Ghost", updated_at=now)
        for message in (stale, deleted, late):
            await gatherly.process.platform.log.publish([Envelope.wrap(message, now).to_message()])
            await gatherly.settle()
            if message is stale:
                assert await names() == ["Olga K."]
        # The deletion withdrew her RSVP (test_account_deletion.py); the late update named nobody again.
        assert await names() == []
        async with gatherly.process.host("events").context.db.read_session() as session:
            row = (await session.execute(select(profiles).where(profiles.c.user_id == olga.user_id))).mappings().one()
        assert (row["display_name"], row["deleted_at"] is not None) == (None, True)


@pytest.fixture(params=DB_BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path, SERVICE.migrations) as database:
        yield database


def _edit(**changes: Any) -> GroupUpdated:
    fields: dict[str, Any] = {
        "group_id": "g-runners",
        "slug": "runners",
        "name": "Runners",
        "description": "We run.",
        "topics": ("Running", "Outdoors"),
        "city": "Berlin",
        "location": GeoPoint(lat=52.52, lng=13.405),
        "visibility": "public",
        "join_policy": "open",
        "updated_by": "u-olga",
        "updated_at": datetime(2026, 12, 2, tzinfo=UTC),
    }
    return GroupUpdated(**{**fields, **changes})


SUMMARIES = ("group_summaries", "group_topics")


async def _apply(db: Database, edit: GroupUpdated) -> int:
    """group.updated applied to the group summaries; returns the rows it wrote."""
    async with EventsUnitOfWork(db) as uow:
        before = await rows_written(uow.session, SUMMARIES)
        await uow.groups.apply(edit)
        return await rows_written(uow.session, SUMMARIES) - before


async def _kept(db: Database) -> tuple[Any, ...]:
    async with db.read_session() as session:
        summary = (await session.execute(select(group_summaries))).one()
        topics = (await session.scalars(select(group_topics.c.topic).order_by(group_topics.c.topic))).all()
        return (*summary, tuple(topics))


async def test_a_group_edit_writes_only_what_the_summaries_keep_and_only_when_it_changed(db: Database) -> None:
    assert await _apply(db, _edit()) == 3  # the summary and its two topics
    first = await _kept(db)
    summary = ("g-runners", "runners", "Runners", "public", ["Running", "Outdoors"], "Berlin", 52.52, 13.405, None)
    assert first == (*summary, datetime(2026, 12, 2, tzinfo=UTC), ("outdoors", "running"))

    # The same message again (a retry) writes nothing; the description and the join policy are not kept here: only
    # the summary's time is written (fails when every edit rewrote the topics too).
    assert await _apply(db, _edit()) == 0
    later = datetime(2026, 12, 2, 1, tzinfo=UTC)
    assert await _apply(db, _edit(description="We run far.", join_policy="approval", updated_at=later)) == 1
    assert await _kept(db) == (*summary, later, ("outdoors", "running"))

    night = {"name": "Night Runners", "updated_at": later}  # as the next edits (of the same time: applied) keep it
    assert await _apply(db, _edit(**night)) == 1  # the summary; its topics stay as they were
    assert (await _kept(db))[2] == "Night Runners"
    assert await _apply(db, _edit(**night, location=GeoPoint(lat=52.52, lng=13.4051))) == 1
    assert (await _kept(db))[7] == 13.4051

    assert await _apply(db, _edit(**night, location=GeoPoint(lat=52.52, lng=13.4051), topics=("ML",))) > 1
    assert (await _kept(db))[4:] == (["ML"], "Berlin", 52.52, 13.4051, None, later, ("ml",))

    async with EventsUnitOfWork(db) as uow:
        await uow.groups.mark_deleted("g-runners", "Night Runners", "runners", datetime(2026, 12, 3, tzinfo=UTC))
    assert (
        await _apply(db, _edit(name="Back from the dead", updated_at=datetime(2026, 12, 4, tzinfo=UTC))) == 0
    )  # a deleted group stays deleted
    assert (await _kept(db))[2] == "Night Runners"


async def test_a_group_update_older_than_the_summary_kept_changes_nothing(db: Database) -> None:
    """An older group.updated applied after a newer one (replayed late from the dead-letter topic) keeps the newer
    name and topics, even when the newer edit changed nothing the summaries keep."""
    monday, tuesday, wednesday = (datetime(2026, 12, day, tzinfo=UTC) for day in (1, 2, 3))
    assert await _apply(db, _edit(updated_at=monday)) == 3
    assert await _apply(db, _edit(name="Night Runners", topics=("ML",), updated_at=wednesday)) > 1
    newest = await _kept(db)
    assert await _apply(db, _edit(name="Old Name", topics=("Chess",), updated_at=tuesday)) == 0
    assert await _kept(db) == newest
    # A newer edit that changes nothing kept here still refuses an older one.
    thursday, friday = datetime(2026, 12, 4, tzinfo=UTC), datetime(2026, 12, 5, tzinfo=UTC)
    await _apply(db, _edit(name="Night Runners", topics=("ML",), description="New.", updated_at=friday))
    assert await _apply(db, _edit(name="Old Name", topics=("Chess",), updated_at=thursday)) == 0
    assert (await _kept(db))[2:5] == ("Night Runners", "public", ["ML"])


async def test_a_group_update_older_than_the_summary_is_refused_by_the_update_itself(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two appliers of one group (a rebalance's overlap, a dead letter replayed beside the live message) may both
    read the summary before either writes: the older one's UPDATE must still not overwrite the newer state."""
    from gatherly.events import store

    monday, tuesday, wednesday = (datetime(2026, 12, day, tzinfo=UTC) for day in (1, 2, 3))
    await _apply(db, _edit(updated_at=monday))
    async with EventsUnitOfWork(db) as uow:
        read_before_the_newer_edit = await store.GROUP_STATE.first(uow.session, {"group_id": "g-runners"})
    await _apply(db, _edit(name="Night Runners", topics=("ML",), updated_at=wednesday))
    newest = await _kept(db)

    class StaleRead:
        async def first(self, *_: object) -> object:
            return read_before_the_newer_edit

    monkeypatch.setattr(store, "GROUP_STATE", StaleRead())
    assert await _apply(db, _edit(name="Old Name", topics=("Chess",), updated_at=tuesday)) == 0
    assert await _kept(db) == newest
