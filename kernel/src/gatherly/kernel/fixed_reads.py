"""Fixed-shape reads on the driver's own connection: a Core statement compiled once per dialect, run by sqlite3 or
asyncpg directly, its rows converted by the columns' own result processors.

Why: SQLAlchemy's per-statement execution path (cache-key generation and lookup, an execution context, a greenlet
switch, events, the result's set-up) cost ~0.2-0.5 ms per statement on the 2-core reference machine, while the
statement itself takes a few µs in sqlite3 (docs/request-path.md). A `FixedRead` keeps the one definition of a
query in SQLAlchemy (with `bindparam()`s) and skips that path:

- compiled once per dialect to SQL text, the order of its positional parameters, their bind processors and the
  result columns' processors (the same conversions SQLAlchemy applies: UTC datetimes, JSON, booleans);
- run on inline SQLite straight on the sqlite3 connection (in the read transaction `Database.read_connection`
  opens), on PostgreSQL with asyncpg's `fetch` on the pooled connection (asyncpg prepares and caches the
  statement); on any other driver (aiosqlite) through SQLAlchemy, with the same result shape;
- rows come back as plain dicts keyed like SQLAlchemy's `RowMapping`; or (`raw`) as the driver gave them, any of
  them made such dicts when asked, for a read that keeps a few of many rows (the nearby search's candidates);
- or (`values`) as lists of values, where columns named `unconverted` are left as the driver gave them, for a
  column a read needs of one row only (a page's cursor reads the last row's time: `raw`'s `convert` gives that row
  whole);
- or, with `run` on inline SQLite, as named tuples read outside any transaction: the SELECT is its own short read
  transaction, over once its rows are fetched, so nothing pins the WAL and no rollback is needed to end it (for a
  read repeated on every commit: the relay's).

For reads only: on PostgreSQL the statement runs on the connection whether or not SQLAlchemy has sent its BEGIN
yet, which is the same snapshot rule as inside a READ COMMITTED transaction (each statement sees what was committed
before it), but not a place for locking reads. Errors are the driver's own (sqlite3.Error, asyncpg's), which the
kernel's 500/503 guard treats like SQLAlchemy's (`web.database_unreachable`). `rows` tells SQLAlchemy's
`before_cursor_execute` listeners (tests counting statements) of each statement it runs, as FixedWrite does."""

from __future__ import annotations

import json
import re
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import JSON
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

from gatherly.kernel import inline_sqlite
from gatherly.kernel.tables import UtcDateTime

Row = dict[str, Any]
_Processor = Callable[[Any], Any] | None

# SQLAlchemy marks parameters rendered per execution (expanding IN lists, literal lists) with this in the SQL text.
_POSTCOMPILE = "__[POSTCOMPILE_"


