"""CPU per read, SQLAlchemy's execution path against kernel/fixed_reads.py's FixedRead, for the statements of the hot
reads (a group by id; a page of 20 groups; a member page with profiles), on a SQLite file and on PostgreSQL.

Each read opens `Database.read_connection()` as a request does, runs the statement and builds the rows; the two
ways alternate in rounds within one process, so they share whatever else the machine is doing. CPU time of this
process only (time.process_time), so other processes' load hardly moves it.

    uv run python bench/fixed_reads.py [--reads 2000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from gatherly.groups import SERVICE, store
from gatherly.groups.tables import groups, member_profiles, memberships
from gatherly.kernel.db import Database
from gatherly.kernel.fixed_reads import FixedRead
from gatherly.kernel.testing import scratch_database

START = datetime(2026, 1, 1, tzinfo=UTC)


async def seed(db: Database) -> str:
    rows = []
    for i in range(41):
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "slug": f"group-{i}",
                "name": f"Group {i}",
                "name_key": f"group {i}",
                "description": "Talks and pairing.",
                "search_text": f"group {i} talks and pairing.",
                "topics": ["python", "talks"],
                "city": "Berlin",
                "lat": 52.52 + i / 1000,
                "lng": 13.405,
                "visibility": "public",
                "join_policy": "open",
                "questions": [],
                "banner_image_id": None,
                "member_count": 30,
                "created_at": START + timedelta(minutes=i),
                "updated_at": START + timedelta(minutes=i),
                "deleted_at": None,
            }
        )
    people = [f"person-{i}" for i in range(30)]
    async with db.writing() as connection:
        await connection.execute(insert(groups), rows)
        await connection.execute(
            insert(member_profiles),
            [{"user_id": p, "display_name": p.title(), "avatar": None, "updated_at": START} for p in people],
        )
        await connection.execute(
            insert(memberships),
            [
                {"group_id": rows[0]["id"], "user_id": p, "role": "member", "joined_at": START + timedelta(seconds=n)}
                for n, p in enumerate(people)
            ],
        )
    return str(rows[0]["id"])


async def timed(db: Database, read: FixedRead, params: dict[str, Any], reads: int, fixed: bool) -> float:
    started = time.process_time()
    for _ in range(reads):
        async with db.read_connection() as connection:
            if fixed:
                await read.rows(connection, params)
            else:
                [dict(row) for row in (await connection.execute(read.statement, params)).mappings()]
    return (time.process_time() - started) / reads * 1e6


async def run(backend: str, reads: int, directory: Path) -> None:
    async with scratch_database(backend, directory) as url:
        db = Database(url)
        await db.migrate(SERVICE.migrations)
        try:
            group_id = await seed(db)
            cases: dict[str, tuple[FixedRead, dict[str, Any]]] = {
                "group by id": (store.FIND_BY_ID, {"key": group_id}),
                "20 newest groups": (
                    store._shaped(
                        ("page", store.GroupSort.NEWEST, False),
                        lambda: store._page_query(store.GroupSort.NEWEST, store._Where([store.LIVE], {}, ()), False),
                    ),
                    {"limit": 21},
                ),
                "20 members with profiles": (store.MEMBER_VIEWS[False, False], {"group_id": group_id, "limit": 21}),
            }
            for name, (read, params) in cases.items():
                await timed(db, read, params, 50, True)
                await timed(db, read, params, 50, False)
                rounds = [
                    (await timed(db, read, params, reads, False), await timed(db, read, params, reads, True))
                    for _ in range(3)
                ]
                sqlalchemy_us = sorted(r[0] for r in rounds)[1]
                fixed_us = sorted(r[1] for r in rounds)[1]
                ratio = sqlalchemy_us / fixed_us
                print(f"| {backend} | {name} | {sqlalchemy_us:,.0f} | {fixed_us:,.0f} | {ratio:.1f}x |", flush=True)
        finally:
            await db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    print("| database | read | SQLAlchemy µs CPU | FixedRead µs CPU | |\n|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="reads-fixed-") as directory:
        for backend in args.backends.split(","):
            await run(backend, args.reads, Path(directory))


if __name__ == "__main__":
    asyncio.run(main())
