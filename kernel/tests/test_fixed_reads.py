"""FixedRead conformance: on every backend (and both SQLite drivers) a fixed read gives the same rows as SQLAlchemy
executing the same statement, conversions included (UTC datetimes, JSON, booleans, NULLs, IN lists, text()); and
FixedWrite's statements, inside a write transaction, read and write what SQLAlchemy's would."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.dialects.sqlite.pysqlite import dialect as sqlite_dialect

from gatherly.kernel.db import Database
from gatherly.kernel.fixed_reads import FixedRead, FixedWrite, _fast_processor
from gatherly.kernel.tables import Json, UtcDateTime

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("rank", Integer, nullable=False),
    Column("shown", Boolean, nullable=False),
    Column("tags", Json, nullable=False),
    Column("at", UtcDateTime(), nullable=True),
    Column("note", String(200), nullable=True),
    # Float and Numeric: their result processors depend on the column's type in PostgreSQL (asyncpg).
    Column("score", Float, nullable=True),
    Column("price", Numeric(10, 2), nullable=True),
)
START = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ROWS = [
    {
        "id": f"t{i}",
        "rank": i,
        "shown": i % 2 == 0,
        "tags": {"n": i, "names": ["a", "ü", "😀"], "nested": [None, 1.5]},
        "at": START + timedelta(minutes=i) if i != 3 else None,
        "note": None if i == 4 else f"note {i} with 'quotes' and %_ and \u00e9",
        "score": None if i == 5 else 52.52 + i / 7,
        "price": Decimal(f"{i}.25"),
    }
    for i in range(6)
]

BY_ID = FixedRead(select(things).where(things.c.id == bindparam("id")))
PAGE = FixedRead(
    select(things.c.id, things.c.at, things.c.tags)
    .where(things.c.rank >= bindparam("from_rank"), things.c.shown.is_(True))
    .order_by(things.c.rank.desc())
    .limit(bindparam("limit"))
)
IN_LIST = FixedRead(select(things.c.id).where(things.c.id.in_(bindparam("ids", expanding=True))).order_by(things.c.id))
LITERAL_LIST = FixedRead(select(things.c.id).where(things.c.rank.in_([1, 2, 5])).order_by(things.c.id))
SAME_PARAM_TWICE = FixedRead(
    select(things.c.id).where((things.c.rank == bindparam("r")) | (things.c.rank == bindparam("r") + 1))
)
COUNT = FixedRead(select(func.count()).select_from(things).where(things.c.shown == bindparam("shown")))
TEXT = FixedRead(text("SELECT id, at FROM things WHERE rank < :below ORDER BY rank").columns(things.c.id, things.c.at))


@asynccontextmanager
async def things_database(url: str, rows: Sequence[dict[str, object]] = ROWS) -> AsyncIterator[Database]:
    """A database at `url` with the things table holding `rows`; disposed afterwards."""
    database = Database(url)
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            if rows:
                await connection.execute(insert(things), list(rows))
        yield database
    finally:
        await database.dispose()


@pytest.fixture(params=["default", "aiosqlite"])
async def db(database_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    url = database_url
    if request.param == "aiosqlite":
        # The aiosqlite variant is SQLite's alone.
        url = url.replace("sqlite://", "sqlite+aiosqlite://", 1) if url.startswith("sqlite") else ""
    if not url:
        yield None  # type: ignore[misc]
        return
    async with things_database(url) as database:
        yield database


async def same_as_sqlalchemy(db: Database, read: FixedRead, params: dict[str, object]) -> list[dict[str, object]]:
    async with db.read_connection() as connection:
        fixed = await read.rows(connection, params)
    async with db.read_connection() as connection:
        values = await read.values(connection, params)
    async with db.read_connection() as connection:
        expected = [dict(row) for row in (await connection.execute(read.statement, params)).mappings()]
    assert fixed == expected
    assert [list(row) for row in values] == [list(row.values()) for row in expected]  # the same, in column order
    return fixed


CASES = [
    (BY_ID, {"id": "t1"}),
    (BY_ID, {"id": "t3"}),
    (BY_ID, {"id": "missing"}),
    (BY_ID, {"id": "t1' OR '1'='1"}),
    (PAGE, {"from_rank": 1, "limit": 2}),
    (PAGE, {"from_rank": 0, "limit": 10}),
    (IN_LIST, {"ids": ["t0", "t4", "t5", "nope"]}),
    (IN_LIST, {"ids": ["t2"]}),
    (IN_LIST, {"ids": []}),
    (LITERAL_LIST, {}),
    (SAME_PARAM_TWICE, {"r": 2}),
    (COUNT, {"shown": True}),
    (TEXT, {"below": 4}),
]


@pytest.mark.parametrize(("read", "params"), CASES)
async def test_rows_equal_sqlalchemys(db: Database | None, read: FixedRead, params: dict[str, object]) -> None:
    if db is None:
        return  # the aiosqlite variant on PostgreSQL: nothing to compare
    await same_as_sqlalchemy(db, read, params)


@pytest.mark.parametrize(("read", "params"), CASES)
async def test_raw_rows_converted_are_the_rows(db: Database | None, read: FixedRead, params: dict[str, object]) -> None:
    if db is None:
        return
    expected = await same_as_sqlalchemy(db, read, params)
    async with db.read_connection() as connection:
        found = await read.raw(connection, params)
    assert found.convert(found.raws) == expected
    assert found.convert(reversed(found.raws)) == expected[::-1]  # any of them, in any order
    for raw, row in zip(found.raws, expected, strict=True):
        assert sorted(found.positions) == sorted(row)
        for key, position in found.positions.items():
            value = raw[position]  # the driver's value: text for JSON and times on SQLite, else what conversion gives
            assert value == row[key] or isinstance(value, str)


# PAGE's rows with their time left as the driver gives it (a cursor's key, converted for one row only).
PAGE_TIME_UNCONVERTED = FixedRead(PAGE.statement, unconverted=("at",))


@pytest.mark.parametrize("params", [{"from_rank": 0, "limit": 10}, {"from_rank": 2, "limit": 1}])
async def test_values_leave_the_unconverted_columns_as_the_driver_gave_them(
    db: Database | None, params: dict[str, object]
) -> None:
    if db is None:
        return
    expected = await same_as_sqlalchemy(db, PAGE, params)
    async with db.read_connection() as connection:
        values = await PAGE_TIME_UNCONVERTED.values(connection, params)
        found = await PAGE_TIME_UNCONVERTED.raw(connection, params)
    at = found.positions["at"]
    assert len(values) == len(found.raws) == len(expected)
    for row, raw, whole in zip(values, found.raws, expected, strict=True):
        assert row[at] == raw[at]  # the driver's value: on sqlite3 the stored text
        assert [v for i, v in enumerate(row) if i != at] == [v for k, v in whole.items() if k != "at"]
        if db.inline and whole["at"] is not None:
            assert row[at] == whole["at"].strftime("%Y-%m-%d %H:%M:%S.%f")
    assert found.convert_values(found.raws) == values
    assert found.convert(found.raws) == expected  # any row converted whole on demand, its time too
    assert found.convert(found.raws[-1:]) == expected[-1:]


def test_an_unconverted_column_must_be_one_of_the_reads() -> None:
    with pytest.raises(TypeError, match="unconverted"):
        FixedRead(PAGE.statement, unconverted=("rank",))._compiled(Database("sqlite:///:memory:").engine.dialect)


async def test_converts_like_the_columns(database_url: str) -> None:
    async with things_database(database_url) as db:
        async with db.read_connection() as connection:
            row = await BY_ID.first(connection, {"id": "t2"})
            missing = await BY_ID.first(connection, {"id": "nope"})
            count = await COUNT.scalar(connection, {"shown": False})
            nulls = await BY_ID.first(connection, {"id": "t3"})
        assert row is not None and nulls is not None
        assert row["at"] == START + timedelta(minutes=2) and row["at"].tzinfo is UTC
        assert row["tags"] == {"n": 2, "names": ["a", "ü", "😀"], "nested": [None, 1.5]}
        assert row["shown"] is True and row["rank"] == 2
        assert nulls["at"] is None
        assert row["score"] == 52.52 + 2 / 7 and row["price"] == Decimal("2.25")
        assert missing is None
        assert count == 3


async def test_runs_in_the_read_transaction_on_inline_sqlite(tmp_path: object) -> None:
    """The read sees one snapshot: a row committed by another connection after the read's first statement is not
    seen by its second (the BEGIN is sent before the first statement, as SQLAlchemy would)."""
    path = f"{tmp_path}/snapshot.sqlite"
    async with things_database(f"sqlite:///{path}", ROWS[:2]) as db:
        async with db.read_connection() as connection:
            assert await COUNT.scalar(connection, {"shown": True}) == 1
            other = sqlite3.connect(path, isolation_level=None)
            other.execute(
                "INSERT INTO things (id, rank, shown, tags) VALUES ('late', 9, 1, ?)", (json.dumps({"n": 9}),)
            )
            other.close()
            assert await COUNT.scalar(connection, {"shown": True}) == 1
        async with db.read_connection() as connection:
            assert await COUNT.scalar(connection, {"shown": True}) == 2


async def test_missing_parameter_is_an_error(database_url: str) -> None:
    async with things_database(database_url, rows=()) as db, db.read_connection() as connection:
        with pytest.raises(KeyError):
            await BY_ID.rows(connection, {})


def test_text_without_columns_is_refused() -> None:
    with pytest.raises(TypeError, match="result columns"):
        FixedRead(text("SELECT 1"))._compiled(Database("sqlite:///:memory:").engine.dialect)


LOCKED = FixedWrite(select(things).where(things.c.id == bindparam("id")).with_for_update())
RERANK = FixedWrite(update(things).where(things.c.rank >= bindparam("from_rank")).values(rank=bindparam("rank")))


def _upsert(insert_of: Any) -> FixedWrite:
    statement = insert_of(things)
    return FixedWrite(statement.on_conflict_do_update(index_elements=[things.c.id], set_={"at": statement.excluded.at}))


UPSERT = {"sqlite": _upsert(sqlite_insert), "postgresql": _upsert(postgresql_insert)}


async def test_fixed_writes_read_and_write_as_sqlalchemy_in_the_transaction(database_url: str) -> None:
    """In a write transaction: the locking read gives SQLAlchemy's rows, the UPDATE and the upsert write what
    SQLAlchemy would (bind processors included), a rollback undoes them, and statement listeners see them."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    later = START + timedelta(days=1)
    async with things_database(database_url) as db:
        upsert = UPSERT[db.engine.dialect.name]
        async with db.writing() as connection:
            expected = [dict(row) for row in (await connection.execute(LOCKED.statement, {"id": "t2"})).mappings()]
            assert await LOCKED.rows(connection, {"id": "t2"}) == expected
            assert [list(row) for row in await LOCKED.values(connection, {"id": "t2"})] == [
                list(row.values()) for row in expected
            ]
        sqlalchemy_events.listen(db.engine.sync_engine, "before_cursor_execute", record)
        async with db.writing() as connection:
            assert await RERANK.execute(connection, {"from_rank": 4, "rank": 40}) == 2
            assert await upsert.execute(connection, {**ROWS[1], "at": later}) == 1
            assert await upsert.execute(connection, {**ROWS[0], "id": "new", "at": later}) == 1
        sqlalchemy_events.remove(db.engine.sync_engine, "before_cursor_execute", record)
        assert len(seen) == 3
        with pytest.raises(RuntimeError):
            async with db.writing() as connection:
                await RERANK.execute(connection, {"from_rank": 0, "rank": -1})
                raise RuntimeError("rolled back")
        async with db.read_connection() as connection:
            rows = {row["id"]: row for row in (await connection.execute(select(things))).mappings()}
        assert [rows[f"t{i}"]["rank"] for i in range(6)] == [0, 1, 2, 3, 40, 40]
        assert rows["t1"]["at"] == later and rows["t1"]["at"].tzinfo is UTC
        assert rows["new"]["at"] == later and rows["new"]["tags"] == ROWS[0]["tags"]


