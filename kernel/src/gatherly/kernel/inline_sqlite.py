"""SQLite for SQLAlchemy's asyncio layer without a thread: statements run on the event loop's own thread.

Why: a SQLite statement on a local WAL file takes microseconds, while handing it to aiosqlite's worker
thread and back costs ~150 µs on a small machine, and SQLAlchemy's aiosqlite adapter makes three or four
such trips per statement (cursor, execute, fetch, close). Measured on the 2-core reference machine:
~600 µs per INSERT through aiosqlite, ~100 µs inline (bench/reports/log_latency.md has the end-to-end effect).

The price is that a statement blocks the loop while it runs, so two things must never wait inside SQLite:
- the write lock: `begin_immediate` tries BEGIN IMMEDIATE with `busy_timeout = 0` and retries with short
  asynchronous sleeps (other coroutines run meanwhile). Writers of this process already queue on
  `Database.write_lock`, so only other processes' writers are waited for this way.
- long work: a slow query holds up every other request of the process for its duration. Our queries are
  indexed and bounded (paginated); heavy analytics do not belong on this path.

Use it with `sqlite:///path` URLs (`Database` picks this driver); `sqlite+aiosqlite://` still works."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import pool
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL, CursorResult, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable
from sqlalchemy.sql.dml import Insert
from sqlalchemy.util.concurrency import await_, in_greenlet

from gatherly.kernel.metrics import WAL_CHECKPOINTS

log = structlog.get_logger(__name__)

DRIVER = "sqlite+inline"

# How long a writer waits for another process's write lock before giving up.
WRITE_LOCK_TIMEOUT_S = 30.0
# Readers in WAL mode wait only during a crash recovery of the WAL index: rare and short.
READ_BUSY_TIMEOUT_MS = 2_000


class InlineCursor(sqlite3.Cursor):
    async def _async_soft_close(self) -> None:
        """SQLAlchemy's asyncio results ask the driver to release the cursor; rows are already fetched."""


class InlineConnection(sqlite3.Connection):
    # True on a connection kept for write transactions only (`Database.writing`): its busy timeout stays 0, so
    # `begin_immediate` need not turn it off and on again around every BEGIN.
    writes_only = False

    def cursor(self, factory: Any = InlineCursor) -> Any:
        return super().cursor(factory)


async def _done() -> None:
    return None


def _count_as_awaited() -> None:
    # SQLAlchemy checks that an async driver awaited something (AsyncConnection.execute raises
    # AwaitRequired otherwise). A coroutine that returns at once satisfies it without leaving the thread.
    if in_greenlet():
        await_(_done())


