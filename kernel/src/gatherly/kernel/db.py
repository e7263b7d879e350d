"""One database per service through SQLAlchemy 2 async: SQLite (inline, see inline_sqlite.py, or aiosqlite) or
PostgreSQL (asyncpg), same code."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeAlias

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    String,
    Table,
    TextClause,
    bindparam,
    delete,
    event,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.types import TypeEngine

from gatherly.kernel import inline_sqlite, sqlite_geo

SQLITE_BUSY_TIMEOUT_MS = 30_000

# What stores run their statements on: a unit of work's connection, a read connection, or (tools, tests) a session.
Executor: TypeAlias = AsyncSession | AsyncConnection


class Database:
    """A service's engine and session factories.

    On SQLite, writing transactions start with BEGIN IMMEDIATE: a WAL reader that later wants to write
    cannot wait for the lock (SQLite answers "busy" at once), so a unit of work takes the write lock up
    front and concurrent writers queue instead of failing. Read-only sessions use a plain BEGIN."""

    def __init__(self, url: str, *, echo: bool = False, consumers: int = 1) -> None:
        self.url = url
        # How many consumer workers of this process write here (one transaction each at a time): the size of the
        # consumers' own pool (see `writing`).
        self.consumers = max(1, consumers)
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            if parsed.get_driver_name() == "pysqlite":  # a plain sqlite:/// URL
                parsed = parsed.set(drivername=inline_sqlite.DRIVER)
            else:
                kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=10)
        # hide_parameters: a failed statement's error message (which reaches the log) must not carry the values
        # it bound — emails, password and token hashes, hostile text.
        self.engine: AsyncEngine = create_async_engine(parsed, hide_parameters=True, **kwargs)
        # PostgreSQL consumers' transactions: created at the first one (see `writing`), disposed with `engine`.
        self._consumer_engine: AsyncEngine | None = None
        # Inline SQLite files are checkpointed by a thread of their own (see inline_sqlite.WalCheckpointer).
        self.checkpointer: inline_sqlite.WalCheckpointer | None = None
        # Statements run on the loop's own thread (inline_sqlite.py): nothing of the driver ever waits.
        self.inline = self.is_sqlite and parsed.drivername == inline_sqlite.DRIVER
        if self.is_sqlite:
            inline = self.inline
            if inline and parsed.database and parsed.database != ":memory:":
                self.checkpointer = inline_sqlite.WalCheckpointer(Path(parsed.database))
            _make_sqlite_transactional(self.engine, inline=inline, checkpointer=self.checkpointer)
        # SQLite lets one writer in at a time; writers of this process queue on this lock instead of
        # hitting SQLite's busy handler, whose sleeps (up to 100 ms) would dominate latency under load.
        self.write_lock = asyncio.Lock() if self.is_sqlite else None
        # Inline SQLite files: the one connection every write transaction of this process runs on (see `writing`).
        self._keeps_writer = self.inline and bool(parsed.database) and parsed.database != ":memory:"
        self._writer: AsyncConnection | None = None
        # The same for reads: one connection kept for read transactions, lent to one read at a time.
        self._reader: AsyncConnection | None = None
        self._reader_lent = False
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.read_engine = self.engine.execution_options(sqlite_begin="DEFERRED")
        self.read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)

    def session(self) -> AsyncSession:
        """A session for a unit of work that writes."""
        return self.sessions()

    @asynccontextmanager
    async def writing(self, *, consumer: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection in a write transaction: committed when the block ends, rolled back on an exception.

        A Core connection, not an ORM session: stores run Core statements only, and a session per transaction
        (its creation, ORM execution path and closing) cost about a quarter of a small write transaction.

        `consumer`: the transaction of a consumer worker. On PostgreSQL it runs on a pool of its own without the
        pre-ping, whose `BEGIN; ";"; ROLLBACK` was three extra round trips, about 40% of a small consumer
        transaction's time on a quiet machine and 20% of its CPU. A worker needs no ping: a connection found dead
        fails the transaction with an error that `delivery.is_infrastructure_error` classes as such, the worker
        backs off and retries, and SQLAlchemy has by then invalidated that connection and the pool's older ones,
        so the retry runs on a new one.
        Requests keep the ping: a request on a connection that died (a database restart) would fail instead.

        On an inline SQLite file writers take turns anyway (`write_lock`), so they all use one connection kept for
        it instead of checking one out of the pool per transaction: the check-out and the check-in (pool events, a
        reset) cost more than a single-row INSERT. A connection that broke is closed and the next writer opens
        another."""
        if not self._keeps_writer:
            engine = self._consumers_engine() if consumer and not self.is_sqlite else self.engine
            async with self._write_turn(), self._connect(engine) as connection, connection.begin():
                yield connection
            return
        async with self._write_turn():
            if self._writer is None:
                self._writer = await inline_sqlite.KeptWriter(self.engine).start()
                inline_sqlite.keep_for_writes(self._writer.sync_connection.connection.dbapi_connection)  # type: ignore[union-attr,arg-type]
            connection = self._writer
            dbapi: sqlite3.Connection = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr,assignment]
            # BEGIN and COMMIT straight on sqlite3: through SQLAlchemy (greenlet switches, events, its Transaction)
            # they cost several times what SQLite takes, on every write transaction. The first statement run through
            # SQLAlchemy begins its own Transaction over this one (`_on_begin` sees it open and adds nothing); it is
            # then ended through SQLAlchemy, which commits or rolls back on sqlite3 all the same.
            await inline_sqlite.begin_immediate_now(dbapi)
            try:
                try:
                    yield connection
                except BaseException:
                    _end(connection, dbapi, commit=False)
                    raise
                _end(connection, dbapi, commit=True)
            finally:
                if connection.invalidated or connection.in_transaction() or dbapi.in_transaction:
                    # Broken, or a commit or rollback that failed: never hand it to the next writer. SQLite keeps
                    # a transaction whose COMMIT failed open: end it before the connection goes back to the pool.
                    self._writer = None
                    if not connection.invalidated and dbapi.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            dbapi.rollback()
                    await connection.close()
        # As `_connect` does: the end of a transaction is a turn for the other tasks.
        await asyncio.sleep(0)

    def _consumers_engine(self) -> AsyncEngine:
        if self._consumer_engine is None:
            self._consumer_engine = create_async_engine(
                self.engine.url,
                hide_parameters=True,
                echo=self.engine.echo,
                pool_pre_ping=False,
                pool_size=self.consumers,
                # Each worker holds one connection at a time; the overflow only spares a wait if that ever changes.
                max_overflow=self.consumers,
            )
        return self._consumer_engine

    @asynccontextmanager
    async def _write_turn(self) -> AsyncIterator[None]:
        if self.write_lock is None:
            yield
            return
        async with self.write_lock:
            yield

    def read_session(self) -> AsyncSession:
        """A session for queries only."""
        return self.read_sessions()

    @asynccontextmanager
    async def read_connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection for queries only, in a read transaction (on SQLite a plain BEGIN: it never waits for the
        write lock) that is rolled back at the end. Core statements only: no ORM session, identity map or
        session-level bookkeeping on the request path.

        On an inline SQLite file a read takes the connection kept for reads when no other read has it (a read that
        awaits something mid-way keeps it lent: reads of other tasks then check one out of the pool, each in its own
        transaction): the pool's check-out and check-in, SQLAlchemy's `Connection` and its `Transaction` cost about
        as much as the read's own statements. BEGIN and ROLLBACK go straight to sqlite3, as `writing` does."""
        if not self._keeps_writer or self._reader_lent:
            async with self._connect(self.read_engine) as connection:
                yield connection
            return
        self._reader_lent = True
        try:
            if self._reader is None:
                self._reader = await inline_sqlite.KeptReader(self.read_engine).start()
            connection = self._reader
            dbapi: sqlite3.Connection = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr,assignment]
            dbapi.execute("BEGIN DEFERRED")
            try:
                yield connection
            finally:
                try:
                    _end(connection, dbapi, commit=False)
                finally:
                    if connection.invalidated or connection.in_transaction() or dbapi.in_transaction:
                        self._reader = None  # broken, or a rollback that failed: the next read opens another
                        await connection.close()
        finally:
            self._reader_lent = False
        # As `_connect` does: the end of a transaction is a turn for the other tasks.
        await asyncio.sleep(0)

    @asynccontextmanager
    async def _connect(self, engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        """A pooled connection, returned to the pool at the end of the block.

        SQLAlchemy closes a connection leaving `async with` in a task of its own under `asyncio.shield`, so that a
        cancellation cannot abandon the close halfway (with real I/O, a rollback over the network). On inline SQLite
        the close never waits for anything (the rollback is a call into sqlite3 on this thread), so no cancellation
        can land in it: it is awaited directly, which spared a task per request (a quarter of a one-query read)."""
        if not self.inline:
            async with engine.connect() as connection:
                yield connection
            return
        connection = await engine.connect()
        try:
            yield connection
        finally:
            await connection.close()
            # Nothing on inline SQLite waits, so code running transactions one after another (a batch, an import, a
            # producer) would hold the event loop: the end of each is a turn for the other tasks (the relay the
            # commit just woke, requests), as awaiting real I/O gives on other databases.
            await asyncio.sleep(0)

    async def migrate(self, migrations_dir: Path) -> None:
        """Bring the schema to the newest Alembic revisions of `migrations_dir` and of the kernel's branch."""
        config = alembic_config(migrations_dir, self.url)
        async with self.engine.begin() as connection:
            await connection.run_sync(_upgrade, config)

    async def dispose(self) -> None:
        for kept in (self._writer, self._reader):
            if kept is not None:
                await kept.close()
        self._writer = self._reader = None
        consumer_engine, self._consumer_engine = self._consumer_engine, None
        if consumer_engine is not None:
            await consumer_engine.dispose()
        await self.engine.dispose()
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.stop)


