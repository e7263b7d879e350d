"""Test support shared by every package's tests: scratch databases of each configured backend.

GATHERLY_TEST_DB_BACKENDS names the backends the database-touching tests run against (comma separated, default
`sqlite`; CI uses `sqlite,postgresql`). PostgreSQL tests get a scratch database each on the server at
GATHERLY_TEST_POSTGRES_URL (`scripts/postgres.sh` sets one up). A backend that was asked for and cannot be reached
fails the test: it is never skipped."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from gatherly.kernel import postgis
from gatherly.kernel.db import Database
from gatherly.kernel.web import FILTERS_KEY, decode_cursor, encode_cursor

DB_BACKENDS = [
    name.strip() for name in os.environ.get("GATHERLY_TEST_DB_BACKENDS", "sqlite").split(",") if name.strip()
]
# The message-log backends the log tests run on: `embedded` (default) and `kafka` (one broker per test session).
LOG_BACKENDS = [
    name.strip() for name in os.environ.get("GATHERLY_TEST_LOG_BACKENDS", "embedded").split(",") if name.strip()
]
POSTGRES_URL = os.environ.get(
    "GATHERLY_TEST_POSTGRES_URL", "postgresql+asyncpg://gatherly:gatherly@127.0.0.1:5432/postgres"
)
CONNECT_TIMEOUT_S = 10.0


class BackendUnavailable(RuntimeError):
    """A backend the tests were asked to use is unknown or cannot be reached."""


@asynccontextmanager
async def scratch_databases(backend: str, folder: Path, names: Sequence[str]) -> AsyncIterator[str]:
    """A database URL template with `{service}` in it, naming an empty database for each of `names`: SQLite files
    in `folder`, or new PostgreSQL databases that are dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder}/{{service}}.db"
        return
    if backend != "postgresql":
        raise BackendUnavailable(f"unknown database backend {backend!r} (known: sqlite, postgresql)")
    server = make_url(POSTGRES_URL)
    try:
        admin = await asyncio.wait_for(
            asyncpg.connect(server.set(drivername="postgresql").render_as_string(hide_password=False)),
            CONNECT_TIMEOUT_S,
        )
    except Exception as error:
        raise BackendUnavailable(
            f"PostgreSQL at {server!r} cannot be reached: {error!r} (scripts/postgres.sh sets one up)"
        ) from error
    prefix = f"gatherly_test_{uuid.uuid4().hex[:16]}"
    created: list[str] = []
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{prefix}_{name}"')
            created.append(f"{prefix}_{name}")
        # Rendered with a stand-in: a URL would percent-encode the braces of the template.
        url = server.set(database=f"{prefix}_SERVICE").render_as_string(hide_password=False)
        yield url.replace(f"{prefix}_SERVICE", f"{prefix}_{{service}}")
    finally:
        for database in created:
            await _drop(admin, database)
        await admin.close()


async def _drop(admin: asyncpg.Connection, database: str) -> None:
    # FORCE cannot end an autovacuum worker (it runs as the superuser, we do not) on a database the test wrote
    # much to; the worker gives way within moments, so try again for a while.
    for attempt in range(50):
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            return
        except asyncpg.exceptions.InsufficientPrivilegeError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.2)


@asynccontextmanager
async def scratch_database(backend: str, folder: Path) -> AsyncIterator[str]:
    """The URL of one empty database (see `scratch_databases`)."""
    async with scratch_databases(backend, folder, ["test"]) as template:
        yield template.replace("{service}", "test")


@asynccontextmanager
async def migrated_database(backend: str, folder: Path, migrations: Path) -> AsyncIterator[Database]:
    """One scratch database (`scratch_database`) with the Alembic chain in `migrations` applied, disposed of on the
    way out: what a store's or a query plan's test starts from."""
    async with scratch_database(backend, folder) as url:
        db = Database(url)
        try:
            await db.migrate(migrations)
            yield db
        finally:
            await db.dispose()


async def rows_written(connection: AsyncConnection, tables: Sequence[str]) -> int:
    """How many rows the transaction open on `connection` has inserted, updated or deleted so far: on SQLite in any
    table (the connection's `total_changes`), on PostgreSQL in `tables` (its per-transaction statistics). A count
    taken before and after a step says whether the step wrote, which the rows it leaves cannot show."""
    if connection.dialect.name == "sqlite":
        raw = await connection.get_raw_connection()
        sqlite = raw.dbapi_connection
        return int(sqlite.total_changes)  # type: ignore[union-attr]
    counts = text(
        "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_xact_user_tables"
        " WHERE relname = ANY(:tables)"
    )
    return int(await connection.scalar(counts, {"tables": list(tables)}) or 0)


