"""`membership.joined` and `event.scheduled` travel on different topics, so nothing orders them: a member who joined
just before an event was scheduled must be told of it even when the notifications service handles the event first
(each consumer group reads at its own pace; on Kafka, in its own consumer)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from gatherly.contracts.events import EventScheduled
from gatherly.contracts.groups import MembershipJoined
from gatherly.kernel.db import Database
from gatherly.kernel.delivery import ConsumerSpec, ConsumerWorker
from gatherly.kernel.log.base import MessageLog, TopicConfig
from gatherly.kernel.log.embedded import EmbeddedLog
from gatherly.kernel.log.kafka import KafkaLog
from gatherly.kernel.messages import Envelope, causation_id_var
from gatherly.kernel.testing import DB_BACKENDS, LOG_BACKENDS, migrated_database
from gatherly.notifications import SERVICE
from gatherly.notifications.consumers import consumers
from gatherly.notifications.store import NotificationsUnitOfWork
from gatherly.notifications.tables import events, group_members, notifications

from .conftest import eventually

pytestmark = pytest.mark.timeout(600)  # the session's Kafka broker may start within a test

GROUP = "g-runners"
LEADER = "u-leader"
JOINER = "u-joiner"


def joined(at: datetime, user: str = JOINER) -> MembershipJoined:
    return MembershipJoined(group_id=GROUP, user_id=user, role="member", via="open", joined_at=at)


def scheduled(at: datetime, event_id: str = "e-night-run") -> EventScheduled:
    starts = at + timedelta(days=7)
    return EventScheduled(
        event_id=event_id,
        group_id=GROUP,
        group_name="Runners",
        title="Night run",
        starts_at=starts,
        ends_at=starts + timedelta(hours=2),
        timezone="Europe/Berlin",
        online=True,
        sequence=1,
        scheduled_by=LEADER,
        scheduled_at=at,
    )


@pytest.fixture(params=DB_BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path, SERVICE.migrations) as database:
        yield database


async def handle(db: Database, event: MembershipJoined | EventScheduled, message_id: str) -> None:
    """What the delivery runtime does with one message: its handler in a unit of work, the message as the cause."""
    handler = next(spec.handlers[event.TYPE] for spec in consumers.specs.values() if event.TYPE in spec.handlers)
    token = causation_id_var.set(message_id)
    try:
        async with NotificationsUnitOfWork(db) as uow:
            await handler(event, uow)
    finally:
        causation_id_var.reset(token)


async def told(db: Database, user: str = JOINER) -> list[tuple[str, str]]:
    async with db.read_session() as session:
        rows = await session.execute(
            select(notifications.c.kind, notifications.c.link).where(notifications.c.user_id == user)
        )
        return [(kind, link) for kind, link in rows.all()]


async def test_a_member_whose_joining_is_handled_after_the_event_is_told_once(db: Database) -> None:
    now = datetime.now(UTC)
    await handle(db, joined(now - timedelta(days=30), user=LEADER), "m-leader-joined")
    await handle(db, scheduled(now), "m-scheduled")  # handled first, though the member joined before it
    assert await told(db) == []
    await handle(db, joined(now - timedelta(seconds=1)), "m-joined")
    assert await told(db) == [("event_scheduled", "/events/e-night-run")]
    assert await told(db, LEADER) == []  # who scheduled it is not told, as when the event comes second

    # Redeliveries of either message tell nobody again: the notice keeps the scheduling's cause.
    await handle(db, scheduled(now), "m-scheduled")
    await handle(db, joined(now - timedelta(seconds=1)), "m-joined")
    assert len(await told(db)) == 1


async def test_in_the_usual_order_the_member_is_told_once(db: Database) -> None:
    now = datetime.now(UTC)
    await handle(db, joined(now - timedelta(seconds=1)), "m-joined")
    await handle(db, scheduled(now), "m-scheduled")
    await handle(db, joined(now - timedelta(seconds=1)), "m-joined")  # a redelivery after the event
    assert await told(db) == [("event_scheduled", "/events/e-night-run")]


async def test_someone_joining_after_the_event_was_scheduled_is_not_told_of_it(db: Database) -> None:
    now = datetime.now(UTC)
    await handle(db, scheduled(now - timedelta(hours=1)), "m-scheduled")
    await handle(db, joined(now), "m-joined")
    assert await told(db) == []
    async with db.read_session() as session:  # they are a member all the same
        assert await session.scalar(select(group_members.c.role).where(group_members.c.user_id == JOINER))


async def test_a_past_or_cancelled_event_is_not_told_to_a_late_joiner(db: Database) -> None:
    now = datetime.now(UTC)
    await handle(db, scheduled(now - timedelta(days=8), event_id="e-past"), "m-past")  # started a day ago
    await handle(db, scheduled(now, event_id="e-off"), "m-off")
    async with db.writing() as session:
        await session.execute(events.update().where(events.c.event_id == "e-off").values(status="cancelled"))
    await handle(db, joined(now - timedelta(days=9)), "m-joined")
    assert await told(db) == []


if "postgresql" in DB_BACKENDS:

    async def test_the_two_handlers_running_at_once_on_postgresql_do_not_both_miss(tmp_path: Path) -> None:
        # Read committed: each handler's transaction, running alone, would not see the other's uncommitted row (the
        # event, the membership) and the member would hear of nothing. The group's lock makes the second one wait.
        async with migrated_database("postgresql", tmp_path, SERVICE.migrations) as db:
            now = datetime.now(UTC)
            handler = next(s.handlers for s in consumers.specs.values() if EventScheduled.TYPE in s.handlers)
            token = causation_id_var.set("m-scheduled")
            try:
                async with NotificationsUnitOfWork(db) as first:
                    await handler[EventScheduled.TYPE](scheduled(now), first)
                    second = asyncio.create_task(handle(db, joined(now - timedelta(seconds=1)), "m-joined"))

                    async def second_waits_or_ended() -> bool:
                        if second.done():
                            return True
                        async with db.read_session() as session:
                            waiting = (
                                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                            )
                            return bool(await session.scalar(text(waiting)))

                    await eventually(second_waits_or_ended, what="the joining's handler waiting or done")
            finally:
                causation_id_var.reset(token)
            await second
            assert await told(db) == [("event_scheduled", "/events/e-night-run")]


@pytest.fixture
async def message_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageLog]:
    backend = request.param
    log: MessageLog
    if backend == "kafka":
        log = KafkaLog(request.getfixturevalue("kafka_bootstrap"), session_timeout=3.0)
    else:
        log = EmbeddedLog(tmp_path / "log.db")
    await log.start()
    try:
        yield log
    finally:
        await log.close()


def one_handler(event_type: type[MembershipJoined] | type[EventScheduled]) -> ConsumerSpec:
    """The service's handler of `event_type` in a consumer group of the test's own (the session's broker is
    shared by many tests)."""
    handlers = next(spec.handlers for spec in consumers.specs.values() if event_type.TYPE in spec.handlers)
    return ConsumerSpec(
        group=f"test.{uuid.uuid4().hex[:8]}",
        handlers={event_type.TYPE: handlers[event_type.TYPE]},
        topics={event_type.TOPIC},
    )


@pytest.mark.parametrize("message_log", LOG_BACKENDS, indirect=True)
async def test_through_the_log_the_event_consumer_running_ahead_leaves_nobody_out(
    db: Database, message_log: MessageLog
) -> None:
    # Both messages are published (the joining first), but the members' consumer is behind: it starts only once
    # the events' consumer has handled the event, as when its partition lags on Kafka.
    now = datetime.now(UTC)
    # Names of this test's own: on Kafka the topics are the session's, and other tests' records are read too.
    group, event_id, joiner = (f"{kind}-{uuid.uuid4().hex[:8]}" for kind in ("g", "e", "u"))
    joining = MembershipJoined(group_id=group, user_id=joiner, role="member", via="open", joined_at=now)
    event = scheduled(now + timedelta(milliseconds=5), event_id=event_id).model_copy(update={"group_id": group})
    await message_log.ensure_topics([TopicConfig(MembershipJoined.TOPIC), TopicConfig(EventScheduled.TOPIC)])
    await message_log.publish([Envelope.wrap(e, now).to_message() for e in (joining, event)])

    async def run_until(spec: ConsumerSpec, done: str) -> None:
        worker = ConsumerWorker(spec, message_log, lambda: NotificationsUnitOfWork(db))
        task = asyncio.create_task(worker.run())
        try:

            async def handled() -> bool:
                async with db.read_session() as session:
                    return bool(await session.scalar(text(done), {"group": group, "event": event_id}))

            await eventually(handled, timeout=120, what=done)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 60)

    await run_until(one_handler(EventScheduled), "SELECT count(*) FROM events WHERE event_id = :event")
    assert await told(db, joiner) == []
    await run_until(one_handler(MembershipJoined), "SELECT count(*) FROM group_members WHERE group_id = :group")
    assert await told(db, joiner) == [("event_scheduled", f"/events/{event_id}")]