def _end(connection: AsyncConnection, dbapi: sqlite3.Connection, *, commit: bool) -> None:
    """Commit or roll back a kept writer's transaction, through SQLAlchemy if a statement of its began its own.

    SQLAlchemy's side is called directly, not through its greenlet bridge (`AsyncConnection.commit`): on inline
    SQLite nothing in a commit or a rollback waits for anything, and the bridge's greenlet and switches cost
    ~20 µs per write transaction, about what the COMMIT itself takes."""
    sync = connection.sync_connection
    if sync is not None and sync.in_transaction():
        if commit:
            sync.commit()
        else:
            sync.rollback()
    elif dbapi.in_transaction:
        dbapi.execute("COMMIT" if commit else "ROLLBACK")


async def delete_in_batches(
    db: Database, table: Table, condition: ColumnElement[bool], *, batch_size: int = 200
) -> int:
    """Delete the rows matching `condition`, `batch_size` per transaction (found through an index on the condition's
    column), yielding to the event loop between batches. On inline SQLite one large DELETE would hold up the whole
    process for its length; short ones also let other writers in between. Returns how many rows were deleted.

    Rows are picked by their physical id (SQLite's rowid, PostgreSQL's ctid): a composite key `IN (subquery)`
    makes SQLite scan the table for every batch."""
    row_id: ColumnElement[Any] = literal_column("rowid" if db.is_sqlite else "ctid")
    chosen = select(row_id).select_from(table).where(condition).limit(batch_size)
    statement = delete(table).where(row_id.in_(chosen))
    deleted = 0
    while True:
        async with db.writing() as session:
            count = rowcount(await session.execute(statement))
        deleted += count
        if count < batch_size:
            return deleted
        await asyncio.sleep(0)


