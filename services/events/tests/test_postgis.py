"""On PostgreSQL the events' nearby search runs on the PostGIS location (migration 0008) through its GiST index: the
plan of the very statement the store runs shows the index, over enough events that the planner prefers it, and the
events found and their distances are the ones the haversine formula gives."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gatherly.events import SERVICE, store
from gatherly.events.domain import EventSearch, Location, SearchOrder
from gatherly.events.store import EventStore
from gatherly.kernel.db import Database
from gatherly.kernel.geo import distance_km
from gatherly.kernel.testing import DB_BACKENDS, migrated_database, query_plans, walks_nearest_first

BERLIN = Location(52.52, 13.405)
# The indexes that read the upcoming events in start order (either serves the walk; the planner picks).
START_ORDER_INDEX = re.compile(r"Index (Only )?Scan using (ix_events_upcoming_places|ix_events_starts_at_id) ")
# One public group; 60,000 upcoming events spread over the globe and 3,000 around Berlin (within about 40 km).
INSERT_EVENTS = (
    """INSERT INTO group_summaries (group_id, slug, name, visibility, topics)
       VALUES ('g', 'g', 'Group', 'public', '[]')""",
    """INSERT INTO events (id, group_id, title, description, search_text, starts_at, ends_at, timezone, venue_name,
                          lat, lng, guest_limit, status, sequence, going_count, waitlist_count, queue_counter,
                          created_by, created_at, updated_at)
       SELECT 'e' || n, 'g', 'Event', '', '', now() + n * interval '1 minute', now() + n * interval '1 minute'
              + interval '1 hour', 'UTC', 'Venue', lat, lng, 0, 'scheduled', 0, 0, 0, 0, 'u', now(), now()
       FROM (SELECT n,
                    CASE WHEN n % 21 = 0 THEN 52.52 + (random() - 0.5) * 0.7 ELSE random() * 170 - 85 END AS lat,
                    CASE WHEN n % 21 = 0 THEN 13.405 + (random() - 0.5) * 1.1 ELSE random() * 360 - 180 END AS lng
             FROM generate_series(1, 63000) AS n) AS places""",
)

if "postgresql" in DB_BACKENDS:  # a PostgreSQL plan: there is none to show on SQLite

    @pytest.fixture
    async def many_events(tmp_path: Path) -> Any:
        async with migrated_database("postgresql", tmp_path, SERVICE.migrations) as db:
            async with db.writing() as connection:
                for statement in INSERT_EVENTS:
                    await connection.exec_driver_sql(statement)
            async with db.writing() as connection:
                await connection.exec_driver_sql("ANALYZE events")
            yield db

    @pytest.mark.parametrize(("order", "radius_km"), [(SearchOrder.DISTANCE, 50), (SearchOrder.START, 5)])
    async def test_the_nearby_search_uses_the_gist_index(
        many_events: Database, order: SearchOrder, radius_km: float
    ) -> None:
        search = EventSearch(caller=None, starts_from=datetime.now(UTC), near=BERLIN, radius_km=radius_km, order=order)

        async def run(connection: Any) -> Any:
            return await EventStore(connection).search(search, 20, None)

        (found, _, position), plans = await query_plans(many_events, run)

        # Soonest first in 5 km, the next upcoming events walked in start order hold no page (about 1 in 400 of
        # them is that near): the radius is then read as a whole through the GiST index.
        plan = plans[-1]
        assert len(plans) == (1 if order is SearchOrder.DISTANCE else 2), plans
        assert "Index Scan using ix_events_location" in plan or "Bitmap Index Scan on ix_events_location" in plan, plan
        if order is SearchOrder.DISTANCE:
            # A walk of the index nearest-first that stops after the page; no Sort of every row in the radius.
            assert walks_nearest_first(plan, "ix_events_location"), plan
        _assert_page(found, position, radius_km, order)

    async def test_soonest_first_in_a_dense_radius_walks_the_upcoming_events_in_start_order(
        many_events: Database,
    ) -> None:
        """Berlin's 3,000 events are 1 in 21 of the upcoming ones: a page of them is found among the next
        SOONEST_SCAN in start order, one statement that reads a start-order index, sorts nothing, does not read the
        whole radius through the GiST index, and is not costed high enough to be JIT-compiled (ST_DWithin on every
        row walked was: 130 ms of compiling)."""
        search = EventSearch(
            caller=None, starts_from=datetime.now(UTC), near=BERLIN, radius_km=50, order=SearchOrder.START
        )

        async def run(connection: Any) -> Any:
            return await EventStore(connection).search(search, 20, None)

        (found, _, position), plans = await query_plans(many_events, run)

        [plan] = plans
        lines = plan.splitlines()
        [walk] = [n for n, line in enumerate(lines) if START_ORDER_INDEX.search(line)]
        assert "ix_events_location" not in plan and "Sort" not in plan and "JIT" not in plan, plan
        assert "->  Limit" in lines[walk - 1], plan  # the walk stops after SOONEST_SCAN events
        _assert_page(found, position, 50, SearchOrder.START)

    @pytest.mark.parametrize("radius_km", [5, 50])
    async def test_soonest_first_pages_are_the_whole_radius_s_pages(
        many_events: Database, radius_km: float, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The walk in start order finds the very pages (rows, order, cursors) that reading the whole radius and
        sorting it finds, page after page, whether the walk fills the page (50 km) or falls back to it (5 km)."""
        search = EventSearch(
            caller=None, starts_from=datetime.now(UTC), near=BERLIN, radius_km=radius_km, order=SearchOrder.START
        )

        async def pages() -> list[tuple[list[tuple[str, float | None]], Any]]:
            found_pages, position = [], None
            for _ in range(4):
                async with many_events.read_connection() as connection:
                    found, _, position = await EventStore(connection).search(search, 20, position)
                found_pages.append(([(each["id"], each["distance_km"]) for each in found], position))
                if position is None:
                    break
            return found_pages

        walked = await pages()
        monkeypatch.setattr(store, "SOONEST_SCAN", 0)  # no walk: every page from the whole radius
        whole = await pages()
        assert walked == whole
        assert len(walked) >= 2 and all(len(page) == 20 for page, _ in walked[:-1])

    def _assert_page(found: list[Any], position: Any, radius_km: float, order: SearchOrder) -> None:
        """A whole page within the radius, at the haversine formula's distances, in the order asked."""
        assert len(found) == 20 and position is not None
        for each in found:
            location, distance = (each["venue"] or {}).get("location"), each["distance_km"]
            assert location is not None and distance is not None
            # As the list shows it: rounded to the metre.
            assert distance == pytest.approx(distance_km(BERLIN, Location(**location)), abs=0.0005 + 1e-9)
            assert distance <= radius_km
        if order is SearchOrder.DISTANCE:
            assert [f["distance_km"] for f in found] == sorted(f["distance_km"] for f in found)
        else:
            assert [f["starts_at"] for f in found] == sorted(f["starts_at"] for f in found)

    # Many events at one venue (a recurring series' occurrences share it): their distance is one and the same float.
    INSERT_TIED_EVENTS = """
        INSERT INTO events (id, group_id, title, description, search_text, starts_at, ends_at, timezone, venue_name,
                            lat, lng, guest_limit, status, sequence, going_count, waitlist_count, queue_counter,
                            created_by, created_at, updated_at)
        SELECT 'e' || lpad(n::text, 3, '0'), 'g', 'Event', '', '', now() + n * interval '1 minute',
               now() + n * interval '1 minute' + interval '1 hour', 'UTC', 'Venue', lat, lng, 0, 'scheduled', 0, 0, 0,
               0, 'u', now(), now()
        FROM (SELECT n,
                     CASE WHEN n % 3 = 0 THEN 52.53 WHEN n % 7 = 0 THEN 52.60 ELSE 52.52 + n * 0.001 END AS lat,
                     CASE WHEN n % 3 = 0 THEN 13.41 WHEN n % 7 = 0 THEN 13.50 ELSE 13.405 END AS lng
              FROM generate_series(1, 150) AS n) AS places"""

    async def test_pages_nearest_first_neither_repeat_nor_skip_events_at_one_distance(tmp_path: Path) -> None:
        async with migrated_database("postgresql", tmp_path, SERVICE.migrations) as db:
            async with db.writing() as connection:
                await connection.exec_driver_sql(INSERT_EVENTS[0])
                await connection.exec_driver_sql(INSERT_TIED_EVENTS)
            search = EventSearch(
                caller=None, starts_from=datetime.now(UTC), near=BERLIN, radius_km=50, order=SearchOrder.DISTANCE
            )
            pages, position = [], None
            while True:
                async with db.read_connection() as connection:
                    found, _, position = await EventStore(connection).search(search, 20, position)
                pages.append([(each["distance_km"], each["id"]) for each in found])
                if position is None:
                    break
        seen = [each for page in pages for each in page]
        assert len(pages) == 8 and all(len(page) == 20 for page in pages[:-1])
        assert len(seen) == 150 and len({event_id for _, event_id in seen}) == 150
        # Nearest first, and by id among the 50 at one venue and the 14 at another: ties cross the pages' ends.
        assert seen == sorted(seen)
        assert sorted(Counter(distance for distance, _ in seen).values())[-2:] == [14, 50]
