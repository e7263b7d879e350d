"""Benchmark: nearby event search over 100,000 events in embedded mode (one process, SQLite by default, or PostgreSQL
with PostGIS: `--database postgresql`), beside a baseline measured in the same run.

The events table is filled directly (a bulk insert with the columns the events store writes; scheduling 100,000
events through the API would only measure the inserts): half of the events cluster around 20 European cities
(as real meetups do), half spread over Europe, starting over the next year, in 200 public groups. Then, through
the HTTP API of the events service embedded in the gateway (httpx ASGITransport, no sockets; `--all-services` for
all five):

1. `GET /api/events?near=<city>&radius_km=50` (nearest first, first page of 20), at random cities, p50/p99;
2. the same with `sort=start` (soonest first within the radius: a page from the next upcoming events in start
   order, `store.SOONEST_SCAN` of them);
3. the same as it was before (`SOONEST_SCAN = 0`: every event within the radius read and ordered);
4. baseline: `GET /livez` (bare JSON) on the same server, p50/p99;
5. the store's query alone (nearest first, `EventStore.search` on a read connection: no HTTP, no JSON), p50/p99.

On both databases row 3 reads the whole radius: on PostgreSQL that is the GiST index and a sort of every event in
the radius, as the PostGIS search did before it walked the upcoming events (2026-11-30).

CPU time per request is reported too: the machine is shared, so wall-clock latency depends on the neighbours.
Appends a dated section to bench/reports/nearby_search.md (and prints it).

    uv run python bench/nearby_search.py [--events 100000] [--queries 500] [--all-services] [--database postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from gatherly.app.testing import running_gatherly
from gatherly.events import store
from gatherly.events.domain import EventSearch, EventStatus, Location, SearchOrder, unit_vector
from gatherly.events.tables import events, group_summaries

REPORT = Path(__file__).parent / "reports" / "nearby_search.md"
CITIES = [
    (52.52, 13.405), (48.137, 11.575), (53.551, 9.993), (50.938, 6.96), (50.11, 8.682), (48.856, 2.352),
    (51.507, -0.128), (40.417, -3.704), (41.387, 2.17), (45.464, 9.19), (41.903, 12.496), (52.37, 4.895),
    (50.85, 4.352), (48.208, 16.373), (50.075, 14.438), (52.23, 21.012), (47.498, 19.04), (55.676, 12.568),
    (59.329, 18.069), (47.377, 8.541),
]  # fmt: skip
GROUPS = 200


def _rows(count: int, now: datetime, rng: random.Random, group_ids: list[str]) -> Iterator[dict[str, Any]]:
    """The events, made one at a time (a million at once held gigabytes and the event loop for minutes)."""
    for index in range(count):
        if index % 2:
            lat, lng = rng.choice(CITIES)
            lat, lng = lat + rng.gauss(0, 0.2), lng + rng.gauss(0, 0.3)
        else:
            lat, lng = rng.uniform(36, 60), rng.uniform(-9, 28)
        starts = now + timedelta(hours=rng.uniform(1, 24 * 365))
        x, y, z = unit_vector(Location(lat, lng))
        yield (
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128))),
                "group_id": rng.choice(group_ids),
                "title": f"Event {index}",
                "description": "",
                "search_text": f"event {index}",
                "starts_at": starts,
                "ends_at": starts + timedelta(hours=2),
                "timezone": "Europe/Berlin",
                "venue_name": "Somewhere",
                "venue_address": "",
                "lat": lat,
                "lng": lng,
                "x": x,
                "y": y,
                "z": z,
                "guest_limit": 0,
                "status": EventStatus.SCHEDULED.value,
                "sequence": 0,
                "going_count": 0,
                "waitlist_count": 0,
                "queue_counter": 0,
                "created_by": "bench",
                "created_at": now,
                "updated_at": now,
            }
        )


async def _seed(gatherly: Any, count: int) -> None:
    now = datetime.now(UTC)
    rng = random.Random(11)
    group_ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(GROUPS)]
    rows = _rows(count, now, rng, group_ids)
    db = gatherly.process.host("events").context.db
    async with db.engine.begin() as connection:
        await connection.execute(
            insert(group_summaries),
            [
                {"group_id": g, "slug": f"g{i}", "name": f"Group {i}", "visibility": "public", "topics": []}
                for i, g in enumerate(group_ids)
            ],
        )
    # A transaction per chunk: one for a million rows (half an hour on a loaded machine) held the write lock from
    # the services' own tasks, and on PostgreSQL kept every new logical replication slot (Debezium's) waiting.
    while chunk := list(itertools.islice(rows, 5000)):
        async with db.engine.begin() as connection:
            await connection.execute(insert(events), chunk)
        await asyncio.sleep(0)  # the services' own tasks (pollers, pruners) get the loop between chunks
    async with db.engine.begin() as connection:
        await connection.exec_driver_sql("ANALYZE")


async def _timed(call: Callable[[], Awaitable[httpx.Response]], queries: int) -> tuple[list[float], float]:
    """Latencies in ms, one request at a time, and CPU ms per request."""
    latencies = []
    cpu = time.process_time()
    for _ in range(queries):
        started = time.perf_counter()
        response = await call()
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return latencies, (time.process_time() - cpu) * 1000 / queries


DATABASES = {"sqlite": "SQLite", "postgresql": "PostgreSQL 15 + PostGIS 3"}


async def _timed_queries(db: Any, rng: random.Random, queries: int) -> tuple[list[float], float]:
    """The events store's nearby query alone: latencies in ms and CPU ms per query (of this process: the
    database server's own CPU is not in it on PostgreSQL)."""
    latencies = []
    cpu = time.process_time()
    for _ in range(queries):
        lat, lng = rng.choice(CITIES)
        search = EventSearch(
            caller=None,
            starts_from=datetime.now(UTC),
            near=Location(lat, lng),
            radius_km=50,
            order=SearchOrder.DISTANCE,
        )
        started = time.perf_counter()
        async with db.read_connection() as connection:
            page = (await store.EventStore(connection).search(search, 20, None)).events
        latencies.append((time.perf_counter() - started) * 1000)
        assert len(page) == 20
    return latencies, (time.process_time() - cpu) * 1000 / queries


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run(count: int, queries: int, services: list[str] | None, database: str = "sqlite") -> str:
    rng = random.Random(7)
    found: list[int] = []
    with tempfile.TemporaryDirectory() as folder:
        async with running_gatherly(Path(folder) / "data", services, database_backend=database) as gatherly:
            seeding = time.perf_counter()
            await _seed(gatherly, count)
            seeded = time.perf_counter() - seeding
            client = gatherly.client

            async def nearby(sort: str) -> httpx.Response:
                lat, lng = rng.choice(CITIES)
                params: dict[str, str | int] = {"near": f"{lat},{lng}", "radius_km": 50, "sort": sort, "limit": 20}
                response = await client.get("/api/events", params=params)
                found.append(len(response.json()["items"]))
                return response

            for _ in range(20):  # warm-up: caches, the query planner, the first connections
                await nearby("distance")
                await client.get("/livez")
            results = {
                "nearby, nearest first": await _timed(lambda: nearby("distance"), queries),
                "nearby, soonest first": await _timed(lambda: nearby("start"), queries),
            }
            scan, store.SOONEST_SCAN = store.SOONEST_SCAN, 0
            try:
                results["nearby, soonest first, whole radius (before)"] = await _timed(lambda: nearby("start"), queries)
            finally:
                store.SOONEST_SCAN = scan
            results["baseline: `GET /livez`"] = await _timed(lambda: client.get("/livez"), queries)
            db = gatherly.process.host("events").context.db
            results["the store's query alone, nearest first"] = await _timed_queries(db, rng, queries)
    lines = [
        f"## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: nearby search over {count:,} events (embedded mode, "
        f"{DATABASES[database]})",
        "",
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"{count:,} scheduled events (half around 20 cities, half spread over Europe; seeded in {seeded:.1f} s), "
        f"{queries} requests per row, one at a time through the HTTP API in-process "
        f"({'the events service alone' if services else 'all five services'}), {datetime.now(UTC):%Y-%m-%d}. "
        f"Nearby pages held {min(found)} to {max(found)} of 20 events. Load average at the end (the machine is "
        f"shared): {_load()}.",
        "",
        "| request | p50 | p99 | max | CPU per request |",
        "|---|---|---|---|---|",
    ]
    for name, (latencies, cpu_ms) in results.items():
        lines.append(
            f"| {name} | {statistics.median(latencies):.1f} ms | {_percentile(latencies, 99):.1f} ms "
            f"| {max(latencies):.1f} ms | {cpu_ms:.1f} ms |"
        )
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument(
        "--all-services",
        action="store_true",
        help="run all five services in the process (their idle pollers share the CPU) instead of events alone",
    )
    parser.add_argument("--database", choices=sorted(DATABASES), default="sqlite")
    args = parser.parse_args()
    services = None if args.all_services else ["events"]
    report = asyncio.run(run(args.events, args.queries, services, args.database))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    with args.report.open("a") as appended:
        appended.write("\n" + report)
    print(report)


if __name__ == "__main__":
    main()
