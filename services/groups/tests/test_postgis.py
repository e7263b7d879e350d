"""On PostgreSQL the nearby search runs on the PostGIS location (migration 0004) through its GiST index: the plans
of the very statements the store runs show the index, over enough groups that the planner prefers it, and the
groups found and their distances are the ones the haversine formula gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatherly.groups import SERVICE
from gatherly.groups.domain import GroupSearch, GroupSort, Location
from gatherly.groups.store import GroupStore
from gatherly.kernel.db import Database
from gatherly.kernel.geo import distance_km
from gatherly.kernel.testing import DB_BACKENDS, migrated_database, query_plans, walks_nearest_first

BERLIN = Location(52.52, 13.405)
# 60,000 groups spread over the globe and 3,000 around Berlin (within about 40 km).
INSERT_GROUPS = """
INSERT INTO groups (id, slug, name, description, search_text, topics, lat, lng, visibility, join_policy, questions,
                    name_key, member_count, created_at, updated_at)
SELECT 'g' || n, 'g' || n, 'Group', '', '', '[]', lat, lng, 'public', 'open', '[]', 'group', 1, now(), now()
FROM (SELECT n,
             CASE WHEN n <= 3000 THEN 52.52 + (random() - 0.5) * 0.7 ELSE random() * 170 - 85 END AS lat,
             CASE WHEN n <= 3000 THEN 13.405 + (random() - 0.5) * 1.1 ELSE random() * 360 - 180 END AS lng
      FROM generate_series(1, 63000) AS n) AS places
"""

if "postgresql" in DB_BACKENDS:  # a PostgreSQL plan: there is none to show on SQLite

    @pytest.fixture
    async def many_groups(tmp_path: Path) -> Any:
        async with migrated_database("postgresql", tmp_path, SERVICE.migrations) as db:
            async with db.writing() as connection:
                await connection.exec_driver_sql(INSERT_GROUPS)
            async with db.engine.connect() as connection:
                await connection.exec_driver_sql("COMMIT")
                await connection.exec_driver_sql("ANALYZE groups")
            yield db

    # Nearest first over a radius holding thousands, and another order over a small radius.
    @pytest.mark.parametrize(("sort", "radius_km"), [(GroupSort.DISTANCE, 50), (GroupSort.NEWEST, 10)])
    async def test_the_nearby_search_uses_the_gist_index(
        many_groups: Database, sort: GroupSort, radius_km: float
    ) -> None:
        search = GroupSearch(near=BERLIN, radius_km=radius_km, sort=sort)

        async def run(connection: Any) -> Any:
            return await GroupStore(connection).search(search, 20, None)

        (found, position), plans = await query_plans(many_groups, run)

        [plan] = plans
        assert "Index Scan using ix_groups_location" in plan or "Bitmap Index Scan on ix_groups_location" in plan, plan
        if sort is GroupSort.DISTANCE:
            # A walk of the index nearest-first that stops after the page; no Sort of every row in the radius.
            assert walks_nearest_first(plan, "ix_groups_location"), plan
        assert len(found) == 20 and position is not None
        for each in found:
            location, distance = each["location"], each["distance_km"]
            assert location is not None and distance is not None
            # As the list shows it: rounded to the metre.
            assert distance == pytest.approx(distance_km(BERLIN, Location(**location)), abs=0.0005 + 1e-9)
            assert distance <= radius_km
        if sort is GroupSort.DISTANCE:
            assert [f["distance_km"] for f in found] == sorted(f["distance_km"] for f in found)
