"""Places as PostGIS geography points on PostgreSQL: the column that migrations add, and the nearby-search
expressions (within a radius, distance, nearest first) that its GiST index serves.

A service's table keeps its `lat` and `lng` columns on every database; on PostgreSQL a migration adds `location`, a
`geography(Point, 4326)` column generated from them (so no write path can let the two disagree) with a GiST index.
SQLite keeps the bounding-box search of geo.py. Distances here are on PostGIS's sphere (use_spheroid false), whose
radius is geo.EARTH_RADIUS_KM, so both databases find the same places at the same distances."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    RowMapping,
    Select,
    and_,
    cast,
    func,
    literal_column,
    or_,
    text,
)
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.selectable import NamedFromClause
from sqlalchemy.types import UserDefinedType

from gatherly.kernel.geo import LatLng

LOCATION = "location"  # the generated column's name
SRID = 4326  # WGS 84: longitude and latitude in degrees
DISTANCE = "distance_m"  # the label under which a nearest-first query selects its distance
# A tie's rows are found within this much more than their distance: ST_DWithin and `<->` compute the same sphere
# distance, but need not round it alike.
TIE_MARGIN_M = 1.0
# Planner settings for the nearest-first statement alone (set_config(..., true) is SET LOCAL; the second statement
# puts back the values the session had, from its configuration, before the transaction ends).
NEAREST_SETTINGS_SQL = "SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true)"
RESET_SETTINGS_SQL = "SELECT set_config(name, reset_val, true) FROM pg_settings WHERE name IN ('enable_sort', 'jit')"
SETTINGS_SQL = (NEAREST_SETTINGS_SQL, RESET_SETTINGS_SQL)
NEAREST_SETTINGS, RESET_SETTINGS = text(NEAREST_SETTINGS_SQL), text(RESET_SETTINGS_SQL)


class Geography(UserDefinedType[Any]):
    """PostGIS's `geography(Point, 4326)`."""

    cache_ok = True

    def __init__(self, *_reflected: Any) -> None:
        """Reflection passes the declared subtype and SRID (here always Point and 4326)."""

    def get_col_spec(self, **_: Any) -> str:
        return f"geography(Point, {SRID})"


# Reflection (Alembic's schema comparison) knows the type instead of warning that it does not.
ischema_names["geography"] = Geography


def create_extension_sql() -> str:
    # PostGIS is not a trusted extension: only a superuser (RDS: rds_superuser) may create it. `gatherly migrate`
    # runs as such a role, or an operator created it beforehand, and then this is a no-op for any role.
    return "CREATE EXTENSION IF NOT EXISTS postgis"


def add_location_sql(table: str) -> tuple[str, ...]:
    """Statements that add the generated `location` column of `table` (from its lat and lng) and its GiST index."""
    return (
        create_extension_sql(),
        f"ALTER TABLE {table} ADD COLUMN {LOCATION} geography(Point, {SRID})"
        f" GENERATED ALWAYS AS (ST_SetSRID(ST_MakePoint(lng, lat), {SRID})::geography) STORED",
        f"CREATE INDEX ix_{table}_{LOCATION} ON {table} USING gist ({LOCATION})",
    )


def drop_location_sql(table: str) -> tuple[str, ...]:
    return (f"DROP INDEX ix_{table}_{LOCATION}", f"ALTER TABLE {table} DROP COLUMN {LOCATION}")


def location_of(table: NamedFromClause) -> ColumnElement[Any]:
    """The `location` column of `table` (or of a subquery that selects it under that name), which the declared
    columns lack (it exists on PostgreSQL only)."""
    return literal_column(f"{table.name}.{LOCATION}", Geography())


def point(center: LatLng) -> ColumnElement[Any]:
    return cast(func.ST_SetSRID(func.ST_MakePoint(center.lng, center.lat), SRID), Geography())


def within(location: ColumnElement[Any], center: LatLng, radius_km: float) -> ColumnElement[bool]:
    """`location` is within `radius_km` of `center` (the GiST index finds the candidates)."""
    return within_m(location, center, radius_km * 1000.0)


