"""The service database: every backend (SQLite, and PostgreSQL when GATHERLY_TEST_DB_BACKENDS names it) and both
SQLite drivers give the same transactions; the inline SQLite driver never makes the event loop wait for another
connection's write lock."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ARRAY, Boolean, Column, Integer, MetaData, String, Table, Text, event, func, insert, select
from sqlalchemy import exc as sa_exc

from gatherly.kernel import inline_sqlite
from gatherly.kernel.db import BatchInsert, Database
from gatherly.kernel.log import EmbeddedLog, OutgoingMessage
from gatherly.kernel.log.base import TopicConfig
from gatherly.kernel.tables import Json, UtcDateTime
from gatherly.kernel.testing import DB_BACKENDS

metadata = MetaData()
notes = Table("notes", metadata, Column("id", Integer, primary_key=True), Column("text", String, nullable=False))


def rows_table(name: str) -> Table:
    """A table with a column of each kind a batch handler writes (and a default it leaves out)."""
    return Table(
        name,
        metadata,
        Column("n", Integer, primary_key=True),
        Column("key", String(64), nullable=False),
        Column("note", Text),
        Column("at", UtcDateTime(), nullable=False),
        Column("doc", Json, nullable=False),
        Column("extra", Json),  # None binds JSON's null, not SQL's NULL (SQLAlchemy's JSON default)
        Column("flag", Boolean, nullable=False),
        Column("kind", String(16), nullable=False, server_default="plain"),
    )


batched, executed_many = rows_table("batched"), rows_table("executed_many")


async def open_database(url: str) -> Database:
    database = Database(url)
    async with database.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    return database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await open_database(database_url)
    yield database
    await database.dispose()


async def count(db: Database) -> int:
    async with db.read_session() as session:
        return int(await session.scalar(select(func.count()).select_from(notes)) or 0)


async def test_a_write_commits_and_a_failed_one_leaves_nothing(db: Database) -> None:
    await a_write_commits_and_a_failed_one_leaves_nothing(db)


async def test_the_aiosqlite_driver_commits_and_rolls_back_the_same(tmp_path: Path) -> None:
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}")
    try:
        await a_write_commits_and_a_failed_one_leaves_nothing(db)
    finally:
        await db.dispose()


async def a_write_commits_and_a_failed_one_leaves_nothing(db: Database) -> None:
    async with db.writing() as session:
        await session.execute(insert(notes), [{"text": "kept"}, {"text": "kept too"}])
    with pytest.raises(RuntimeError):
        async with db.writing() as session:
            await session.execute(insert(notes), {"text": "lost"})
            raise RuntimeError("the rule said no")
    assert await count(db) == 2


async def test_concurrent_writers_of_one_process_queue_and_all_commit(db: Database) -> None:
    async def write(n: int) -> None:
        async with db.writing() as session:
            await session.execute(insert(notes), {"text": f"note {n}"})
            await asyncio.sleep(0)  # give the others a chance to interleave

    await asyncio.gather(*(write(n) for n in range(50)))
    assert await count(db) == 50


class Ticker:
    """Counts how often the event loop got to run it: a loop blocked inside SQLite would not."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0.01)