def _insert_new(insert_of: Any) -> FixedWrite:
    statement = insert_of(things).values({column.name: bindparam(column.name) for column in things.c})
    statement = statement.on_conflict_do_nothing(index_elements=[things.c.id])
    return FixedWrite(statement.returning(things.c.id, things.c.at))


INSERT_NEW = {"sqlite": _insert_new(sqlite_insert), "postgresql": _insert_new(postgresql_insert)}


async def test_execute_many_writes_and_returns_what_sqlalchemys_executemany_does(database_url: str) -> None:
    """Several rows in one call (on inline SQLite one sqlite3 call each, elsewhere SQLAlchemy's executemany): the
    same rows written, the same RETURNING rows (a conflicting row skipped), the same conversions."""
    new = [{**ROWS[0], "id": f"n{i}", "at": START + timedelta(hours=i)} for i in range(3)]
    async with things_database(database_url) as db:
        insert_new = INSERT_NEW[db.engine.dialect.name]
        async with db.writing() as connection:
            given = [ROWS[1], *new]  # t1 is there already: skipped
            twins = [{**row, "id": f"s{row['id']}"} for row in new]
            expected = (await connection.execute(insert_new.statement, [ROWS[1], *twins])).mappings()
            expected_rows = sorted(({**row, "id": row["id"][1:]} for row in expected), key=lambda row: row["id"])
            returned = await insert_new.execute_many(connection, given)
            assert await insert_new.execute_many(connection, []) == []
        assert sorted(returned, key=lambda row: row["id"]) == expected_rows
        assert [row["id"] for row in expected_rows] == ["n0", "n1", "n2"]
        assert all(row["at"].tzinfo is UTC for row in returned)
        async with db.read_connection() as connection:
            rows = {row["id"]: dict(row) for row in (await connection.execute(select(things))).mappings()}
        for row in new:
            assert rows[row["id"]] == {**rows[f"s{row['id']}"], "id": row["id"]} == row