def insert_ignoring_conflicts(executor: Executor, table: Table) -> sqlite.Insert | postgresql.Insert:
    """INSERT … ON CONFLICT DO NOTHING in the executor's dialect: a row another transaction makes at the same moment
    stands, and this statement inserts nothing instead of failing (on PostgreSQL it waits for that transaction)."""
    bind = executor.get_bind() if isinstance(executor, AsyncSession) else executor
    dialect = sqlite if bind.dialect.name == "sqlite" else postgresql
    return dialect.insert(table).on_conflict_do_nothing()


class BatchInsert:
    """An INSERT of many rows in one statement, built once (at module level, as a batch handler's statement):

        INSERT_SEEN = BatchInsert(seen, ["n", "key"])
        await INSERT_SEEN.run(uow.session, [(event.n, event.key) for event in events])

    On PostgreSQL each column's values go as ONE array (`INSERT … SELECT * FROM unnest(…)`), as the inbox claim's
    ids do: the statement's text is the same for any number of rows (prepared once per connection), and asyncpg
    binds a few arrays instead of sending a Bind and an Execute per row, which is what SQLAlchemy's executemany of
    a list of rows does there (3.8 µs of PostgreSQL's CPU a row against about 2, docs/messaging.md). On SQLite (no
    arrays, and its executemany runs in the process anyway) it is SQLAlchemy's executemany of `insert(table)`.
    The rows, defaults and errors (a duplicate key fails the statement) are the same either way."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        if any(isinstance(table.c[name].type, ARRAY) for name in self.columns):
            # unnest flattens an array of arrays: such a column's values cannot travel as one array each.
            raise TypeError(f"BatchInsert cannot write array columns of {table.name}")
        left_to_python = [column.name for column in table.c if column.default is not None and column.key not in columns]
        if left_to_python:
            # The statement of arrays is not SQLAlchemy's insert: a default computed in Python would be missing
            # on PostgreSQL only. Such columns are named and given in every row instead.
            raise TypeError(f"BatchInsert must be given {table.name}'s columns with Python defaults: {left_to_python}")
        self._insert = insert(table)
        dialect = postgresql.dialect()
        quote = dialect.identifier_preparer
        names = ", ".join(quote.quote(table.c[name].name) for name in self.columns)
        types = {name: _unbounded(table.c[name].type) for name in self.columns}
        arrays = ", ".join(f"CAST(:{name} AS {types[name].compile(dialect=dialect)}[])" for name in self.columns)
        # Each array bound through its column's type: the values are converted as a row's would be (UTC
        # timestamps, JSON documents). One dimension: a JSON value that is a list is one element, not a row of a
        # two-dimensional array (SQLAlchemy guesses the dimensions from the first element otherwise).
        self._unnest: TextClause = text(
            f"INSERT INTO {quote.format_table(table)} ({names}) SELECT * FROM unnest({arrays})"
        ).bindparams(*(bindparam(name, type_=postgresql.ARRAY(types[name], dimensions=1)) for name in self.columns))

    async def run(self, connection: AsyncConnection, rows: Sequence[Sequence[Any]]) -> None:
        """Insert `rows`, each a tuple of values in the order of `columns`, in `connection`'s transaction."""
        if not rows:
            return
        if connection.dialect.name == "postgresql":
            await connection.execute(
                self._unnest, dict(zip(self.columns, map(list, zip(*rows, strict=True)), strict=True))
            )
        else:
            await connection.execute(self._insert, [dict(zip(self.columns, row, strict=True)) for row in rows])


