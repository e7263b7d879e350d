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


def test_distances_are_great_circle_distances_across_the_antimeridian_and_from_a_pole() -> None:
    berlin, paris = Point(52.52, 13.405), Point(48.8566, 2.3522)
    assert 876 < distance_km(berlin, paris) < 880
    assert distances_km(Point(0.0, 179.9), [(0.0, -179.9)])[0] < 22.3  # 0.2 degrees at the equator, not 359.8
    assert abs(distances_km(Point(90.0, 0.0), [(89.0, 123.0)])[0] - 111.2) < 0.1  # one degree from the pole