async def test_fixed_writes_run_on_sqlite3_inside_the_kept_writers_transaction(tmp_path: object) -> None:
    """On an inline SQLite file the statements go to sqlite3 directly: SQLAlchemy begins no transaction of its own
    over the one `Database.writing` began (whose COMMIT then goes straight to sqlite3 too)."""
    async with things_database(f"sqlite:///{tmp_path}/writes.sqlite") as db:
        async with db.writing() as connection:
            assert (await LOCKED.rows(connection, {"id": "t1"}))[0]["rank"] == 1
            assert await RERANK.execute(connection, {"from_rank": 5, "rank": 50}) == 1
            assert not connection.in_transaction()
        async with db.read_connection() as connection:
            assert await COUNT.scalar(connection, {"shown": False}) == 3
            assert (await BY_ID.first(connection, {"id": "t5"}) or {})["rank"] == 50


@pytest.mark.parametrize(("read", "params"), CASES)
async def test_a_short_read_on_inline_sqlite_gives_sqlalchemys_rows_outside_any_transaction(
    tmp_path: object, read: FixedRead, params: dict[str, object]
) -> None:
    async with things_database(f"sqlite:///{tmp_path}/short.sqlite") as db:
        async with db.read_connection() as connection:
            expected = (await connection.execute(read.statement, params)).all()
        async with db.engine.connect() as connection:
            short = read.run(connection, params)
            # Its own read transaction, over once the rows are fetched: an open one would pin the WAL.
            assert not connection.sync_connection.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
        assert [tuple(row) for row in short] == [tuple(row) for row in expected]
        assert [row._asdict() for row in short] == [dict(row._mapping) for row in expected]


