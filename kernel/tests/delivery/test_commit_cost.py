"""What a single-event transaction costs (issue #7): the relay lingers while rows stream in, writers share one kept
connection on inline SQLite, and the outbox row and inbox claim go straight to sqlite3 there, binding exactly what
SQLAlchemy would."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ledger import LedgerUnitOfWork, create_schema, deposit_event
from sqlalchemy import event, select, text
from sqlalchemy import exc as sa_exc

from gatherly.kernel.db import Database
from gatherly.kernel.delivery import claim_unprocessed
from gatherly.kernel.log.base import MessageLog, OutgoingMessage, TopicConfig
from gatherly.kernel.relay import READ_AFTER_CURSOR_INLINE, OutboxRelay
from gatherly.kernel.uow import INBOX, INSERT_OUTBOX, OUTBOX, OutboxSignal

from .test_delivery import eventually, outbox_size
from .test_relay import RecordingLog, commit_deposits


class BatchCountingLog(RecordingLog):
    """Remembers the size of each publish call."""

    def __init__(self, inner: MessageLog) -> None:
        super().__init__(inner)
        self.batches: list[int] = []

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        await super().publish(messages)
        self.batches.append(len(messages))


async def test_a_streaming_relay_carries_the_rows_committed_while_it_lingers_in_one_pass(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])
    signal = OutboxSignal()
    log = BatchCountingLog(message_log)
    linger = 1.0
    relay = OutboxRelay("ledger", ledger_db, log, signal, linger=linger)  # type: ignore[arg-type]
    task = asyncio.create_task(relay.run())
    try:
        # Each commit wakes the relay; without lingering every one is a pass (a read and a publish) of its own.
        started = time.monotonic()
        ids = await commit_deposits(ledger_db, deposit, [f"acct-{n % 3}" for n in range(30)], signal)
        committing = time.monotonic() - started

        async def all_out() -> bool:
            return sorted(log.published) == sorted(ids)

        await eventually(all_out, timeout=30)
    finally:
        relay.stop()
        await task
    assert log.published == ids  # commit order, hence each account's order
    assert sum(log.batches) == 30
    # At most a pass when the first commit lands, then one per `linger` while commits kept coming (however slow the
    # machine made them), and one for what came after the last. Without lingering: a pass per commit.
    assert len(log.batches) <= 2 + committing / linger, (log.batches, committing)
    assert len(log.batches) < 30, log.batches


async def test_a_commit_after_a_quiet_spell_is_relayed_without_waiting_for_the_linger(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])
    signal = OutboxSignal()
    log = BatchCountingLog(message_log)
    # A linger far longer than the wait below: only a relay that lingers while it is idle would miss it.
    relay = OutboxRelay("ledger", ledger_db, log, signal, linger=120)  # type: ignore[arg-type]
    task = asyncio.create_task(relay.run())
    try:
        ids = await commit_deposits(ledger_db, deposit, ["ann"], signal)

        async def out() -> bool:
            return log.published == ids

        await eventually(out, timeout=30)
        # Told to stop while it lingers after that pass, it stops at once, not when the 120 s linger is over.
        asked = time.monotonic()
        relay.stop()
        await asyncio.wait_for(task, timeout=30)
        assert time.monotonic() - asked < 30
    finally:
        relay.stop()
        await task


@pytest.fixture
async def inline_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert db.inline
    await create_schema(db)
    yield db
    await db.dispose()


def raw_outbox(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        columns = [c.key for c in OUTBOX.columns if c.key not in ("seq", "id")]
        return connection.execute(f"SELECT {', '.join(columns)} FROM outbox ORDER BY seq").fetchall()


async def test_the_outbox_row_written_straight_to_sqlite_is_the_row_sqlalchemy_writes(
    inline_db: Database, tmp_path: Path
) -> None:
    deposit = deposit_event()
    # Hostile values go through the columns' own processing in both paths: NUL in the JSON payload and in the key
    # column, a huge number.
    event = deposit(account="a\x00n", amount=2**62)
    async with LedgerUnitOfWork(inline_db) as uow:
        uow.publish(event)  # straight to sqlite3 (the inline driver)
        envelope = uow._pending[0]
    async with inline_db.engine.begin() as connection:  # through SQLAlchemy's statement path
        await connection.execute(
            INSERT_OUTBOX,
            [
                {
                    "id": envelope.id + "-sqlalchemy",
                    "aggregatetype": envelope.aggregate_type,
                    "aggregateid": envelope.aggregate_id,
                    "type": envelope.type,
                    "schema_version": envelope.schema_version,
                    "payload": envelope.payload,
                    "occurred_at": envelope.occurred_at,
                    "correlation_id": envelope.correlation_id,
                    "causation_id": envelope.causation_id,
                    "traceparent": envelope.traceparent,
                    "tracestate": envelope.tracestate,
                }
            ],
        )
    direct, through_sqlalchemy = raw_outbox(tmp_path / "ledger.db")
    assert direct == through_sqlalchemy
    async with inline_db.read_connection() as connection:
        first = (await connection.execute(select(OUTBOX).order_by(OUTBOX.c.seq))).first()
    assert first is not None
    assert first.payload == {"account": "a\x00n", "amount": 2**62}
    assert first.aggregateid == "a\x00n"
    assert first.occurred_at == envelope.occurred_at and first.occurred_at.tzinfo == UTC


async def test_an_outbox_row_sqlite_refuses_rolls_back_the_state_it_came_with(inline_db: Database) -> None:
    deposit = deposit_event()
    with pytest.raises(UnicodeEncodeError):
        async with LedgerUnitOfWork(inline_db) as uow:
            await uow.add("ann", 5)
            uow.publish(deposit(account="\ud800", amount=1))  # a lone surrogate cannot be encoded for a text column
    assert await outbox_size(inline_db) == 0
    async with inline_db.read_connection() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM accounts"))).scalar() == 0
    async with LedgerUnitOfWork(inline_db) as uow:  # the kept writer connection is usable afterwards
        await uow.add("ann", 5)
        uow.publish(deposit(account="ann", amount=5))
    assert await outbox_size(inline_db) == 1


async def test_the_inbox_claim_straight_to_sqlite_returns_only_messages_not_applied_before(
    inline_db: Database,
) -> None:
    async with LedgerUnitOfWork(inline_db) as uow:
        assert await claim_unprocessed(uow, "group", ["m1", "m2", "m1"]) == {"m1", "m2"}
    async with LedgerUnitOfWork(inline_db) as uow:
        assert await claim_unprocessed(uow, "group", ["m2", "m3"]) == {"m3"}
        assert await claim_unprocessed(uow, "other-group", ["m2"]) == {"m2"}
    with pytest.raises(RuntimeError):
        async with LedgerUnitOfWork(inline_db) as uow:
            assert await claim_unprocessed(uow, "group", ["m4"]) == {"m4"}
            raise RuntimeError("handler failed")  # the claim rolls back with the handler's work
    async with LedgerUnitOfWork(inline_db) as uow:
        assert await claim_unprocessed(uow, "group", ["m4"]) == {"m4"}
    async with inline_db.read_connection() as connection:
        rows = (await connection.execute(text("SELECT consumer, message_id, processed_at FROM inbox"))).all()
    assert sorted((c, m) for c, m, _ in rows) == [
        ("group", "m1"),
        ("group", "m2"),
        ("group", "m3"),
        ("group", "m4"),
        ("other-group", "m2"),
    ]
    # processed_at stored as SQLAlchemy's DateTime stores it (read back through the column's type)
    async with inline_db.read_connection() as connection:
        stamps = (await connection.execute(select(INBOX.c.processed_at))).scalars().all()
    assert all(isinstance(s, datetime) and s.tzinfo == UTC for s in stamps)


async def test_the_inbox_claim_returns_only_messages_not_applied_before_on_every_backend(ledger_db: Database) -> None:
    statements: list[str] = []
    event.listen(
        ledger_db.engine.sync_engine,
        "before_cursor_execute",
        lambda connection, cursor, statement, *_: statements.append(statement),
    )
    async with LedgerUnitOfWork(ledger_db) as uow:
        assert await claim_unprocessed(uow, "group", ["m1", "m2", "m1"]) == {"m1", "m2"}
    async with LedgerUnitOfWork(ledger_db) as uow:
        assert await claim_unprocessed(uow, "group", ["m2", "m3"]) == {"m3"}
        assert await claim_unprocessed(uow, "other-group", ["m2"]) == {"m2"}
        assert await claim_unprocessed(uow, "group", ["m3", "m1", "m3"]) == set()  # all applied before
    with pytest.raises(RuntimeError):
        async with LedgerUnitOfWork(ledger_db) as uow:
            assert await claim_unprocessed(uow, "group", ["m4", "m5", "m6"]) == {"m4", "m5", "m6"}
            raise RuntimeError("handler failed")  # the claim rolls back with the handler's work
    async with LedgerUnitOfWork(ledger_db) as uow:
        assert await claim_unprocessed(uow, "group", ["m4"]) == {"m4"}
    async with ledger_db.read_connection() as connection:
        rows = (await connection.execute(select(INBOX.c.consumer, INBOX.c.message_id, INBOX.c.processed_at))).all()
    assert sorted((c, m) for c, m, _ in rows) == [
        ("group", "m1"),
        ("group", "m2"),
        ("group", "m3"),
        ("group", "m4"),
        ("other-group", "m2"),
    ]
    assert all(isinstance(s, datetime) and s.tzinfo == UTC for _, _, s in rows)
    if not ledger_db.is_sqlite:
        # One statement text for claims of 1, 2 and 3 messages: PostgreSQL prepares it once per connection.
        claims = [s for s in statements if "INSERT INTO inbox" in s]
        assert len(claims) == 6 and len(set(claims)) == 1


async def test_write_transactions_share_one_kept_connection_and_a_broken_one_is_replaced(inline_db: Database) -> None:
    checkouts = []
    event.listen(inline_db.engine.sync_engine, "engine_connect", lambda connection: checkouts.append(connection))
    seen = []
    for _ in range(3):
        async with inline_db.writing() as connection:
            seen.append(connection.sync_connection.connection.dbapi_connection)  # type: ignore[union-attr]
            # Kept at 0 on the writer: BEGIN IMMEDIATE needs no PRAGMAs around it (the lock is waited for in asyncio).
            assert (await connection.execute(text("PRAGMA busy_timeout"))).scalar() == 0
    assert seen[0] is seen[1] is seen[2]
    assert len(checkouts) == 1  # one connection taken for all three transactions, not one each
    with pytest.raises(RuntimeError):
        async with inline_db.writing() as connection:
            await connection.execute(text("INSERT INTO accounts VALUES ('ann', 1, 1)"))
            await connection.invalidate()  # the connection broke mid-transaction
            raise RuntimeError("broken")
    async with inline_db.writing() as connection:
        replacement = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        await connection.execute(text("INSERT INTO accounts VALUES ('bob', 1, 1)"))
    assert replacement is not seen[0]
    async with inline_db.read_connection() as connection:
        assert (await connection.execute(text("SELECT account FROM accounts"))).scalars().all() == ["bob"]


async def test_a_writer_cancelled_mid_transaction_leaves_nothing_and_the_next_writer_goes_on(
    inline_db: Database,
) -> None:
    entered = asyncio.Event()

    async def slow_writer() -> None:
        async with inline_db.writing() as connection:
            await connection.execute(text("INSERT INTO accounts VALUES ('ann', 1, 1)"))
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(slow_writer())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with inline_db.writing() as connection:
        await connection.execute(text("INSERT INTO accounts VALUES ('bob', 1, 1)"))
    async with inline_db.read_connection() as connection:
        assert (await connection.execute(text("SELECT account FROM accounts"))).scalars().all() == ["bob"]


async def test_a_transaction_that_only_publishes_runs_no_statement_through_sqlalchemy(inline_db: Database) -> None:
    # BEGIN IMMEDIATE, the outbox row and COMMIT go straight to sqlite3: through SQLAlchemy each cost several times
    # what SQLite takes. The kept connection must still be committed, not left in a transaction.
    statements: list[str] = []
    engine = inline_db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    event.listen(engine, "begin", lambda connection: statements.append("BEGIN (SQLAlchemy)"))
    event.listen(engine, "commit", lambda connection: statements.append("COMMIT (SQLAlchemy)"))
    deposit = deposit_event()
    for n in range(3):
        async with LedgerUnitOfWork(inline_db) as uow:
            uow.publish(deposit(account="ann", amount=n))
    assert statements == []
    assert await outbox_size(inline_db) == 3


async def test_sqlalchemy_statements_and_savepoints_join_the_transaction_begun_on_sqlite3(inline_db: Database) -> None:
    deposit = deposit_event()
    async with LedgerUnitOfWork(inline_db) as uow:
        uow.publish(deposit(account="ann", amount=1))  # straight to sqlite3
        await uow.add("ann", 1)  # through SQLAlchemy, which begins its Transaction over the one already open
        with pytest.raises(RuntimeError):
            async with uow.session.begin_nested():
                await uow.session.execute(text("INSERT INTO accounts VALUES ('bob', 1, 1)"))
                raise RuntimeError("rolled back to the savepoint")
    assert await outbox_size(inline_db) == 1
    async with inline_db.read_connection() as connection:
        assert (await connection.execute(text("SELECT account FROM accounts"))).scalars().all() == ["ann"]
    with pytest.raises(RuntimeError):
        async with LedgerUnitOfWork(inline_db) as uow:
            uow.publish(deposit(account="cid", amount=1))
            await uow.add("cid", 1)
            raise RuntimeError("handler failed")  # both the direct outbox row and SQLAlchemy's row roll back
    assert await outbox_size(inline_db) == 1
    async with inline_db.read_connection() as connection:
        assert (await connection.execute(text("SELECT account FROM accounts"))).scalars().all() == ["ann"]


async def test_the_kept_writers_statements_and_commit_skip_sqlalchemys_greenlet_bridge(
    inline_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Inside the kept writer's transaction nothing waits, so statements, savepoints aside, run on SQLAlchemy's
    # synchronous connection: the bridge (a greenlet per call and its switches) cost more than SQLite's insert.
    from sqlalchemy.ext.asyncio import engine as async_engine

    bridged: list[str] = []
    real_spawn = async_engine.greenlet_spawn

    async def counting_spawn(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        bridged.append(getattr(fn, "__name__", repr(fn)))
        return await real_spawn(fn, *args, **kwargs)

    async with inline_db.writing():
        pass  # the kept writer's connect goes through the bridge, once
    monkeypatch.setattr(async_engine, "greenlet_spawn", counting_spawn)
    async with inline_db.writing() as connection:
        await connection.execute(text("INSERT INTO accounts VALUES ('ann', 1, 1)"))
        assert (await connection.scalar(text("SELECT count(*) FROM accounts"))) == 1
        assert (await connection.scalars(text("SELECT account FROM accounts"))).all() == ["ann"]
    assert bridged == []
    with pytest.raises(RuntimeError):
        async with inline_db.writing() as connection:
            await connection.execute(text("INSERT INTO accounts VALUES ('bob', 1, 1)"))
            raise RuntimeError("rolled back, without the bridge too")
    assert bridged == []
    async with inline_db.read_connection() as connection:
        assert (await connection.execute(text("SELECT account FROM accounts"))).scalars().all() == ["ann"]
    # Outside a transaction (its BEGIN may wait for another process) the kept writer is SQLAlchemy's own again.
    writer = inline_db._writer
    assert writer is not None
    bridged.clear()  # (the read connection above was checked out through the bridge)
    assert (await writer.scalar(text("SELECT count(*) FROM accounts"))) == 1
    assert bridged == ["execute"]
    await writer.rollback()


@pytest.mark.parametrize("through_sqlalchemy", [False, True])
async def test_a_commit_sqlite_refuses_leaves_nothing_and_the_next_writer_gets_a_fresh_connection(
    inline_db: Database, through_sqlalchemy: bool
) -> None:
    # A deferred foreign key is checked at COMMIT: the COMMIT fails and SQLite keeps the transaction open.
    async with inline_db.writing() as connection:
        await connection.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        await connection.execute(
            text("CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
        )
    with pytest.raises((sqlite3.IntegrityError, sa_exc.IntegrityError)):
        async with inline_db.writing() as connection:
            dbapi = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
            if through_sqlalchemy:
                await connection.execute(text("INSERT INTO child VALUES (42)"))
            else:
                dbapi.execute("INSERT INTO child VALUES (42)")
    assert dbapi.in_transaction is False  # rolled back when the connection went back to the pool
    assert inline_db._writer is None  # not kept: the next writer takes another
    async with inline_db.writing() as connection:
        await connection.execute(text("INSERT INTO parent VALUES (1)"))
    async with inline_db.read_connection() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM child"))).scalar() == 0
        assert (await connection.execute(text("SELECT count(*) FROM parent"))).scalar() == 1


async def test_the_relays_read_straight_from_sqlite_returns_the_rows_sqlalchemy_returns(inline_db: Database) -> None:
    deposit = deposit_event()
    async with LedgerUnitOfWork(inline_db) as uow:
        uow.publish(deposit(account="a\x00n", amount=2**62), deposit(account="bob", amount=-1))
    async with LedgerUnitOfWork(inline_db) as uow:
        uow.publish(deposit(account="cid", amount=3))
    parameters = {"read_up_to": 1, "batch_size": 10}
    async with inline_db.read_connection() as connection:
        through_sqlalchemy = (await connection.execute(READ_AFTER_CURSOR_INLINE.statement, parameters)).all()
    async with inline_db.engine.connect() as connection:
        direct = READ_AFTER_CURSOR_INLINE.run(connection, parameters)
        # Its own read transaction, over once the rows are read: an open one would keep the WAL from being reset.
        assert not connection.sync_connection.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
    assert [tuple(row) for row in direct] == [tuple(row) for row in through_sqlalchemy]
    assert [row.seq for row in direct] == [2, 3]
    assert json.loads(direct[0].payload) == {"account": "bob", "amount": -1}  # the column's JSON text (RELAYED_ROWS)
    assert direct[0].occurred_at.tzinfo == UTC
    async with inline_db.engine.connect() as connection:
        assert READ_AFTER_CURSOR_INLINE.run(connection, {"read_up_to": 0, "batch_size": 1})[0].aggregateid == "a\x00n"


async def test_a_relay_pass_on_inline_sqlite_runs_no_statement_through_sqlalchemy(
    inline_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])
    signal = OutboxSignal()
    log = RecordingLog(message_log)
    relay = OutboxRelay("ledger", inline_db, log, signal, linger=0)  # type: ignore[arg-type]
    task = asyncio.create_task(relay.run())
    try:
        ids = await commit_deposits(inline_db, deposit, ["ann"], signal)

        async def published(expected: list[str]) -> bool:
            return log.published == expected

        await eventually(lambda: published(ids), timeout=30)
        statements: list[str] = []
        event.listen(inline_db.engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        more = await commit_deposits(inline_db, deposit, ["bob", "cid"], signal)
        await eventually(lambda: published(ids + more), timeout=30)
        # Nothing per pass: the lease renewal (once a few seconds) and the bulk delete of what was published (when
        # the relay falls idle or once a second: on a slower log, such as Kafka, it may fall between the two
        # commits) are the only statements that go through SQLAlchemy.
        periodic = ("relay_lease", "DELETE FROM outbox WHERE outbox.seq <=")
        assert [s for s in statements if not any(p in s for p in periodic)] == []
    finally:
        relay.stop()
        await task
    assert await outbox_size(inline_db) == 0  # deleted when it stopped
