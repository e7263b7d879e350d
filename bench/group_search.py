"""Group text search (`GET /api/groups?q=`) over many groups: the old LIKE scan against the index (migration 0002).

Fills one groups database with generated groups, then times a page of search results (the store's query, as the
API runs it) with the substring LIKE the search used before and with the index, and writes
bench/reports/group_search.md. On SQLite each query runs on the event loop's thread, so its time is also how
long it blocks every other request of the process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from alembic import command
from sqlalchemy import Connection, insert, text

from gatherly.groups import SERVICE
from gatherly.groups.domain import GroupDetails, GroupSearch, details_from, search_text
from gatherly.groups.store import GroupStore, reading
from gatherly.groups.tables import groups
from gatherly.kernel.db import Database, alembic_config
from gatherly.kernel.testing import scratch_database

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("hiking", "books", "python", "chess", "climbing", "cooking", "photography", "jazz", "running", "film")
QUERIES = {
    "rare (`quokka`, 10 groups)": "quokka",
    "common (`hiking`, ~30% of groups)": "hiking",
    "absent (`zzzyx`)": "zzzyx",
}


def _details(rng: random.Random, n: int) -> GroupDetails:
    words = rng.sample(WORDS, 3)
    rare = " quokka" if n % (args.groups // 10) == 0 else ""
    return details_from(name=f"{words[0].title()} club {n}", description=f"We love {words[1]} and {words[2]}{rare}.")


async def fill(db: Database, count: int) -> None:
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for first in range(0, count, 5000):
        rows: list[dict[str, Any]] = []
        for n in range(first, min(first + 5000, count)):
            details = _details(rng, n)
            at = start + timedelta(seconds=n)
            rows.append(
                {
                    "id": f"00000000-0000-4000-8000-{n:012d}",
                    "slug": f"group-{n}",
                    "name": details.name,
                    "description": details.description,
                    "search_text": search_text(details),
                    "topics": [],
                    "visibility": "public",
                    "join_policy": "open",
                    "questions": [],
                    "member_count": 1,
                    "created_at": at,
                    "updated_at": at,
                }
            )
        async with db.writing() as session:
            await session.execute(insert(groups), rows)


async def time_search(db: Database, query: str, *, indexed: bool, runs: int) -> tuple[float, float, int]:
    """Median and worst milliseconds of one page (20) of results, and how many the page had."""
    timings = []
    found = 0
    for _ in range(runs):
        started = time.perf_counter()
        async with reading(db) as stores:
            if indexed:
                page, _ = await stores.groups.search(GroupSearch(text=query), 20, None)
            else:

                async def like(_: GroupStore, folded: str) -> Any:
                    return groups.c.search_text.contains(folded, autoescape=True)

                with mock.patch.object(GroupStore, "_text_filter", like):
                    page, _ = await stores.groups.search(GroupSearch(text=query), 20, None)
        timings.append((time.perf_counter() - started) * 1000)
        found = len(page)
    return statistics.median(timings), max(timings), found


async def measure(backend: str, *, revision: str, indexed: bool) -> dict[str, tuple[float, float, int]]:
    """Each query's timings on a database at `revision`: 0001 is the schema before the index."""
    with tempfile.TemporaryDirectory() as folder:
        async with scratch_database(backend, Path(folder)) as url:
            db = Database(url)
            try:
                config = alembic_config(SERVICE.migrations, url)

                def upgrade(connection: Connection) -> None:
                    config.attributes["connection"] = connection
                    command.upgrade(config, revision)

                async with db.engine.begin() as connection:
                    await connection.run_sync(upgrade)
                await fill(db, args.groups)
                if backend == "postgresql":
                    autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
                    async with autocommit.connect() as connection:  # VACUUM runs outside a transaction
                        await connection.execute(text("VACUUM ANALYZE groups"))
                return {
                    label: await time_search(db, query, indexed=indexed, runs=args.runs)
                    for label, query in QUERIES.items()
                }
            finally:
                await db.dispose()


async def main() -> None:
    lines = [
        "# Group text search",
        "",
        f"`uv run python bench/group_search.py --groups {args.groups}`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        "on the 2-core reference machine: one page (20, newest first) of `GET /api/groups?q=…` through the store, "
        f"median and worst of {args.runs} runs. Load average when written: "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (the machine is shared: compare, do not read absolutes).",
        "",
        "| database | query | LIKE scan: median / worst ms | index: median / worst ms | results |",
        "|---|---|---:|---:|---:|",
    ]
    for backend in args.backends.split(","):
        before = await measure(backend, revision="0001", indexed=False)
        after = await measure(backend, revision="heads", indexed=True)
        for label in QUERIES:
            (like, like_worst, found), (index, index_worst, found_after) = before[label], after[label]
            assert found == found_after, (label, found, found_after)
            timings = f"{like:.1f} / {like_worst:.1f} | {index:.1f} / {index_worst:.1f}"
            line = f"| {backend} | {label} | {timings} | {found} |"
            print(line, flush=True)
            lines.append(line)
    report = ROOT / "bench" / "reports" / "group_search.md"
    report.write_text("\n".join(lines) + "\n")
    print(f"report: {report.relative_to(ROOT)}")


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--groups", type=int, default=100_000)
parser.add_argument("--runs", type=int, default=20)
parser.add_argument("--backends", default="sqlite,postgresql")
args = parser.parse_args()

if __name__ == "__main__":
    asyncio.run(main())
