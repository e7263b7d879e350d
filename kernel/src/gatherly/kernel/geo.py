"""Distances on the Earth and the bounding box that lets an index narrow a "within r km" search (groups and
events services)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

# The mean radius of WGS 84's ellipsoid, (2a + b) / 3 (IUGG rounds it to 6371.0088): the sphere PostGIS measures on
# too (postgis.py), so the same search finds the same places on SQLite and PostgreSQL.
EARTH_RADIUS_KM = 6371.008771415059


# A number as a query parameter writes it: ASCII digits, a point, an exponent, spaces around (`near= 52.5 ,13.4`).
# Python's float() also reads `5_2` as 52 and digits of other scripts (full-width, Arabic-Indic), which no client
# means.
_DECIMAL = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)


def decimal_number(text: str) -> float:
    """`text` as a plain decimal number (`52.52`, `-0.5`, `1e1`), ValueError otherwise (`5_2`, other scripts' digits,
    `nan`, `inf`)."""
    if not _DECIMAL.fullmatch(text):
        raise ValueError(text)
    return float(text)


@dataclass(frozen=True)
class Point:
    lat: float
    lng: float


class LatLng(Protocol):
    """Anything with a latitude and a longitude in degrees (each service has its own location type)."""

    @property
    def lat(self) -> float: ...

    @property
    def lng(self) -> float: ...


def distance_km(a: LatLng, b: LatLng) -> float:
    """Great-circle distance (haversine), accurate to ~0.5% on the Earth's ellipsoid."""
    return distances_km(a, ((b.lat, b.lng),))[0]


def distances_km(center: LatLng, points: Iterable[tuple[float, float]]) -> list[float]:
    """`distance_km(center, point)` of each (lat, lng), the centre's part worked out once: a nearby search measures
    every candidate. One computation for both, so a distance is the same float whichever measured it (cursors
    carry it)."""
    radians, sin, cos, asin, sqrt = math.radians, math.sin, math.cos, math.asin, math.sqrt
    lat1 = radians(center.lat)
    cos1, lng1 = cos(lat1), center.lng
    found = []
    for lat, lng in points:
        lat2 = radians(lat)
        dlat = lat2 - lat1
        dlng = radians(lng - lng1)
        h = sin(dlat / 2) ** 2 + cos1 * cos(lat2) * sin(dlng / 2) ** 2
        found.append(2 * EARTH_RADIUS_KM * asin(min(1.0, sqrt(h))))
    return found


@dataclass(frozen=True)
class BoundingBox:
    """Every point within the radius lies inside: the latitude band and one or two longitude ranges (two when
    the circle crosses the antimeridian). Points inside may still be farther than the radius (the corners)."""

    min_lat: float
    max_lat: float
    lng_ranges: tuple[tuple[float, float], ...] = field(default=((-180.0, 180.0),))


def bounding_box(center: LatLng, radius_km: float) -> BoundingBox:
    angular = math.degrees(radius_km / EARTH_RADIUS_KM)
    min_lat, max_lat = center.lat - angular, center.lat + angular
    if min_lat <= -90.0 or max_lat >= 90.0:
        # The circle holds a pole: every longitude is within reach.
        return BoundingBox(max(min_lat, -90.0), min(max_lat, 90.0))
    # The widest longitude span is at the latitude where the circle touches its meridians (not the centre's).
    spread = math.asin(min(1.0, math.sin(radius_km / EARTH_RADIUS_KM) / math.cos(math.radians(center.lat))))
    dlng = math.degrees(spread)
    west, east = center.lng - dlng, center.lng + dlng
    if west < -180.0:
        return BoundingBox(min_lat, max_lat, ((west + 360.0, 180.0), (-180.0, east)))
    if east > 180.0:
        return BoundingBox(min_lat, max_lat, ((west, 180.0), (-180.0, east - 360.0)))
    return BoundingBox(min_lat, max_lat, ((west, east),))
