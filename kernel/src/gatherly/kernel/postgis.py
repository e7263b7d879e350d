"""Places as PostGIS geography points on PostgreSQL: the column that migrations add, and the nearby-search
expressions (within a radius, distance, nearest first) that its GiST index serves.

A service's table keeps its `lat` and `lng` columns on every database; on PostgreSQL a migration adds `location`, a
`geography(Point, 4326)` column generated from them (so no write path can let the two disagree) with a GiST index.
SQLite keeps the bounding-box search of geo.py. Distances here are on PostGIS's sphere (use_spheroid false), whose
radius is geo.EARTH_RADIUS_KM, so both databases find the same places at the same distances."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ColumnElement, Float, Table, cast, func, literal_column
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.types import UserDefinedType

from gatherly.kernel.geo import LatLng

LOCATION = "location"  # the generated column's name
SRID = 4326  # WGS 84: longitude and latitude in degrees


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


def location_of(table: Table) -> ColumnElement[Any]:
    """The `location` column of `table`, which its declared columns lack (it exists on PostgreSQL only)."""
    return literal_column(f"{table.name}.{LOCATION}", Geography())


def point(center: LatLng) -> ColumnElement[Any]:
    return cast(func.ST_SetSRID(func.ST_MakePoint(center.lng, center.lat), SRID), Geography())


def within(location: ColumnElement[Any], center: LatLng, radius_km: float) -> ColumnElement[bool]:
    """`location` is within `radius_km` of `center` (the GiST index finds the candidates)."""
    return func.ST_DWithin(location, point(center), radius_km * 1000.0, False, type_=Boolean)


def nearest_first(location: ColumnElement[Any], center: LatLng) -> ColumnElement[float]:
    """The distance in metres on the sphere, and an ORDER BY key that a GiST index scan yields in order (PostGIS's
    KNN operator `<->`, which on geography measures as ST_Distance(a, b, false) does)."""
    return location.op("<->", return_type=Float)(point(center))
