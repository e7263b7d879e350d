"""geo.distances_km as a SQLite expression: a nearby search on SQLite can order its candidates by distance and take a
page of them inside SQLite, so only that page's rows become Python objects (the values sqlite3 makes of every row
fetched were most of the search's cost), and a cursor still carries the float the Python side would measure.

The expression repeats distances_km's operations, in the same order, on the same values: the centre's parts are
worked out in Python as distances_km works them out (`center_params`) and bound, and `sin`, `cos`, `asin`, `sqrt`
and `pow` are SQLite's math functions, which call the C library's functions that Python's math module and float
`**` call (kernel/tests/test_sqlite_geo.py requires the same float for any pair of points). A SQLite without them
(older than 3.35, or built without SQLITE_ENABLE_MATH_FUNCTIONS) gets Python's own, registered on each connection
under the same names (`add_math_functions`, called by `Database` when a connection opens)."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from contextlib import closing
from typing import Any

from sqlalchemy import ColumnElement, Float, bindparam, func

from gatherly.kernel.geo import EARTH_RADIUS_KM, LatLng

# math.radians(x) is x * (pi / 180), one multiplication: the same product here.
_DEGREE = bindparam("geo_degree", math.pi / 180, type_=Float)
_DIAMETER = bindparam("geo_diameter", 2 * EARTH_RADIUS_KM, type_=Float)  # distances_km's `2 * EARTH_RADIUS_KM`
_CENTER_LAT = bindparam("geo_center_lat", type_=Float)  # in radians
_CENTER_COS = bindparam("geo_center_cos", type_=Float)
_CENTER_LNG = bindparam("geo_center_lng", type_=Float)  # in degrees


def distance_km(lat: ColumnElement[Any], lng: ColumnElement[Any]) -> ColumnElement[float]:
    """The distance from the centre (bound by `center_params`) to (`lat`, `lng`), as geo.distances_km measures it:
    NULL where either is NULL."""
    # Products and sums are written left to right, as Python evaluates them: SQLAlchemy renders a grouped one without
    # its parentheses (`a * (b * c)` as `a * b * c`, which SQLite evaluates from the left), and rounding differs.
    lat2 = lat * _DEGREE
    dlat = lat2 - _CENTER_LAT
    dlng = (lng - _CENTER_LNG) * _DEGREE
    h = func.pow(func.sin(dlat / 2), 2) + _CENTER_COS * func.cos(lat2) * func.pow(func.sin(dlng / 2), 2)
    return _DIAMETER * func.asin(func.min(1.0, func.sqrt(h)), type_=Float)


def center_params(center: LatLng) -> dict[str, float]:
    """The bind parameters of `distance_km` for this centre."""
    lat1 = math.radians(center.lat)
    return {"geo_center_lat": lat1, "geo_center_cos": math.cos(lat1), "geo_center_lng": float(center.lng)}


# The functions the expression calls, by name and number of arguments.
MATH_FUNCTIONS: dict[str, tuple[int, Callable[..., float]]] = {
    "sin": (1, math.sin),
    "cos": (1, math.cos),
    "asin": (1, math.asin),
    "sqrt": (1, math.sqrt),
    "pow": (2, math.pow),
}


def _has_math_functions() -> bool:
    with closing(sqlite3.connect(":memory:")) as connection:
        try:
            connection.execute("SELECT sin(0), cos(0), asin(0), sqrt(0), pow(0, 2)")
        except sqlite3.OperationalError:
            return False
    return True


# One SQLite library serves every connection of the process (sqlite3's and aiosqlite's alike).
HAS_MATH_FUNCTIONS = _has_math_functions()


def add_math_functions(connection: Any) -> None:
    """Register Python's math functions on `connection` (sqlite3's, or SQLAlchemy's aiosqlite adapter) under the
    names of SQLite's: for a SQLite built without its own (slower, a call into Python per value, but the same
    floats)."""
    for name, (arguments, function) in MATH_FUNCTIONS.items():
        connection.create_function(name, arguments, _null_if_null(function), deterministic=True)


def _null_if_null(function: Callable[..., float]) -> Callable[..., float | None]:
    """As SQLite's own: NULL for a NULL argument (a place without a latitude or longitude)."""

    def call(*arguments: float | None) -> float | None:
        return None if None in arguments else function(*arguments)

    return call