async def hold_write_lock(path: Path, seconds: float) -> sqlite3.Connection:
    """Another connection (as another process would) takes the write lock; the loop releases it later,
    which it can do only if it is not stuck waiting inside SQLite."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(seconds, other.execute, "COMMIT")
    return other


async def test_the_inline_driver_waits_for_another_writer_without_blocking_the_loop(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path / 'notes.db'}")
    other = await hold_write_lock(tmp_path / "notes.db", 0.3)
    ticker = Ticker()
    ticking = asyncio.create_task(ticker.run())
    started = time.monotonic()
    try:
        async with db.writing() as session:
            await session.execute(insert(notes), {"text": "after the other writer"})
        waited = time.monotonic() - started
    finally:
        ticking.cancel()
        other.close()
    assert waited >= 0.25
    assert ticker.ticks >= 10
    assert await count(db) == 1
    await db.dispose()


async def test_the_embedded_log_waits_for_another_writer_without_blocking_the_loop(tmp_path: Path) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t")])
        other = await hold_write_lock(tmp_path / "log.sqlite", 0.3)
        ticker = Ticker()
        ticking = asyncio.create_task(ticker.run())
        started = time.monotonic()
        try:
            await log.publish([OutgoingMessage("t", "k", b"after the other writer")])
            waited = time.monotonic() - started
        finally:
            ticking.cancel()
            other.close()
        assert waited >= 0.25
        assert ticker.ticks >= 10
        assert [r.value for r in await log.read("t")] == [b"after the other writer"]


if "postgresql" in DB_BACKENDS:  # SQLite pools do not pre-ping

    @pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
    async def test_on_postgresql_a_consumer_transaction_begins_once_while_a_request_transaction_still_pings(
        db: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import asyncpg

        sent: list[str] = []  # what reaches the driver: "BEGIN" for each transaction started, and fetchrow queries
        start, fetchrow = asyncpg.transaction.Transaction.start, asyncpg.connection.Connection.fetchrow

        async def counted_start(self: Any) -> None:
            sent.append("BEGIN")
            await start(self)

        async def counted_fetchrow(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            sent.append(query)
            return await fetchrow(self, query, *args, **kwargs)

        monkeypatch.setattr(asyncpg.transaction.Transaction, "start", counted_start)
        monkeypatch.setattr(asyncpg.connection.Connection, "fetchrow", counted_fetchrow)

        async def one_write(*, consumer: bool) -> list[str]:
            sent.clear()
            async with db.writing(consumer=consumer) as connection:
                await connection.execute(insert(notes), {"text": "x"})
            return list(sent)

        for consumer in (False, True):  # each pool's connection opened first: a pool pings only connections it reuses
            await one_write(consumer=consumer)
        assert await one_write(consumer=False) == ["BEGIN", ";", "BEGIN"]  # the ping's BEGIN; ";"; ROLLBACK, then ours
        assert await one_write(consumer=True) == ["BEGIN"]
        assert await count(db) == 4


async def test_a_failing_statement_does_not_put_its_values_in_the_error(db: Database) -> None:
    # Errors reach the log: the values a statement bound (emails, hashes, hostile text) must not ride along.
    with pytest.raises(Exception) as failure:
        async with db.writing() as session:
            await session.execute(insert(notes).values(id=1, text="secret-value-1"))
            await session.execute(insert(notes).values(id=1, text="secret-value-2"))
    assert "secret-value" not in str(failure.value)


async def test_transactions_on_inline_sqlite_give_other_tasks_a_turn_between_them(tmp_path: Path) -> None:
    # Nothing of inline SQLite waits: without a turn at the end of each transaction, a producer committing one
    # transaction after another kept the relay it woke from running until it was done.
    db = Database(f"sqlite:///{tmp_path / 'turns.db'}")
    assert db.inline
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    try:
        for _ in range(20):
            async with db.writing() as connection:
                await connection.execute(select(1))
            async with db.read_connection() as connection:
                await connection.execute(select(1))
        assert turns >= 40
    finally:
        other.cancel()
        await db.dispose()


async def test_a_direct_insert_is_compiled_once_per_database_it_runs_on(tmp_path: Path) -> None:
    """A module-level DirectInsert serves every service database of the process (the outbox row, the inbox claim):
    used on two databases in turn, it is compiled once for each, not on every switch."""
    first, second = (
        await open_database(f"sqlite:///{tmp_path}/a.sqlite"),
        await open_database(f"sqlite:///{tmp_path}/b.sqlite"),
    )
    add = inline_sqlite.DirectInsert(insert(notes), ["text"])
    compiles = 0
    original = add.statement.compile

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal compiles
        compiles += 1
        return original(*args, **kwargs)

    add.statement.compile = counted  # type: ignore[method-assign]
    try:
        for turn in range(3):
            for db in (first, second):
                async with db.writing() as connection:
                    add.run(connection, [{"text": f"{turn}"}])
                assert await count(db) == turn + 1
        assert compiles == 2
    finally:
        await first.dispose()
        await second.dispose()


async def test_concurrent_reads_each_run_in_a_transaction_of_their_own(db: Database) -> None:
    """Reads of several tasks that await mid-way (on inline SQLite the first takes the connection kept for reads,
    the others one from the pool) never share a connection or a transaction, and each one's transaction ends with
    it: a read that follows sees what was committed in between."""
    async with db.writing() as connection:
        await connection.execute(insert(notes), {"text": "first"})
    inside = asyncio.Barrier(3)

    async def read_while_others_read() -> tuple[Any, int]:
        async with db.read_connection() as connection:
            seen = int(await connection.scalar(select(func.count()).select_from(notes)) or 0)
            await inside.wait()  # all three reads are open at once
            assert connection.in_transaction()
            return connection, seen

    reads = await asyncio.gather(*(read_while_others_read() for _ in range(3)))
    assert [seen for _, seen in reads] == [1, 1, 1]
    assert len({id(connection) for connection, _ in reads}) == 3
    async with db.writing() as connection:
        await connection.execute(insert(notes), {"text": "second"})
    for _ in range(2):
        async with db.read_connection() as connection:
            assert await connection.scalar(select(func.count()).select_from(notes)) == 2


async def test_inline_sqlite_reads_take_turns_on_one_kept_connection_each_with_its_own_snapshot(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path / 'reads.db'}")
    count_notes = select(func.count()).select_from(notes)
    try:
        async with db.read_connection() as kept:
            pass
        async with db.read_connection() as connection:
            assert connection is kept  # one read after another: the same connection
            assert await connection.scalar(count_notes) == 0
            # A read is a snapshot that never holds the write lock: a writer commits meanwhile, unseen by the read.
            async with db.writing() as writer:
                await writer.execute(insert(notes), {"text": "meanwhile"})
            assert await connection.scalar(count_notes) == 0
        with pytest.raises(RuntimeError):
            async with db.read_connection() as connection:
                await connection.scalar(count_notes)
                raise RuntimeError("the read failed")
        async with db.read_connection() as connection:
            assert connection is kept  # rolled back and lent again
            assert await connection.scalar(count_notes) == 1  # a new read, a new snapshot
        raw: sqlite3.Connection = kept.sync_connection.connection.dbapi_connection  # type: ignore[union-attr,assignment]
        assert not raw.in_transaction
    finally:
        await db.dispose()


async def test_a_batch_insert_writes_the_rows_an_executemany_writes(db: Database) -> None:
    """`BatchInsert` (one statement of arrays on PostgreSQL) against SQLAlchemy's executemany of the same rows:
    the same values read back, defaults filled the same; on PostgreSQL in one statement whatever the row count."""
    columns = ["n", "key", "note", "at", "doc", "flag", "extra"]
    add = BatchInsert(batched, columns)
    paris = timezone(timedelta(hours=1))
    rows = [
        (
            n,
            f"k{n % 3}",
            None if n % 2 else f"note \u00e9 {n} ' \" ,",
            datetime(2026, 12, 1, 9, n, tzinfo=paris),
            {"n": n, "a": [1, None]},
            n % 2 == 0,
            None if n % 2 else [n, "x"],  # a list first: one value, not a dimension of the array
        )
        for n in range(7)
    ]
    statements: list[tuple[str, bool]] = []

    def seen(connection: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        statements.append((statement, many))

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    for batch in (rows[:1], [], rows[1:]):
        async with db.writing() as connection:
            await add.run(connection, batch)
    event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    async with db.writing() as connection:
        await connection.execute(insert(executed_many), [dict(zip(columns, row, strict=True)) for row in rows])
    async with db.read_session() as session:
        got = (await session.execute(select(batched).order_by(batched.c.n))).all()
        expected = (await session.execute(select(executed_many).order_by(executed_many.c.n))).all()
        json_nulls = [
            await session.scalar(select(func.count()).select_from(table).where(table.c.extra.is_(None)))
            for table in (batched, executed_many)
        ]
    assert got == expected
    assert json_nulls[0] == json_nulls[1]
    assert [row.at for row in got] == [row[3].astimezone(UTC) for row in rows]
    assert [row.extra for row in got] == [row[6] for row in rows]
    assert {row.kind for row in got} == {"plain"}
    if not db.is_sqlite:
        assert len(statements) == 2 and all("unnest" in sql and not many for sql, many in statements)


async def test_a_batch_insert_of_a_duplicate_key_fails_whole(db: Database) -> None:
    """A key already there, or twice in the batch, fails the statement as executemany's would: nothing of the
    batch is written."""
    add = BatchInsert(batched, ["n", "key", "at", "doc", "flag"])
    now = datetime.now(UTC)
    async with db.writing() as connection:
        await add.run(connection, [(1, "a", now, {}, True)])
    for batch in ([(2, "b", now, {}, True), (1, "a", now, {}, True)], [(3, "c", now, {}, True)] * 2):
        with pytest.raises(sa_exc.IntegrityError):
            async with db.writing() as connection:
                await add.run(connection, batch)
    async with db.read_session() as session:
        assert (await session.execute(select(batched.c.n))).scalars().all() == [1]


async def test_a_batch_insert_refuses_a_value_too_long_for_its_column_as_executemany_does(db: Database) -> None:
    """`key` is VARCHAR(64). A cast to varchar(64)[] would cut a longer value silently on PostgreSQL, where a row's
    INSERT refuses it: both ways give the same outcome (SQLite does not check lengths: both store the value)."""
    row = {"n": 1, "key": "k" * 65, "at": datetime.now(UTC), "doc": {}, "flag": True}

    async def outcome(table: Table) -> str | None:
        try:
            async with db.writing() as connection:
                if table is batched:
                    await BatchInsert(batched, list(row)).run(connection, [tuple(row.values())])
                else:
                    await connection.execute(insert(executed_many), [row])
        except sa_exc.DBAPIError as error:
            return "refused: value too long" if "too long" in str(error.orig) else str(error.orig)
        async with db.read_session() as session:
            return await session.scalar(select(table.c.key))

    expected = row["key"] if db.is_sqlite else "refused: value too long"
    assert await outcome(batched) == await outcome(executed_many) == expected


def test_a_batch_insert_must_be_given_columns_with_python_defaults() -> None:
    # Its statement of arrays is not SQLAlchemy's insert: a Python-side default would be missing on PostgreSQL.
    counted = Table("counted", MetaData(), Column("n", Integer, primary_key=True), Column("tries", Integer, default=0))
    with pytest.raises(TypeError, match="tries"):
        BatchInsert(counted, ["n"])
    BatchInsert(counted, ["n", "tries"])


def test_a_batch_insert_refuses_an_array_column() -> None:
    # unnest would flatten an array of arrays into more rows than were given.
    tags = Table("tags", MetaData(), Column("n", Integer, primary_key=True), Column("names", ARRAY(String)))
    with pytest.raises(TypeError):
        BatchInsert(tags, ["n", "names"])
    BatchInsert(tags, ["n"])