async def test_a_short_read_is_refused_on_other_drivers(database_url: str) -> None:
    db = Database(database_url.replace("sqlite://", "sqlite+aiosqlite://", 1))
    try:
        async with db.engine.connect() as connection:
            with pytest.raises(TypeError, match="inline SQLite only"):
                BY_ID.run(connection, {"id": "t1"})
    finally:
        await db.dispose()


# The fast processors (fixed_reads._fast_processor) against SQLAlchemy's own, value by value: what SQLAlchemy wrote,
# and text it did not (offsets, other separators, broken text), must come back the same or fail the same way.
SQLITE = sqlite_dialect()
ASYNCPG = asyncpg_dialect()
iso_like = st.text(alphabet="0123456789-:.+TZ ", max_size=32)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # big ones too: orjson would make a float of them
    | st.floats()  # NaN and infinities too: json.dumps writes them, only json.loads reads them
    | st.text(),  # lone surrogates too
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


def _outcome(process: Any, value: Any) -> tuple[str, Any]:
    try:
        result = process(value)
    except Exception as error:  # the same refusal is what is compared
        return ("error", type(error))
    return ("value", json.dumps(result, default=repr) if not isinstance(result, datetime) else (result, result.tzinfo))


def _both(type_: Any, dialect: Any) -> tuple[Any, Any]:
    fast = _fast_processor(type_, dialect)
    assert fast is not None
    return fast, type_._cached_result_processor(dialect, None)