def nearest_first(location: ColumnElement[Any], center: LatLng) -> ColumnElement[float]:
    """The distance in metres on the sphere, and an ORDER BY key that a GiST index scan yields in order (PostGIS's
    KNN operator `<->`, which on geography measures as ST_Distance(a, b, false) does)."""
    return location.op("<->", return_type=Float)(point(center))


def within_m(location: ColumnElement[Any], center: LatLng, metres: float) -> ColumnElement[bool]:
    return func.ST_DWithin(location, point(center), metres, False, type_=Boolean)


def measured_within(location: ColumnElement[Any], center: LatLng, radius_km: float) -> ColumnElement[bool]:
    """`location` is within `radius_km` of `center` by the distance that nearest_first measures: a test that costs
    the planner 40 times less than ST_DWithin's (which PostGIS declares as costly as 25 page reads per row, so a
    few thousand rows tested start JIT compilation: 130 ms for a 9 ms statement), but no index serves it alone."""
    return nearest_first(location, center) <= radius_km * 1000.0


def indexed_within(location: ColumnElement[Any], center: LatLng, radius_km: float) -> ColumnElement[bool]:
    """measured_within, with ST_DWithin (TIE_MARGIN_M wider, as the two need not round alike) for the GiST index to
    find the candidates: the same rows as measured_within finds."""
    return and_(
        within_m(location, center, radius_km * 1000.0 + TIE_MARGIN_M), measured_within(location, center, radius_km)
    )


async def nearest_page(
    connection: AsyncConnection | AsyncSession,
    query: Select[Any],
    *,
    location: ColumnElement[Any],
    center: LatLng,
    key: ColumnElement[Any],
    limit: int,
    after: tuple[float, Any] | None,
) -> Sequence[RowMapping]:
    """Up to `limit` + 1 rows of `query` nearest to `center` first, by `key` among rows at the same distance, from
    just after the position (distance in metres, key) `after`. `query` selects `nearest_first(location, center)`
    labelled DISTANCE, and `key`.

    The statement is ordered by the distance alone: that order is a walk of the GiST index nearest-first (a KNN
    index scan) which stops after a page, however many rows the radius holds. A second sort key would make
    PostgreSQL read every row within the radius and sort them (819 ms p99 over 100,000 events). The cursor is a
    bound of that walk (rows nearer than it are skipped inside the index scan). Rows at the same distance come out
    of the walk in no set order, so when the page ends amid such a tie, every row at that distance is read (from
    the index, within that distance) and they are put in `key` order here: pages never repeat nor skip a row.

    PostgreSQL underestimates how many rows ST_DWithin keeps (its statistics do not see places cluster in cities:
    122 estimated, 9,529 found) and then prefers reading every row in the radius and sorting them, 455 ms against
    2 ms for the walk over 200,000 events. Sorting is switched off for this one statement, so the order has to come
    from the index; so is JIT compilation, which the same estimates start for a wide radius (215 ms of compiling for
    a 1 ms walk). If the statement fails, the transaction's rollback undoes the settings."""
    distance = nearest_first(location, center)
    if after is not None:
        last_m, last_key = after
        query = query.where(or_(distance > last_m, and_(distance == last_m, key > last_key)))
    await connection.execute(NEAREST_SETTINGS)
    rows = list((await connection.execute(query.order_by(distance).limit(limit + 1))).mappings())
    await connection.execute(RESET_SETTINGS)
    if len(rows) >= 2 and len(rows) == limit + 1 and rows[-1][DISTANCE] == rows[-2][DISTANCE]:
        tied_m = rows[-1][DISTANCE]
        tied = query.where(within_m(location, center, tied_m + TIE_MARGIN_M), distance == tied_m)
        rows = [row for row in rows if row[DISTANCE] < tied_m] + list((await connection.execute(tied)).mappings())
    return sorted(rows, key=lambda row: (row[DISTANCE], row[key.name]))[: limit + 1]
