"""Loop health: purges in small indexed batches, WAL checkpoints off the event loop, and the loop-lag probe."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, event, insert, text

from gatherly.kernel.db import Database
from gatherly.kernel.delivery import prune_inbox
from gatherly.kernel.inline_sqlite import WalCheckpointer
from gatherly.kernel.log.base import OutgoingMessage, TopicConfig
from gatherly.kernel.log.embedded import EmbeddedLog
from gatherly.kernel.loop_health import LoopLagProbe, set_young_collection_threshold, time_gc_pauses
from gatherly.kernel.settings import Settings
from gatherly.kernel.tables import kernel_tables
from gatherly.kernel.uow import INBOX

metadata = MetaData()
kernel_tables(metadata)
blobs = Table("blobs", metadata, Column("n", Integer, primary_key=True), Column("data", LargeBinary, nullable=False))


class Ticker:
    """Counts how often the loop ran another coroutine while some work was going on."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.ticks += 1

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        self.ticks = 0
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_retention_purges_in_small_indexed_batches_letting_the_loop_run_between(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "log.db")
    await log.start()
    try:
        await log.ensure_topics([TopicConfig("old-news", partitions=2, retention_ms=60_000)])
        await log.publish([OutgoingMessage("old-news", f"k{n}", b"x", {}) for n in range(2_300)])
        plan = " ".join(
            str(row)
            for row in log._select(
                "EXPLAIN QUERY PLAN SELECT rowid FROM records WHERE topic = ? AND timestamp_ms < ? LIMIT 500",
                ("old-news", 0),
            )
        )
        assert "ix_records_topic_timestamp" in plan

        log.retention_batch = 500
        async with Ticker() as ticker:
            deleted = await log.enforce_retention(now=datetime.now(UTC) + timedelta(minutes=5))
            ticks_during_purge = ticker.ticks
        assert deleted == 2_300
        assert ticks_during_purge >= 4  # five batches: the loop ran other work between them
        assert await log.read("old-news") == []
        bounds = await log._bounds(["old-news"])
        assert all(start == end for start, end in bounds.values())  # offsets are never reused
    finally:
        await log.close()