async def schema_drift(backend: str, folder: Path, migrations: Path, metadata: MetaData) -> list[Any]:
    """How the schema that the Alembic chain in `migrations` builds on a scratch database differs from the tables
    the code declares in `metadata` (empty: they match)."""

    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        found = compare_metadata(context, metadata)
        return [d for d in found if d[0] != "remove_table" or d[1].name != "alembic_version"]

    async with migrated_database(backend, folder, migrations) as db, db.engine.connect() as connection:
        return await connection.run_sync(differences)


async def query_plans(db: Database, run: Callable[[AsyncConnection], Awaitable[Any]]) -> tuple[Any, list[str]]:
    """What `run` returns on a read connection of `db`, and PostgreSQL's plan (EXPLAIN) of each statement it ran, with
    the very parameters it ran them with. Planner settings it made for a statement (postgis.SETTINGS_SQL) are made
    again in their place, not explained."""
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        statements.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with db.read_connection() as connection:
            result = await run(connection)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    plans = []
    async with db.read_connection() as connection:
        for statement, parameters in statements:
            if statement in postgis.SETTINGS_SQL:
                await connection.exec_driver_sql(statement, parameters)
                continue
            rows = await connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
            plans.append("\n".join(row[0] for row in rows))
    return result, plans


def walks_nearest_first(plan: str, index: str) -> bool:
    """Whether a PostgreSQL plan reads `index` nearest-first (a KNN index scan: `Order By` the distance operator)
    and sorts nothing: it stops after a page instead of reading every row within the radius."""
    lines = [line.strip().removeprefix("->").strip() for line in plan.splitlines()]
    sorts = [line for line in lines if line.split(" ")[0] in {"Sort", "Incremental"}]
    return f"Index Scan using {index}" in plan and "Order By: (location <->" in plan and not sorts


def is_postgis_location(difference: Any) -> bool:
    """Whether a `schema_drift` difference is what postgis.add_location_sql made (raw SQL that the declared tables
    do not describe: the generated location column, its GiST index) or the extension's own spatial_ref_sys table."""
    kind = difference[0]
    if kind == "remove_column":
        return bool(difference[3].name == postgis.LOCATION)
    name = str(getattr(difference[1], "name", ""))
    return (kind == "remove_index" and name.endswith(f"_{postgis.LOCATION}")) or (
        kind == "remove_table" and name == "spatial_ref_sys"
    )


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout` seconds (servers the tests and the stack start)."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    """A loopback TCP port nothing listens on, taken from below the kernel's ephemeral range.

    Binding port 0 hands out a port from the ephemeral range, the same range the kernel gives to outgoing connections:
    a server started a moment later (SeaweedFS opens its S3 port only after its parts have connected to each other)
    found its port taken by one of its own client sockets. Below that range only listeners compete."""
    ephemeral_low = _ephemeral_port_range()[0]
    if ephemeral_low > 20_000:
        for _ in range(100):
            port = random.randrange(20_000, ephemeral_low)
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ephemeral_port_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default


# (the query a cursor is made with, the same search written otherwise, other searches)
CursorCase = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]


async def check_cursors_tied_to_filters(
    client: Any, path: str, headers: Mapping[str, str], cases: Sequence[CursorCase]
) -> None:
    """A list's cursors are tied to the filters they were made with (kernel/web.py `FilteredCursors`): for each
    case, the cursor of a first page of one item pages on with its own query and with each spelling of the same
    search, and gets the 422 of a malformed cursor with each other search; without its fingerprint (as issued before
    cursors carried their filters) it is taken as then."""
    malformed = (await client.get(path, params={"cursor": "not-a-cursor"}, headers=headers)).json()
    for made_with, same, others in cases:
        first = await client.get(path, params={**made_with, "limit": 1}, headers=headers)
        cursor = first.json()["next_cursor"]
        assert cursor is not None, made_with
        second = await client.get(path, params={**made_with, "limit": 1, "cursor": cursor}, headers=headers)
        assert second.status_code == 200 and second.json()["items"] != first.json()["items"], made_with
        for params in same:
            response = await client.get(path, params={**params, "limit": 1, "cursor": cursor}, headers=headers)
            assert response.json()["items"] == second.json()["items"], (made_with, params)
        for params in others:
            response = await client.get(path, params={**params, "limit": 1, "cursor": cursor}, headers=headers)
            assert response.status_code == 422, (made_with, params, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json() == malformed, (made_with, params)
        position = {key: value for key, value in decode_cursor(cursor).items() if key != FILTERS_KEY}
        response = await client.get(
            path, params={**made_with, "limit": 1, "cursor": encode_cursor(position)}, headers=headers
        )
        assert response.status_code == 200 and response.json()["items"] == second.json()["items"], made_with
