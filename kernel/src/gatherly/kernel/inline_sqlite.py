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
import time
from typing import Any

from sqlalchemy import pool
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL
from sqlalchemy.util.concurrency import await_, in_greenlet

DRIVER = "sqlite+inline"

# How long a writer waits for another process's write lock before giving up.
WRITE_LOCK_TIMEOUT_S = 30.0
# Readers in WAL mode wait only during a crash recovery of the WAL index: rare and short.
READ_BUSY_TIMEOUT_MS = 2_000


class InlineCursor(sqlite3.Cursor):
    async def _async_soft_close(self) -> None:
        """SQLAlchemy's asyncio results ask the driver to release the cursor; rows are already fetched."""


class InlineConnection(sqlite3.Connection):
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


def is_busy(error: BaseException) -> bool:
    # Extended codes (SQLITE_BUSY_RECOVERY, ...) carry the primary code in their low byte.
    return isinstance(error, sqlite3.OperationalError) and (getattr(error, "sqlite_errorcode", 0) & 0xFF) in (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    )


def begin_immediate(connection: sqlite3.Connection, *, timeout: float = WRITE_LOCK_TIMEOUT_S) -> None:
    """BEGIN IMMEDIATE without blocking the loop: while another process holds the write lock, sleep
    asynchronously (from inside SQLAlchemy's greenlet) and try again. SQLite's own busy handler would sleep
    on the loop's thread, and for up to 100 ms at a time."""
    deadline = time.monotonic() + timeout
    connection.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if not is_busy(error) or time.monotonic() > deadline or not in_greenlet():
                    raise
            await_(asyncio.sleep(random.uniform(0.0005, 0.005)))
    finally:
        connection.execute(f"PRAGMA busy_timeout = {READ_BUSY_TIMEOUT_MS}")