async def test_inbox_pruning_deletes_in_small_batches(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        old = datetime.now(UTC) - timedelta(days=30)
        async with db.writing() as session:
            rows = [{"consumer": "g", "message_id": f"m{n}", "processed_at": old} for n in range(1_200)]
            rows.append({"consumer": "g", "message_id": "recent", "processed_at": datetime.now(UTC)})
            await session.execute(insert(INBOX), rows)
        deletes: list[str] = []

        def count_deletes(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.lstrip().upper().startswith("DELETE FROM INBOX"):
                deletes.append(statement)

        event.listen(db.engine.sync_engine, "before_cursor_execute", count_deletes)
        assert await prune_inbox(db, older_than=timedelta(days=8)) == 1_200
        assert len(deletes) == 7  # 6 x 200 and a last, empty one: each its own transaction
        async with db.read_session() as session:
            assert (await session.execute(text("SELECT message_id FROM inbox"))).scalars().all() == ["recent"]
    finally:
        await db.dispose()


async def test_commits_leave_checkpoints_to_the_checkpointer_thread(tmp_path: Path) -> None:
    path = tmp_path / "service.db"
    db = Database(f"sqlite:///{path}")
    assert db.checkpointer is not None
    db.checkpointer.interval = 3600  # started, but never due during the writes below
    try:
        async with db.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        # 1,600 pages in transactions of ~100: SQLite's default would checkpoint inside a COMMIT at 1,000.
        for batch in range(16):
            async with db.writing() as session:
                await session.execute(insert(blobs), [{"n": batch * 100 + i, "data": bytes(4000)} for i in range(100)])
        async with db.read_session() as session:
            assert (await session.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == 0
        wal_pages = (path.with_name(path.name + "-wal")).stat().st_size // 4096
        assert wal_pages >= 1_600

        # The checkpointer's own connection copies the WAL back, off the event loop's thread.
        checkpoint_connection = sqlite3.connect(path, isolation_level=None)
        try:
            before = REGISTRY.get_sample_value(
                "gatherly_sqlite_wal_checkpoints_total", {"database": "service.db", "outcome": "done"}
            )
            assert db.checkpointer.checkpoint(checkpoint_connection) == "done"
            after = REGISTRY.get_sample_value(
                "gatherly_sqlite_wal_checkpoints_total", {"database": "service.db", "outcome": "done"}
            )
            assert (after or 0) == (before or 0) + 1
        finally:
            checkpoint_connection.close()
        # With everything copied back, the next writer restarts the WAL from its beginning.
        async with db.writing() as session:
            await session.execute(insert(blobs), [{"n": 10_000, "data": b"x"}])
        async with db.read_session() as session:
            frames = (await session.execute(text("PRAGMA wal_checkpoint(PASSIVE)"))).one()[1]
        assert frames < 10
    finally:
        await db.dispose()


async def test_the_checkpointer_thread_checkpoints_on_its_own_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    connection.execute("CREATE TABLE t (x BLOB)")
    connection.executemany("INSERT INTO t VALUES (?)", [(bytes(4000),) for _ in range(50)])
    checkpointer = WalCheckpointer(path, interval=0.01)
    labels = {"database": "log.db", "outcome": "done"}
    before = REGISTRY.get_sample_value("gatherly_sqlite_wal_checkpoints_total", labels) or 0
    checkpointer.ensure_started()
    deadline = time.monotonic() + 10
    while (REGISTRY.get_sample_value("gatherly_sqlite_wal_checkpoints_total", labels) or 0) == before:
        assert time.monotonic() < deadline, "no checkpoint from the thread"
        await asyncio.sleep(0.01)
    await asyncio.to_thread(checkpointer.stop)
    assert checkpointer._thread is not None and not checkpointer._thread.is_alive()
    connection.close()


async def test_the_loop_lag_probe_sees_a_blocked_loop_and_exports_it() -> None:
    probe = LoopLagProbe("lag-test", interval=0.01)
    task = asyncio.create_task(probe.run())
    try:
        await probe.next_sample()
        time.sleep(0.2)  # a statement that blocks the loop, as a long DELETE on inline SQLite would
        worst = await probe.next_sample()
        assert worst >= 0.15
        assert (REGISTRY.get_sample_value("gatherly_event_loop_lag_max_seconds", {"service": "lag-test"}) or 0) >= 0.15
    finally:
        task.cancel()


async def test_the_probe_exports_one_distribution_under_every_service_read_when_scraped() -> None:
    # One probe per process, exported under each hosted service: the buckets are counted once per tick and the
    # same figures appear under every name (they measure the same loop).
    probe = LoopLagProbe("lag-a", "lag-b", interval=0.005)
    task = asyncio.create_task(probe.run())
    try:
        for _ in range(5):
            await probe.next_sample()
        time.sleep(0.06)  # one tick lands in a bucket above 50 ms
        await probe.next_sample()
        samples = probe.samples
        for service in ("lag-a", "lag-b"):
            labels = {"service": service}
            count = REGISTRY.get_sample_value("gatherly_event_loop_lag_seconds_distribution_count", labels)
            assert count == samples
            above_50ms = count - (
                REGISTRY.get_sample_value(
                    "gatherly_event_loop_lag_seconds_distribution_bucket", {**labels, "le": "0.05"}
                )
                or 0
            )
            assert above_50ms >= 1
            assert REGISTRY.get_sample_value("gatherly_event_loop_lag_seconds", labels) == probe.last
            assert (REGISTRY.get_sample_value("gatherly_event_loop_lag_max_seconds", labels) or 0) >= 0.05
    finally:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    frozen = probe.samples
    await asyncio.sleep(0.03)
    assert probe.samples == frozen, "the probe's timer kept firing after it was cancelled"


def test_every_garbage_collection_pause_is_measured_per_generation() -> None:
    def full_runs() -> float:
        return REGISTRY.get_sample_value("gatherly_gc_pause_seconds_count", {"generation": "2"}) or 0.0

    time_gc_pauses()
    time_gc_pauses()  # once per process, however often it is asked
    before = full_runs()
    gc.collect()
    assert full_runs() == before + 1
    assert (REGISTRY.get_sample_value("gatherly_gc_pause_seconds_sum", {"generation": "2"}) or 0.0) > 0


def test_the_young_collection_threshold_is_set_and_the_older_ones_kept() -> None:
    before = gc.get_threshold()
    try:
        set_young_collection_threshold(7000)
        assert gc.get_threshold() == (7000, before[1], before[2])
    finally:
        gc.set_threshold(*before)


def test_a_served_process_collects_its_young_generation_as_configured() -> None:
    assert Settings().gc_young_threshold == 7000
    assert Settings(gc_young_threshold=2000).gc_young_threshold == 2000
    with pytest.raises(ValidationError):
        Settings(gc_young_threshold=0)  # 0 would switch automatic collection off
