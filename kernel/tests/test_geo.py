"""kernel/geo.py: many distances from one centre are, float for float, the distances one by one (nearby searches
order and page by them: their cursors carry them)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gatherly.kernel.geo import Point, distance_km, distances_km

latitudes = st.floats(min_value=-90, max_value=90, allow_nan=False)
longitudes = st.floats(min_value=-180, max_value=180, allow_nan=False)
points = st.builds(Point, latitudes, longitudes)


@given(points, st.lists(st.tuples(latitudes, longitudes), max_size=8))
def test_distances_from_one_centre_are_exactly_the_distances_one_by_one(
    center: Point, many: list[tuple[float, float]]
) -> None:
    assert distances_km(center, many) == [distance_km(center, Point(lat, lng)) for lat, lng in many]


def test_a_distance_across_the_antimeridian_and_from_a_pole() -> None:
    places = [(0.0, 179.9), (89.99, -45.0), (52.52, 13.405)]
    for center in (Point(0.0, -179.9), Point(90.0, 0.0)):
        assert distances_km(center, places) == [distance_km(center, Point(*place)) for place in places]