@given(st.datetimes(timezones=st.just(UTC)) | st.datetimes(timezones=st.timezones()))
def test_a_time_sqlalchemy_wrote_to_sqlite_reads_back_as_sqlalchemy_reads_it(when: datetime) -> None:
    fast, general = _both(UtcDateTime(), SQLITE)
    stored = UtcDateTime()._cached_bind_processor(SQLITE)(when)  # type: ignore[misc]
    assert fast(stored) == general(stored) and fast(stored).tzinfo is general(stored).tzinfo is UTC


@given(iso_like | st.text(max_size=32))
@example("2026-12-01")  # a date alone: "+00:00" appended parses as a naive midnight
@example("2026-12-01 10:00")
@example("2026-12-01T10:00:00+02:00")
def test_any_text_in_a_sqlite_time_column_reads_as_sqlalchemy_reads_it(stored: str) -> None:
    fast, general = _both(UtcDateTime(), SQLITE)
    assert _outcome(fast, stored) == _outcome(general, stored)
    assert fast(None) is general(None) is None


@given(st.datetimes(timezones=st.timezones()) | st.datetimes())
def test_a_time_from_asyncpg_is_what_sqlalchemy_makes_of_it(when: datetime) -> None:
    fast, general = _both(UtcDateTime(), ASYNCPG)
    assert _outcome(fast, when) == _outcome(general, when)
    utc = when.replace(tzinfo=UTC)
    assert fast(utc) == general(utc) and fast(utc).tzinfo is general(utc).tzinfo is UTC


@given(json_values, st.booleans())
def test_json_sqlalchemy_wrote_to_sqlite_reads_back_as_sqlalchemy_reads_it(value: Any, ascii_only: bool) -> None:
    fast, general = _both(Json, SQLITE)
    stored = json.dumps(value, ensure_ascii=ascii_only)
    assert _outcome(fast, stored) == _outcome(general, stored)


@given(st.text(alphabet='[]{}",:0123456789.eE+- \\ntrufalsNIiy\t', max_size=40) | st.text(max_size=20))
def test_any_text_in_a_sqlite_json_column_reads_as_sqlalchemy_reads_it(stored: str) -> None:
    fast, general = _both(Json, SQLITE)
    assert _outcome(fast, stored) == _outcome(general, stored)
