"""On SQLite the events' nearby search reads its candidates from covering indexes (ix_events_nearby nearest first,
ix_events_upcoming_places soonest first) and the page's rows by their key: SQLite's plan (EXPLAIN QUERY PLAN) of
every statement the store runs, with the very parameters it ran them with, shows no scan of the events table.
Without statistics (no ANALYZE: the service never runs one), as in production."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy import insert

from gatherly.events import SERVICE
from gatherly.events.domain import EventSearch, EventStatus, Location, SearchOrder, unit_vector
from gatherly.events.store import EventStore
from gatherly.events.tables import events, group_summaries
from gatherly.kernel.db import Database
from gatherly.kernel.geo import distance_km
from gatherly.kernel.testing import DB_BACKENDS, migrated_database

BERLIN = Location(52.52, 13.405)


def _events(count: int) -> Iterator[dict[str, Any]]:
    """Upcoming events of one group: one in ten within ~40 km of Berlin, the rest over Europe."""
    rng = random.Random(11)
    now = datetime.now(UTC)
    for n in range(count):
        if n % 10:
            place = Location(rng.uniform(36, 60), rng.uniform(-9, 28))
        else:
            place = Location(BERLIN.lat + rng.uniform(-0.3, 0.3), BERLIN.lng + rng.uniform(-0.45, 0.45))
        x, y, z = unit_vector(place)
        starts = now + timedelta(hours=rng.uniform(1, 24 * 365))
        yield {
            "id": f"e{n}",
            "group_id": "g",
            "title": "Event",
            "description": "",
            "search_text": "event",
            "starts_at": starts,
            "ends_at": starts + timedelta(hours=1),
            "timezone": "UTC",
            "venue_name": "Venue",
            "venue_address": "",
            "lat": place.lat,
            "lng": place.lng,
            "x": x,
            "y": y,
            "z": z,
            "guest_limit": 0,
            "status": EventStatus.SCHEDULED.value,
            "sequence": 0,
            "going_count": 0,
            "waitlist_count": 0,
            "queue_counter": 0,
            "created_by": "u",
            "created_at": now,
            "updated_at": now,
        }


if "sqlite" in DB_BACKENDS:  # a SQLite plan: PostgreSQL's is test_postgis.py's

    @pytest.fixture
    async def many_events(tmp_path: Path) -> Any:
        async with migrated_database("sqlite", tmp_path, SERVICE.migrations) as db:
            async with db.writing() as connection:
                await connection.execute(
                    insert(group_summaries),
                    [{"group_id": "g", "slug": "g", "name": "Group", "visibility": "public", "topics": []}],
                )
                await connection.execute(insert(events), list(_events(20_000)))
            yield db

    @pytest.mark.parametrize(
        ("order", "index"),
        [(SearchOrder.DISTANCE, "ix_events_nearby"), (SearchOrder.START, "ix_events_upcoming_places")],
    )
    async def test_the_nearby_search_reads_covering_indexes_and_scans_no_table(
        many_events: Database, order: SearchOrder, index: str
    ) -> None:
        search = EventSearch(caller=None, starts_from=datetime.now(UTC), near=BERLIN, radius_km=50, order=order)
        statements: list[tuple[str, Any]] = []

        def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
            statements.append((statement, parameters))

        sqlalchemy_events.listen(many_events.engine.sync_engine, "before_cursor_execute", record)
        try:
            async with many_events.read_connection() as connection:
                found, _, position = await EventStore(connection).search(search, 20, None)
        finally:
            sqlalchemy_events.remove(many_events.engine.sync_engine, "before_cursor_execute", record)
        plans = []
        async with many_events.read_connection() as connection:
            for statement, parameters in statements:
                rows = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                plans.append([row[3] for row in rows])

        steps = [step for plan in plans for step in plan]
        assert not [s for s in steps if s.startswith("SCAN ")], plans  # no table or index read from end to end
        assert any(s.startswith(f"SEARCH events USING COVERING INDEX {index} ") for s in steps), plans
        # The page's whole rows, by their key.
        assert "SEARCH events USING INDEX sqlite_autoindex_events_1 (id=?)" in plans[-1], plans
        assert len(found) == 20 and position is not None
        for each in found:
            location, distance = (each["venue"] or {}).get("location"), each["distance_km"]
            assert location is not None and distance is not None
            assert distance == pytest.approx(distance_km(BERLIN, Location(**location)), rel=1e-6, abs=0.0005)
            assert distance <= 50
        if order is SearchOrder.DISTANCE:
            assert [f["distance_km"] for f in found] == sorted(f["distance_km"] for f in found)
        else:
            assert [f["starts_at"] for f in found] == sorted(f["starts_at"] for f in found)