class InlineSQLiteDialect(SQLiteDialect_pysqlite):
    is_async = True
    supports_statement_cache = True

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        # Connections are checked out by coroutines: the pool must wait asynchronously when exhausted.
        return pool.AsyncAdaptedQueuePool if cls._is_url_file_db(url) else pool.StaticPool

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        cparams["factory"] = InlineConnection
        cparams["check_same_thread"] = False
        cparams["timeout"] = READ_BUSY_TIMEOUT_MS / 1000
        return super().connect(*cargs, **cparams)

    def do_execute(self, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        _count_as_awaited()
        cursor.execute(statement, parameters)

    def do_execute_no_params(self, cursor: Any, statement: str, context: Any = None) -> None:
        _count_as_awaited()
        cursor.execute(statement)

    def do_executemany(self, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        _count_as_awaited()
        cursor.executemany(statement, parameters)


registry.register("sqlite.inline", __name__, "InlineSQLiteDialect")


class KeptWriter(AsyncConnection):
    """The connection `Database.writing` keeps for a process's write transactions on an inline SQLite file. Inside
    its transaction, statements run straight on SQLAlchemy's synchronous connection instead of through the greenlet
    bridge `AsyncConnection.execute` takes (a greenlet per statement, its switches, an awaited no-op): the BEGIN
    IMMEDIATE is in before the block starts and the driver never waits, so there is nothing to bridge, and the bridge
    cost ~20 µs per statement, more than SQLite takes to insert a row. Outside a transaction (a BEGIN may have to
    wait for another process's write lock) or once broken, `execute` is AsyncConnection's own."""

    async def execute(
        self,
        statement: Executable,
        parameters: Any = None,
        *,
        execution_options: Mapping[str, Any] | None = None,
    ) -> CursorResult[Any]:
        sync = self.sync_connection
        if sync is None or sync.closed or sync.invalidated or not sync.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
            return await super().execute(statement, parameters, execution_options=execution_options)
        return sync.execute(statement, parameters, execution_options=execution_options)


class KeptReader(KeptWriter):
    """The connection `Database.read_connection` keeps for read transactions on an inline SQLite file: inside its
    transaction (a plain BEGIN, sent before the block starts), its statements skip the greenlet bridge as a kept
    writer's do."""


class DirectInsert:
    """An INSERT compiled once for SQLite and run straight on the sqlite3 connection of an inline-SQLite
    transaction, its parameters converted by the columns' own bind processors (the same values SQLAlchemy would
    bind). For the kernel's statements on every event's path (the outbox row, the inbox claim): SQLAlchemy's
    execution path (a greenlet switch, the cache-key lookup, an execution context, the result's set-up) cost
    ~10x what SQLite takes to insert one row. Not seen by SQLAlchemy's statement events."""

    def __init__(self, statement: Insert, columns: Sequence[str]) -> None:
        self.statement = statement
        self.columns = list(columns)
        # One per dialect, i.e. per service database: the statement is module-level and shared by every service of
        # the process, and one slot made them compile it again on each switch (most calls in `gatherly up`).
        self._by_dialect: weakref.WeakKeyDictionary[Dialect, tuple[str, list[tuple[str, Any]]]] = (
            weakref.WeakKeyDictionary()
        )

    def _compile(self, dialect: Dialect) -> tuple[str, list[tuple[str, Any]]]:
        found = self._by_dialect.get(dialect)
        if found is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=self.columns)
            binds = [
                (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
                for name in compiled.positiontup or ()
            ]
            self._by_dialect[dialect] = found = (compiled.string, binds)
        return found

    def run(self, connection: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Insert `rows` in `connection`'s transaction; returns the first column of each row RETURNING gave."""
        sql, binds = self._compile(connection.dialect)
        dbapi = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        assert dbapi is not None
        returned: list[Any] = []
        for row in rows:
            values = [row[name] if process is None else process(row[name]) for name, process in binds]
            returned.extend(first for first, *_ in dbapi.execute(sql, values))
        return returned


def is_busy(error: BaseException) -> bool:
    # Extended codes (SQLITE_BUSY_RECOVERY, ...) carry the primary code in their low byte.
    return isinstance(error, sqlite3.OperationalError) and (getattr(error, "sqlite_errorcode", 0) & 0xFF) in (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    )


def _begin_immediate_tries(connection: sqlite3.Connection, timeout: float, *, may_wait: bool = True) -> Iterator[float]:
    """Tries BEGIN IMMEDIATE until it is in; yields the pause to sleep asynchronously before each new try, while
    another process holds the write lock. Raises the busy error once `timeout` has passed, or at once when the
    caller cannot wait (`may_wait=False`)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if not is_busy(error) or not may_wait or time.monotonic() > deadline:
                raise
        yield random.uniform(0.0005, 0.005)


def begin_immediate(connection: sqlite3.Connection, *, timeout: float = WRITE_LOCK_TIMEOUT_S) -> None:
    """BEGIN IMMEDIATE without blocking the loop: while another process holds the write lock, sleep
    asynchronously (from inside SQLAlchemy's greenlet) and try again. SQLite's own busy handler would sleep
    on the loop's thread, and for up to 100 ms at a time."""
    writes_only = getattr(connection, "writes_only", False)
    if not writes_only:
        connection.execute("PRAGMA busy_timeout = 0")
    try:
        for pause in _begin_immediate_tries(connection, timeout, may_wait=in_greenlet()):
            await_(asyncio.sleep(pause))
    finally:
        if not writes_only:
            connection.execute(f"PRAGMA busy_timeout = {READ_BUSY_TIMEOUT_MS}")


async def begin_immediate_now(connection: sqlite3.Connection, *, timeout: float = WRITE_LOCK_TIMEOUT_S) -> None:
    """`begin_immediate` from a coroutine (outside SQLAlchemy's greenlet), on a connection kept for writes."""
    for pause in _begin_immediate_tries(connection, timeout):
        await asyncio.sleep(pause)


def keep_for_writes(connection: InlineConnection) -> None:
    """Mark a connection used for write transactions only: its statements run with the write lock held, so
    nothing in it waits, and its busy timeout can stay 0 for good."""
    connection.execute("PRAGMA busy_timeout = 0")
    connection.writes_only = True


# WAL pages are written back to the database by `WalCheckpointer`, not by whichever COMMIT crosses SQLite's
# 1,000-page threshold (that COMMIT runs on the event loop and would stall it for the checkpoint's length).
WAL_PRAGMAS = (
    "PRAGMA wal_autocheckpoint = 0",
    # After a checkpoint has copied the whole WAL back, the next writer restarts it and cuts the file to this size.
    f"PRAGMA journal_size_limit = {64 * 1024 * 1024}",
)


class WalCheckpointer:
    """Checkpoints one SQLite file's WAL every `interval` seconds from a thread with its own connection, so the
    I/O happens off the event loop (sqlite3 releases the GIL while SQLite works).

    PASSIVE checkpoints never wait for anyone and are enough while readers come and go: a completed one lets the
    WAL restart and `journal_size_limit` cut it. Only when the WAL has still grown past `truncate_above` bytes
    (long readers kept it from completing) is a TRUNCATE tried, with a short busy timeout: it holds off new
    writers while it waits, and writers here wait for the write lock asynchronously, never on the loop."""

    def __init__(self, path: Path, *, interval: float = 1.0, truncate_above: int = 256 * 1024 * 1024) -> None:
        self.path = Path(path)
        self.interval = interval
        self.truncate_above = truncate_above
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name=f"wal-checkpoint {self.path.name}", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop and wait for the thread (at most one checkpoint's length)."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            for pragma in WAL_PRAGMAS:
                connection.execute(pragma)
            while not self._stop.wait(self.interval):
                self.checkpoint(connection)
        finally:
            connection.close()

    def checkpoint(self, connection: sqlite3.Connection) -> str:
        """One checkpoint; returns its outcome ("done", "partial": readers kept some frames, "busy", "error")."""
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            size = wal.stat().st_size if wal.exists() else 0
            mode = "TRUNCATE" if size > self.truncate_above else "PASSIVE"
            connection.execute(f"PRAGMA busy_timeout = {100 if mode == 'TRUNCATE' else 0}")
            busy, frames, copied = connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            outcome = "busy" if busy else ("done" if copied == frames else "partial")
        except sqlite3.Error:
            # A failed checkpoint loses nothing (the frames stay in the WAL); the next round tries again.
            log.warning("WAL checkpoint failed; will try again", database=str(self.path), exc_info=True)
            outcome = "error"
        WAL_CHECKPOINTS.labels(self.path.name, outcome).inc()
        return outcome
