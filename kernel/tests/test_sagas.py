"""Saga timers on replicas: two processes looking for overdue sagas at once on PostgreSQL each take other sagas
straight away (SKIP LOCKED) instead of waiting for the other's transaction, and none is taken by both."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gatherly.kernel.db import Database
from gatherly.kernel.sagas import SagaStore
from gatherly.kernel.tables import KERNEL_METADATA
from gatherly.kernel.testing import DB_BACKENDS, scratch_database

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

if "postgresql" in DB_BACKENDS:  # concurrent writers: SQLite lets one in at a time, so none can skip another's

    async def test_two_timers_take_different_overdue_sagas_at_once(tmp_path: Path) -> None:
        async with scratch_database("postgresql", tmp_path) as url:
            db = Database(url)
            try:
                async with db.engine.begin() as connection:
                    await connection.run_sync(KERNEL_METADATA.create_all)
                async with db.writing() as connection:
                    for n in range(6):
                        await SagaStore(connection, "test").start(
                            f"s{n}", step="waiting", data={}, deadline_at=NOW - timedelta(minutes=n), now=NOW
                        )

                async def second_timer() -> list[str]:
                    async with db.writing() as connection:
                        return [s.id for s in await SagaStore(connection, "test").overdue(NOW, limit=3)]

                async with db.writing() as connection:  # the first timer's transaction, still open
                    first = [s.id for s in await SagaStore(connection, "test").overdue(NOW, limit=3)]
                    # Without SKIP LOCKED the second would wait here for the first's transaction: a timeout.
                    second = await asyncio.wait_for(second_timer(), 10)
            finally:
                await db.dispose()
        assert first == ["s5", "s4", "s3"]  # oldest deadline first
        assert second == ["s2", "s1", "s0"]