@dataclass
class _Compiled:
    dialect: Dialect
    compiled: SQLCompiler
    sql: str
    names: tuple[str, ...]  # the positional parameters' names, in order
    binds: Mapping[str, Any]  # bind processors by parameter name (only those that have one)
    defaults: Mapping[str, Any]  # values bound in the statement itself (literals turned into parameters)
    keys: tuple[str, ...]  # result column keys, as RowMapping names them (distinct: FixedRead._compiled checks)
    results: tuple[_Processor, ...] | None  # result processors, aligned with keys (None: not known yet)
    expands: bool  # has parameters rendered per call (IN lists)
    unconverted: frozenset[str]  # columns convert_values leaves as the driver gave them (FixedRead's `unconverted`)
    tuple_row: Any = field(init=False)  # the named tuple `run` gives rows as
    positions: Mapping[str, int] = field(init=False)  # each result column's position in a raw row, by key
    processed: list[tuple[str, int, Callable[[Any], Any]]] = field(init=False, default_factory=list)
    processed_values: list[tuple[str, int, Callable[[Any], Any]]] = field(init=False, default_factory=list)
    processed_for: Any = field(init=False, default=None)  # the `results` that `processed` was made from

    def __post_init__(self) -> None:
        self.tuple_row = namedtuple("FixedRow", self.keys)  # type: ignore[misc]
        self.positions = {key: index for index, key in enumerate(self.keys)}

    def arguments(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        if self.expands:
            state = self.compiled.construct_expanded_state(dict(params))
            processors: Mapping[str, Any] = state.processors
            values = []
            for name in state.positiontup or ():
                value = state.parameters[name]
                process: Any = processors.get(name)
                values.append(value if process is None else process(value))
            return state.statement, values
        values = []
        for name in self.names:
            value = params[name] if name in params else self.defaults[name]
            process = self.binds.get(name)
            values.append(value if process is None else process(value))
        return self.sql, values

    def convert(self, raws: Iterable[Any]) -> list[Row]:
        """The driver's rows as dicts: each made from the raw row in one C call, then only its columns that have a
        processor (a few: JSON, datetimes) converted in Python, rather than every column tested row by row."""
        keys, processed, rows = self.keys, self._processed(), []
        for raw in raws:
            row = dict(zip(keys, raw, strict=True))
            for key, index, process in processed:
                row[key] = process(raw[index])
            rows.append(row)
        return rows

    def convert_values(self, raws: Iterable[Any]) -> list[Sequence[Any]]:
        """The driver's rows as lists of values in column order, converted as `convert` converts them but for the
        `unconverted` columns, left as the driver gave them."""
        self._processed()
        processed = self.processed_values
        rows: list[Sequence[Any]] = []
        for raw in raws:
            values = list(raw)
            for _, index, process in processed:
                values[index] = process(values[index])
            rows.append(values)
        return rows

    def _processed(self) -> list[tuple[str, int, Callable[[Any], Any]]]:
        """The columns that have a result processor: (key, index, processor)."""
        assert self.results is not None
        if self.processed_for is not self.results:
            self.processed = [
                (key, index, process)
                for index, (key, process) in enumerate(zip(self.keys, self.results, strict=True))
                if process is not None
            ]
            self.processed_values = [entry for entry in self.processed if entry[0] not in self.unconverted]
            self.processed_for = self.results
        return self.processed

    def sqlite_results(self) -> tuple[_Processor, ...]:
        """The result processors on sqlite3, worked out on first use: it reports no column types (pysqlite gives
        SQLAlchemy None for each as well)."""
        if self.results is None:
            self.results = self.result_processors([None] * len(self.keys))
        return self.results

    def result_processors(self, driver_types: list[Any]) -> tuple[_Processor, ...]:
        columns = self.compiled._result_columns
        return tuple(
            _fast_processor(column.type, self.dialect)
            or column.type._cached_result_processor(self.dialect, driver_type)
            for column, driver_type in zip(columns, driver_types, strict=True)
        )


def _fast_processor(type_: TypeEngine[Any], dialect: Dialect) -> _Processor:
    """A cheaper processor giving exactly what SQLAlchemy's would, for the columns every list row has: UTC times and,
    on SQLite, JSON text. None: use SQLAlchemy's. SQLAlchemy's chain for a UTC time on SQLite is three calls (its
    processor, the driver type's, `process_result_value`) and a `replace(tzinfo=)`, ~4 µs a value against ~0.5;
    its JSON is `json.loads`, ~5 µs for a list of two topics against ~1 with orjson (test_fixed_reads.py pins both
    against SQLAlchemy's own)."""
    if isinstance(type_, UtcDateTime):
        impl = type_.impl_instance.dialect_impl(dialect)
        if dialect.name == "sqlite" and isinstance(impl, SQLITE_DATETIME) and impl._reg is None:
            return utc_from_sqlite_text(type_._cached_result_processor(dialect, None))
        if dialect.driver == "asyncpg":
            return utc_from_asyncpg(type_._cached_result_processor(dialect, None))
        return None
    json_loads = getattr(dialect, "_json_deserializer", None) is None  # SQLAlchemy's default: json.loads
    if dialect.name == "sqlite" and json_loads and isinstance(type_.dialect_impl(dialect), JSON):
        return json_from_sqlite_text
    return None


def utc_from_sqlite_text(general: _Processor) -> Callable[[Any], Any]:
    """SQLite keeps a time as naive text (SQLAlchemy writes it as UTC, `2026-12-01 03:51:27.123456`): parsed with an
    explicit UTC offset in one C call. Anything else (text with an offset of its own, or not text) goes through
    SQLAlchemy's `general` processor, so the answer is its answer."""
    assert general is not None
    parse = datetime.fromisoformat

    def process(value: Any) -> Any:
        if value is None:
            return None
        try:
            parsed = parse(value + "+00:00")
        except (TypeError, ValueError):
            return general(value)
        # A date alone ("2026-12-01", written by raw SQL) parses too, with "+" read as the date and time's separator
        # and "00:00" as the time: naive, where SQLAlchemy's answer is midnight UTC.
        return parsed if parsed.tzinfo is not None else general(value)

    return process


def utc_from_asyncpg(general: _Processor) -> Callable[[Any], Any]:
    """asyncpg gives a timestamptz as an aware datetime in UTC already: kept as it is, rather than converted to the
    same value again (`astimezone`); any other value through SQLAlchemy's `general` processor."""
    assert general is not None

    def process(value: Any) -> Any:
        if value is None or (value.__class__ is datetime and value.tzinfo is UTC):
            return value
        return general(value)

    return process


# orjson turns an integer literal beyond 64 bits into a float, where json.loads keeps it whole: text holding a run of
# 19 digits or more (2**63 has 19) is left to json.loads. Text orjson refuses (NaN, Infinity, an escaped lone
# surrogate), json.loads reads as SQLAlchemy would.
_LONG_DIGITS = re.compile(r"\d{19}")


def json_from_sqlite_text(value: Any) -> Any:
    """SQLAlchemy's JSON result processor on SQLite (`json.loads` of the text), by orjson where that is the same."""
    if value is None:
        return None
    if _LONG_DIGITS.search(value) is None:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    return json.loads(value)


class RawRows(NamedTuple):
    """A read's rows as the driver gave them (tuples or records), and `convert`, which makes any of them the dicts
    `FixedRead.rows` gives (its columns' conversions applied). A raw row's column is found by key in `positions`;
    its value there is the driver's (on SQLite, JSON and times are still text), except through SQLAlchemy's path
    (ORM sessions, aiosqlite), where the rows come converted already. `convert_values` makes them `values`' lists
    (the read's `unconverted` columns left as they are). A named tuple: `rows` makes one per read."""

    raws: Sequence[Sequence[Any]]
    positions: Mapping[str, int]
    convert: Callable[[Iterable[Sequence[Any]]], list[Row]]
    convert_values: Callable[[Iterable[Sequence[Any]]], list[Sequence[Any]]]  # the same, as values in column order


def _as_they_are(keys: tuple[str, ...], converted: Sequence[Sequence[Any]]) -> RawRows:
    """Rows SQLAlchemy has converted already: `convert` only keys them."""
    return RawRows(
        converted,
        {key: index for index, key in enumerate(keys)},
        lambda raws: [dict(zip(keys, raw, strict=True)) for raw in raws],
        lambda raws: [list(raw) for raw in raws],
    )


class FixedRead:
    """One read statement of fixed shape, run without SQLAlchemy's execution path (see the module's docstring).

    `statement` is a Core select (or text() with `.columns()`), its variable values `bindparam()`s; `rows`,
    `first` and `scalar` take those values by name. `unconverted` names result columns that `values` leaves as the
    driver gave them (on SQLite a time's text, where its conversion is a parse): for a column that a hot read needs
    of one row only, which it converts with `raw`'s `convert` (a page's cursor, made of the last row's time). On
    SQLAlchemy's path (ORM sessions, aiosqlite) they come converted, as every column does."""

    # A read must name its result columns (rows come back keyed by them); a write (FixedWrite) may have none.
    _needs_columns = True

    def __init__(self, statement: Executable, *, unconverted: Iterable[str] = ()) -> None:
        self.statement = statement
        self.unconverted = frozenset(unconverted)
        self._by_dialect: dict[int, _Compiled] = {}

    def _compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(id(dialect))
        if found is not None and found.dialect is dialect:
            return found
        assert isinstance(self.statement, ClauseElement)
        compiled = self.statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        if not compiled.positional:
            raise TypeError(
                f"FixedRead needs a positional paramstyle; {dialect.name} uses {compiled.dialect.paramstyle}"
            )
        columns = compiled._result_columns
        if not columns and self._needs_columns:
            raise TypeError("FixedRead needs the statement's result columns (for text(), give them with .columns())")
        keys = tuple(column.keyname for column in columns)
        if len(set(keys)) != len(keys):
            raise TypeError(f"FixedRead needs distinct column names (label them): {keys}")
        if not self.unconverted <= set(keys):
            raise TypeError(f"FixedRead's unconverted columns are not among its columns: {sorted(self.unconverted)}")
        made = _Compiled(
            dialect=dialect,
            compiled=compiled,
            sql=compiled.string,
            names=tuple(compiled.positiontup or ()),
            binds=dict(compiled._bind_processors),
            defaults={name: bind.value for name, bind in compiled.binds.items() if not bind.required},
            keys=keys,
            results=None,
            expands=_POSTCOMPILE in compiled.string,
            unconverted=self.unconverted,
        )
        self._by_dialect[id(dialect)] = made
        return made

    async def rows(
        self, connection: AsyncConnection | AsyncSession, params: Mapping[str, Any] | None = None
    ) -> list[Row]:
        """Every row the statement gives, as dicts keyed by column. On an ORM session (tools, tests) the statement
        runs through SQLAlchemy."""
        found = await self.raw(connection, params)
        return found.convert(found.raws)

    async def values(
        self, connection: AsyncConnection | AsyncSession, params: Mapping[str, Any] | None = None
    ) -> list[Sequence[Any]]:
        """Every row the statement gives as its values in column order, converted as `rows` converts them (but for
        the `unconverted` columns): for a hot read that unpacks its rows, without a dict made and read per row (a
        list's twenty rows of fifteen columns: ~25 µs as dicts, ~9 as values)."""
        found = await self.raw(connection, params)
        return found.convert_values(found.raws)

    async def raw(self, connection: AsyncConnection | AsyncSession, params: Mapping[str, Any] | None = None) -> RawRows:
        """The rows as the driver gave them, converted to `rows`' dicts only when asked (`RawRows.convert`): for a
        read that keeps a few of many rows after looking at a column or two of each, which then pays the columns'
        conversions (JSON, times) for the rows it keeps only."""
        given = params or {}
        if isinstance(connection, AsyncSession):
            result = await connection.execute(self.statement, dict(given))
            return _as_they_are(tuple(result.keys()), result.all())
        compiled = self._compiled(connection.dialect)
        sync = connection.sync_connection
        assert sync is not None
        driver = sync.connection.driver_connection
        if isinstance(driver, inline_sqlite.InlineConnection):
            compiled.sqlite_results()
            if not driver.in_transaction and not sync.in_transaction():
                # The read transaction's BEGIN, as SQLAlchemy's first statement would send it (a kept reader's
                # transaction is begun already, straight on sqlite3: `Database.read_connection`).
                sync.begin()
            sql, values = compiled.arguments(given)
            _tell_listeners(sync, sql, values)
            return RawRows(
                driver.execute(sql, values).fetchall(), compiled.positions, compiled.convert, compiled.convert_values
            )
        if connection.dialect.driver == "asyncpg":
            sql, values = compiled.arguments(given)
            _tell_listeners(sync, sql, values)
            if compiled.results is None:
                # Some processors depend on the column's PostgreSQL type (numeric or float): asyncpg's prepared
                # statement (cached by asyncpg for the fetch below) names them.
                prepared = await driver.prepare(sql)  # type: ignore[union-attr]
                compiled.results = compiled.result_processors([a.type.oid for a in prepared.get_attributes()])
            fetched = await driver.fetch(sql, *values)  # type: ignore[union-attr]
            return RawRows(fetched, compiled.positions, compiled.convert, compiled.convert_values)
        result = await connection.execute(self.statement, dict(given))
        return _as_they_are(compiled.keys, result.fetchall())

    def run(self, connection: AsyncConnection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """The rows as named tuples, read straight on an inline-SQLite connection that must not be inside a
        transaction: the SELECT is its own read transaction, ended when its rows are fetched (see the module's
        docstring). Synchronous, like the sqlite3 call it makes."""
        compiled = self._compiled(connection.dialect)
        sync = connection.sync_connection
        assert sync is not None
        driver = sync.connection.driver_connection
        if not isinstance(driver, inline_sqlite.InlineConnection):
            raise TypeError(f"FixedRead.run reads on inline SQLite only, not on {connection.dialect.driver}")
        assert not driver.in_transaction, "a short read runs in a read transaction of its own"
        sql, values = compiled.arguments(params or {})
        make, results = compiled.tuple_row._make, compiled.sqlite_results()
        return [
            make(value if process is None else process(value) for value, process in zip(raw, results, strict=True))
            for raw in driver.execute(sql, values).fetchall()
        ]

    async def first(
        self, connection: AsyncConnection | AsyncSession, params: Mapping[str, Any] | None = None
    ) -> Row | None:
        found = await self.rows(connection, params)
        return found[0] if found else None

    async def scalar(self, connection: AsyncConnection | AsyncSession, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row (None when there is no row)."""
        row = await self.first(connection, params)
        return None if row is None else next(iter(row.values()))


class FixedWrite(FixedRead):
    """A fixed-shape statement of a write transaction (a locking read, an UPDATE, an upsert), compiled once like a
    `FixedRead`. On inline SQLite it runs straight on sqlite3 inside the transaction `Database.writing` began there
    (the process's write lock is held, so nothing in it waits); on every other driver through SQLAlchemy, inside
    SQLAlchemy's transaction, where PostgreSQL's row locks must be taken (asyncpg's own `fetch` could run before
    SQLAlchemy's BEGIN). For the few statements on every RSVP's path: SQLAlchemy's execution path cost several times
    what SQLite takes for each of them.

    SQLAlchemy's `before_cursor_execute` listeners, when there are any (tests and benchmarks counting statements),
    are told about each statement run directly, with the cursor and context given as None."""

    _needs_columns = False

    async def rows(
        self, connection: AsyncConnection | AsyncSession, params: Mapping[str, Any] | None = None
    ) -> list[Row]:
        """The rows the statement gives (a locking read, RETURNING), as dicts keyed by column."""
        given = params or {}
        direct = _inline_in_transaction(connection)
        if direct is None:
            result = await connection.execute(self.statement, dict(given))
            return [dict(row) for row in result.mappings()]
        assert isinstance(connection, AsyncConnection)
        compiled = self._compiled(connection.dialect)
        compiled.sqlite_results()
        return compiled.convert(self._execute(connection, direct, compiled, given).fetchall())

    async def values(
        self, connection: AsyncConnection | AsyncSession, params: Mapping[str, Any] | None = None
    ) -> list[Sequence[Any]]:
        """The rows as `rows` gives them (where a write's statement must run), as their values in column order."""
        return [list(row.values()) for row in await self.rows(connection, params)]

    async def execute(self, connection: AsyncConnection | AsyncSession, params: Mapping[str, Any] | None = None) -> int:
        """Run the statement; returns the rows it touched."""
        given = params or {}
        direct = _inline_in_transaction(connection)
        if direct is None:
            return int(getattr(await connection.execute(self.statement, dict(given)), "rowcount", 0) or 0)
        assert isinstance(connection, AsyncConnection)
        return int(self._execute(connection, direct, self._compiled(connection.dialect), given).rowcount)

    async def execute_many(
        self, connection: AsyncConnection | AsyncSession, params: Sequence[Mapping[str, Any]]
    ) -> list[Row]:
        """Run the statement once per set of values (an INSERT of several rows); returns the rows RETURNING gave
        for all of them (none without RETURNING). On inline SQLite one sqlite3 call per set, inside the transaction;
        elsewhere one executemany through SQLAlchemy (one round trip on PostgreSQL, not one per row)."""
        if not params:
            return []
        direct = _inline_in_transaction(connection)
        if direct is None:
            result = await connection.execute(self.statement, [dict(given) for given in params])
            return [dict(row) for row in result.mappings()] if result.returns_rows else []  # type: ignore[attr-defined]
        assert isinstance(connection, AsyncConnection)
        compiled = self._compiled(connection.dialect)
        compiled.sqlite_results()
        returned: list[Row] = []
        for given in params:
            written = self._execute(connection, direct, compiled, given)
            returned.extend(compiled.convert(written.fetchall()))
        return returned

    @staticmethod
    def _execute(
        connection: AsyncConnection,
        driver: inline_sqlite.InlineConnection,
        compiled: _Compiled,
        params: Mapping[str, Any],
    ) -> Any:
        sql, values = compiled.arguments(params)
        sync = connection.sync_connection
        assert sync is not None
        _tell_listeners(sync, sql, values)
        return driver.execute(sql, values)


def _tell_listeners(sync: Any, sql: str, values: list[Any]) -> None:
    """SQLAlchemy's `before_cursor_execute` listeners, when there are any (tests and benchmarks counting or
    explaining statements), are told about a statement run directly, with the cursor and context given as None and
    the parameters as a tuple (one set of them, as `exec_driver_sql` takes it)."""
    if sync.dispatch.before_cursor_execute:
        for listener in sync.dispatch.before_cursor_execute:
            listener(sync, None, sql, tuple(values), None, False)


def _inline_in_transaction(connection: AsyncConnection | AsyncSession) -> inline_sqlite.InlineConnection | None:
    """The sqlite3 connection under `connection` when it is inline SQLite inside a transaction, else None."""
    if not isinstance(connection, AsyncConnection) or connection.sync_connection is None:
        return None
    driver = connection.sync_connection.connection.driver_connection
    if isinstance(driver, inline_sqlite.InlineConnection) and driver.in_transaction:
        return driver
    return None
