"""The relay's fault paths: one leader per database with takeover, a row the log refuses, a log outage, and the
outbox cleanup of the Debezium mode. Each runs on every database backend."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ledger import LedgerUnitOfWork, deposit_event
from prometheus_client import REGISTRY
from sqlalchemy import select, text

from gatherly.contracts.base import IntegrationEvent
from gatherly.kernel.clock import FrozenClock
from gatherly.kernel.db import Database
from gatherly.kernel.log.base import MessageLog, OutgoingMessage, TopicConfig
from gatherly.kernel.messages import Envelope, causation_id_var
from gatherly.kernel.relay import (
    RELAY_LOCK_KEY,
    RELAYED_ROWS,
    Backoff,
    OutboxCleaner,
    OutboxRelay,
    OutboxStuck,
    PostgresAdvisoryLock,
    SqliteLease,
    _message,
    leadership_for,
)
from gatherly.kernel.uow import OUTBOX, OutboxSignal

from .test_delivery import eventually, outbox_size


class RecordingLog:
    """Passes publishes through to the real log and remembers the message ids this relay published; refuses
    messages whose key is in `refused_keys`, and everything while `down`."""

    def __init__(self, inner: MessageLog) -> None:
        self.inner = inner
        self.published: list[str] = []
        self.refused_keys: set[str] = set()
        self.down = False

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.down:
            raise ConnectionError("log unavailable")
        if any(m.key in self.refused_keys for m in messages):
            raise ValueError("record too large")
        await self.inner.publish(messages)
        self.published.extend(dict(m.headers)["id"] for m in messages)


class IdRecordingUnitOfWork(LedgerUnitOfWork):
    """Remembers the ids of the messages it publishes: a running relay may publish and delete an outbox row
    before the test could read it back."""

    published_ids: list[str]

    def publish(self, *events: IntegrationEvent) -> None:
        super().publish(*events)
        self.published_ids = [envelope.id for envelope in self._pending]


async def commit_deposits(db: Database, event: type, accounts: Sequence[str], signal: OutboxSignal) -> list[str]:
    """Commit a deposit per account, one transaction each; returns their message ids in commit order."""
    ids = []
    for n, account in enumerate(accounts):
        async with IdRecordingUnitOfWork(db, signal=signal) as uow:
            uow.publish(event(account=account, amount=n + 1))
        ids.extend(uow.published_ids)
    return ids


def metric(name: str, service: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": service}) or 0.0


async def test_only_one_leader_holds_a_database_until_it_lets_go(ledger_db: Database) -> None:
    first, second = leadership_for(ledger_db), leadership_for(ledger_db)
    assert await first.hold()
    assert not await second.hold()
    assert await first.hold()  # keeping it is fine
    await first.release()
    if isinstance(second, SqliteLease):
        second._renew_at = float("-inf")  # do not wait for its next scheduled try
    if isinstance(second, PostgresAdvisoryLock):
        second._check_at = float("-inf")
    assert await second.hold()
    await second.release()


async def test_two_relays_on_one_database_publish_each_row_once_through_the_leader_and_a_follower_takes_over(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])  # the log creates no topic by itself
    signal = OutboxSignal()
    logs = [RecordingLog(message_log), RecordingLog(message_log)]

    def leadership() -> SqliteLease | PostgresAdvisoryLock:
        if ledger_db.is_sqlite:
            # The leader renews every ttl / 3 and stops trusting its lease at 0.8 ttl: at 1 s a loaded machine
            # (load average 40) could stall it past that, and the follower would rightly publish some rows.
            return SqliteLease(ledger_db, ttl=3.0)
        return PostgresAdvisoryLock(ledger_db, check_every=0.2)

    relays = [
        OutboxRelay("ledger", ledger_db, log, signal, poll_interval=0.05, leadership=leadership())  # type: ignore[arg-type]
        for log in logs
    ]
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        ids = await commit_deposits(ledger_db, deposit, [f"acct-{n % 5}" for n in range(60)], signal)

        async def all_out() -> bool:
            return sorted(logs[0].published + logs[1].published) == sorted(ids)

        await eventually(all_out, timeout=30)
        leader = 0 if logs[0].published else 1
        follower = 1 - leader
        assert logs[follower].published == []  # every row went through the leader, once
        assert Counter(logs[leader].published) == Counter(ids)

        # The leader dies: no release, its lease (or its database session) is simply gone.
        relays[leader].leadership.release = _nothing  # type: ignore[method-assign]
        tasks[leader].cancel()
        if not ledger_db.is_sqlite:
            async with ledger_db.engine.connect() as connection:
                await connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND objid = :low AND database = (SELECT oid FROM pg_database"
                        " WHERE datname = current_database())"
                    ),
                    {"low": RELAY_LOCK_KEY & 0xFFFF_FFFF},
                )
        later = await commit_deposits(ledger_db, deposit, ["acct-late"] * 5, signal)

        async def taken_over() -> bool:
            return set(later) <= set(logs[follower].published)

        await eventually(taken_over, timeout=30)
    finally:
        for relay in relays:
            relay.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for relay in relays:
            if isinstance(relay.leadership, PostgresAdvisoryLock):
                await relay.leadership._drop()  # the dead leader's connection object, for a clean teardown


async def _nothing() -> None:
    return None


async def test_a_row_the_log_refuses_holds_back_only_its_aggregate_is_retried_counted_and_alerted(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])  # the log creates no topic by itself
    signal = OutboxSignal()
    log = RecordingLog(message_log)
    log.refused_keys = {"bad"}
    relay = OutboxRelay(
        "ledger-refused",
        ledger_db,
        log,
        signal,
        backoff=Backoff(initial=0.0),
        alert_after=0.0,  # type: ignore[arg-type]
    )
    failures_before = metric("gatherly_outbox_publish_failures_total", "ledger-refused")
    ids = await commit_deposits(ledger_db, deposit, ["a", "bad", "b", "bad", "c"], signal)

    while await relay.relay_once():
        pass
    await relay.delete_published()
    # Unrelated aggregates went out; the refused row and the row behind it (same aggregate) wait, in the outbox.
    assert sorted(log.published) == sorted([ids[0], ids[2], ids[4]])
    async with ledger_db.read_session() as session:
        assert sorted(await session.scalars(select(OUTBOX.c.id))) == sorted([ids[1], ids[3]])
    assert metric("gatherly_outbox_publish_failures_total", "ledger-refused") > failures_before
    assert metric("gatherly_outbox_held_rows", "ledger-refused") == 2
    with pytest.raises(OutboxStuck, match="/bad"):
        await relay.check()

    # Still refused: retried (counted again), still held. Then the log accepts it: both go, in their order.
    counted = metric("gatherly_outbox_publish_failures_total", "ledger-refused")
    await relay.relay_once()
    assert metric("gatherly_outbox_publish_failures_total", "ledger-refused") == counted + 1
    log.refused_keys.clear()
    await relay.relay_once()
    await relay.delete_published()
    assert log.published[-2:] == [ids[1], ids[3]]
    assert await outbox_size(ledger_db) == 0
    await relay.check()  # healthy again


async def test_a_log_outage_holds_nothing_and_the_relay_raises_for_its_supervisor(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])  # the log creates no topic by itself
    signal = OutboxSignal()
    log = RecordingLog(message_log)
    relay = OutboxRelay("ledger", ledger_db, log, signal, poll_interval=0.01)  # type: ignore[arg-type]
    ids = await commit_deposits(ledger_db, deposit, ["a", "b", "c"], signal)
    log.down = True
    with pytest.raises(ConnectionError):
        await relay.run()
    assert relay._held == {}
    assert await outbox_size(ledger_db) == 3
    log.down = False
    while await relay.relay_once():
        pass
    assert sorted(log.published) == sorted(ids)


async def test_a_row_becomes_the_message_its_envelope_makes(ledger_db: Database) -> None:
    """The relay builds each message straight from its outbox row, the payload's JSON text as the value: it must be
    what the row's `Envelope` makes, but for the JSON's spacing and escapes."""
    deposit = deposit_event()
    async with LedgerUnitOfWork(ledger_db) as uow:
        uow.publish(deposit(account="ann", amount=1))
    token = causation_id_var.set("cause-1")
    try:
        async with LedgerUnitOfWork(ledger_db) as uow:
            uow.publish(deposit(account='bøb \u2028 "x"', amount=2))
    finally:
        causation_id_var.reset(token)
    async with ledger_db.read_connection() as connection:
        rows = (await connection.execute(RELAYED_ROWS.order_by(OUTBOX.c.seq))).all()
        stored = (await connection.execute(select(OUTBOX).order_by(OUTBOX.c.seq))).all()
    assert [row.causation_id for row in rows] == [None, "cause-1"]
    for row, parsed in zip(rows, stored, strict=True):
        for trace in ((row.traceparent, row.tracestate), ("00-" + "1" * 32 + "-" + "2" * 16 + "-01", "k=v")):
            envelope = Envelope(
                id=parsed.id,
                type=parsed.type,
                schema_version=parsed.schema_version,
                aggregate_type=parsed.aggregatetype,
                aggregate_id=parsed.aggregateid,
                occurred_at=parsed.occurred_at,
                payload=parsed.payload,
                correlation_id=parsed.correlation_id,
                causation_id=parsed.causation_id,
                traceparent=trace[0],
                tracestate=trace[1],
            )
            message, expected = _message(row, trace), envelope.to_message()
            assert json.loads(message.value) == json.loads(expected.value) == parsed.payload
            assert replace(message, value=expected.value) == expected
            assert list(message.headers) == list(expected.headers)  # the same order on the wire
        assert _message(row) == _message(row, (row.traceparent, row.tracestate))


async def test_the_debezium_mode_cleanup_deletes_only_rows_old_enough_in_batches(ledger_db: Database) -> None:
    deposit = deposit_event()
    now = datetime.now(UTC)
    for age_minutes in (30, 20, 15, 12, 11, 1):
        async with LedgerUnitOfWork(ledger_db, clock=FrozenClock(now - timedelta(minutes=age_minutes))) as uow:
            uow.publish(deposit(account="ann", amount=age_minutes))
    cleaner = OutboxCleaner("ledger", ledger_db, keep=timedelta(minutes=10), batch_size=2)
    assert await cleaner.clean_once(now) == 5
    async with ledger_db.read_session() as session:
        rows = (await session.execute(select(OUTBOX.c.payload))).all()
    assert [row.payload["amount"] for row in rows] == [1]
    assert await cleaner.clean_once(now) == 0


async def test_the_leader_reports_backlog_and_the_oldest_rows_age(ledger_db: Database, message_log: MessageLog) -> None:
    deposit = deposit_event()
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])
    signal = OutboxSignal()
    log = RecordingLog(message_log)
    log.down = True
    relay = OutboxRelay("ledger-gauges", ledger_db, log, signal)  # type: ignore[arg-type]
    old = datetime.now(UTC) - timedelta(minutes=5)
    async with LedgerUnitOfWork(ledger_db, clock=FrozenClock(old), signal=signal) as uow:
        uow.publish(deposit(account="ann", amount=1), deposit(account="bob", amount=2))
    await relay._update_gauges()
    assert metric("gatherly_outbox_backlog", "ledger-gauges") == 2
    assert 299 <= metric("gatherly_outbox_oldest_age_seconds", "ledger-gauges") < 400


async def test_a_lease_whose_holder_process_is_gone_is_taken_at_once(tmp_path: Path) -> None:
    # The lease is SQLite's (PostgreSQL frees an advisory lock when its session dies): a restarted `gatherly up`
    # after a SIGKILL must not wait out the dead process's lease before publishing.
    from gatherly.kernel.relay import RELAY_LEASE

    db = Database(f"sqlite:///{tmp_path / 'relay.db'}")
    try:
        gone = await asyncio.create_subprocess_exec("true")  # a process that has ended and been reaped
        await gone.wait()
        first = SqliteLease(db, ttl=60.0)
        assert await first.hold()
        async with db.writing() as session:  # as a SIGKILLed holder leaves it: valid for a minute more
            await session.execute(RELAY_LEASE.update().values(holder=f"{gone.pid}-killed"))
        assert await SqliteLease(db, ttl=60.0).hold()
        # A live holder keeps its lease.
        assert not await SqliteLease(db, ttl=60.0).hold()
    finally:
        await db.dispose()
