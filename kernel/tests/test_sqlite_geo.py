"""kernel/sqlite_geo.py: SQLite measures, float for float, the distance geo.distances_km measures (a nearby search on
SQLite orders and pages by it, and its cursors carry it), with SQLite's math functions or with Python's registered in
their place; and the connections a Database opens can run it, on both SQLite drivers."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import Column, Float, MetaData, String, Table, bindparam, insert, select
from sqlalchemy.dialects.sqlite.pysqlite import dialect as sqlite_dialect

from gatherly.kernel import sqlite_geo
from gatherly.kernel.db import Database
from gatherly.kernel.fixed_reads import FixedRead
from gatherly.kernel.geo import Point, distances_km

latitudes = st.floats(min_value=-90, max_value=90, allow_nan=False)
longitudes = st.floats(min_value=-180, max_value=180, allow_nan=False)
points = st.builds(Point, latitudes, longitudes)

metadata = MetaData()
places = Table(
    "places", metadata, Column("id", String(8), primary_key=True), Column("lat", Float), Column("lng", Float)
)
MEASURED = select(places.c.id, sqlite_geo.distance_km(places.c.lat, places.c.lng).label("km")).order_by(places.c.id)


def _compiled() -> tuple[str, list[str], dict[str, Any]]:
    compiled = MEASURED.compile(dialect=sqlite_dialect(paramstyle="qmark"))
    defaults = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
    return compiled.string, list(compiled.positiontup or ()), defaults


SQL, NAMES, DEFAULTS = _compiled()


def measured_in_sqlite(connection: sqlite3.Connection, center: Point, many: list[tuple[float, float]]) -> list[Any]:
    connection.execute("DELETE FROM places")
    connection.executemany("INSERT INTO places VALUES (?, ?, ?)", [(f"{n:04}", *p) for n, p in enumerate(many)])
    params = {**DEFAULTS, **sqlite_geo.center_params(center)}
    return [km for _, km in connection.execute(SQL, [params[name] for name in NAMES])]


@pytest.fixture(scope="module", params=["sqlite's math", "python's math"])
def connection(request: pytest.FixtureRequest) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE places (id TEXT PRIMARY KEY, lat DOUBLE, lng DOUBLE)")
    if request.param == "python's math":
        sqlite_geo.add_math_functions(connection)  # in place of SQLite's own, as on a build without them
    elif not sqlite_geo.HAS_MATH_FUNCTIONS:
        pytest.fail("this SQLite has no math functions: nothing to compare Python's with")
    yield connection
    connection.close()


@given(points, st.lists(st.tuples(latitudes, longitudes), max_size=8))
@example(Point(52.52, 13.405), [(52.52, 13.405), (52.3906, 13.0645), (51.3397, 12.3731), (0.0, 0.0)])
@example(Point(90.0, 0.0), [(-90.0, 180.0), (89.9, 180.0), (90.0, -180.0)])
@example(Point(-16.8, 179.99), [(-16.8, -179.95), (-16.8, 179.95), (16.8, -0.0)])
@example(Point(0.0, 0.0), [(0.0, 8.99), (5e-324, -5e-324), (1e-300, 180.0)])
def test_sqlite_measures_the_same_floats_as_geo(
    connection: sqlite3.Connection, center: Point, many: list[tuple[float, float]]
) -> None:
    assert measured_in_sqlite(connection, center, many) == distances_km(center, many)


def test_a_place_without_a_latitude_or_longitude_has_no_distance(connection: sqlite3.Connection) -> None:
    connection.execute("DELETE FROM places")
    connection.executemany("INSERT INTO places VALUES (?, ?, ?)", [("a", None, 1.0), ("b", 1.0, None)])
    params = {**DEFAULTS, **sqlite_geo.center_params(Point(1.0, 1.0))}
    assert [km for _, km in connection.execute(SQL, [params[name] for name in NAMES])] == [None, None]


@pytest.mark.parametrize("driver", ["sqlite", "sqlite+aiosqlite"])
@pytest.mark.parametrize("has_math_functions", [True, False])
async def test_a_database_connection_measures_as_geo_with_or_without_sqlite_math(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, driver: str, has_math_functions: bool
) -> None:
    # Without SQLite's math functions (monkeypatched: this build has them), Database registers Python's on every
    # connection it opens, on either driver; counting their calls shows they are the ones that ran.
    calls: list[str] = []

    def counted(name: str, function: Callable[..., float]) -> Callable[..., float]:
        def call(*arguments: float) -> float:
            calls.append(name)
            return function(*arguments)

        return call

    functions = {name: (n, counted(name, f)) for name, (n, f) in sqlite_geo.MATH_FUNCTIONS.items()}
    monkeypatch.setattr(sqlite_geo, "MATH_FUNCTIONS", functions)
    monkeypatch.setattr(sqlite_geo, "HAS_MATH_FUNCTIONS", has_math_functions)
    center, many = Point(52.52, 13.405), [(52.3906, 13.0645), (51.3397, 12.3731), (-33.9, 151.2)]
    database = Database(f"{driver}:///{tmp_path / 'places.db'}")
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            await connection.execute(
                insert(places), [{"id": f"{n:04}", "lat": lat, "lng": lng} for n, (lat, lng) in enumerate(many)]
            )
        read = FixedRead(MEASURED.where(places.c.id != bindparam("unused")))
        async with database.read_connection() as connection:
            rows = await read.rows(connection, {"unused": "", **sqlite_geo.center_params(center)})
    finally:
        await database.dispose()
    assert [row["km"] for row in rows] == distances_km(center, many)
    assert bool(calls) is not has_math_functions