def _unbounded(column_type: TypeEngine[Any]) -> TypeEngine[Any]:
    """The column's type without a length, for the arrays' casts (ours, and the `::varchar(64)[]` SQLAlchemy's
    asyncpg dialect adds to a typed bind): an explicit cast to varchar(n) cuts a longer value silently, where the
    INSERT of a row refuses it ("value too long"); unbounded, the INSERT itself checks the length."""
    if isinstance(column_type, String) and column_type.length is not None:
        unbounded = copy.copy(column_type)
        unbounded.length = None
        return unbounded
    return column_type


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE touched (SQLAlchemy's generic Result type does not declare `rowcount`)."""
    return int(getattr(result, "rowcount", 0) or 0)


# The kernel's own revisions (tables it added after the services' first revisions): a branch of its own in every
# service's chain, so upgrading means `heads` (the service's newest revision and the kernel's).
KERNEL_MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(migrations_dir: Path, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("path_separator", "os")
    config.set_main_option(
        "version_locations", os.pathsep.join([str(migrations_dir / "versions"), str(KERNEL_MIGRATIONS)])
    )
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _upgrade(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "heads")


def _make_sqlite_transactional(
    engine: AsyncEngine, *, inline: bool, checkpointer: inline_sqlite.WalCheckpointer | None
) -> None:
    sync_engine = engine.sync_engine
    busy_timeout_ms = inline_sqlite.READ_BUSY_TIMEOUT_MS if inline else SQLITE_BUSY_TIMEOUT_MS

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see the event below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; only an OS crash may lose the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if not sqlite_geo.HAS_MATH_FUNCTIONS:
            sqlite_geo.add_math_functions(dbapi_connection)  # what nearby searches measure with
        if checkpointer is not None:
            for pragma in inline_sqlite.WAL_PRAGMAS:
                cursor.execute(pragma)
            checkpointer.ensure_started()
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        if inline and connection.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
            return  # begun already, straight on sqlite3, by `Database.writing` on its kept connection
        if inline and mode == "IMMEDIATE":
            inline_sqlite.begin_immediate(connection.connection.dbapi_connection)  # type: ignore[arg-type]
        elif inline:
            # Straight to sqlite3: SQLAlchemy's statement path (events, execution context) cost more than the BEGIN.
            connection.connection.dbapi_connection.execute(f"BEGIN {mode}")  # type: ignore[union-attr]
        else:
            connection.exec_driver_sql(f"BEGIN {mode}")
