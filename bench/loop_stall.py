"""Benchmark: the worst event-loop stall during housekeeping and search, under the steady message load.

While the message path of bench/log_latency.py runs at --rate events/s (producer → relay → embedded log →
consumer, one process), each phase below runs beside it and a `LoopLagProbe` (5 ms timer) records how late the loop
got. Target: no stall over 50 ms.

- load only: the baseline;
- retention purge: --records old records deleted from the embedded log (`EmbeddedLog.enforce_retention`);
- inbox pruning: --records old inbox rows deleted from the consumer's database (`prune_inbox`);
- group search: the groups store's public `search` by text over --groups groups, repeatedly;
- checkpoints: a burst of large writes grows the WALs while the checkpointer threads copy them back.

Writes bench/reports/loop_stall.md (and prints it).

    uv run python bench/loop_stall.py [--rate 1000] [--per-tx 10] [--records 200000] [--groups 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from log_latency import Harness, percentile
from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, insert

from gatherly.groups.domain import GroupSearch
from gatherly.groups.store import GroupStore
from gatherly.groups.tables import groups
from gatherly.kernel.db import Database
from gatherly.kernel.delivery import prune_inbox
from gatherly.kernel.log.base import OutgoingMessage, TopicConfig
from gatherly.kernel.loop_health import LoopLagProbe
from gatherly.kernel.messages import new_message_id
from gatherly.kernel.metrics import WAL_CHECKPOINTS
from gatherly.kernel.uow import INBOX

GROUPS_MIGRATIONS = Path(__file__).parent.parent / "services/groups/src/gatherly/groups/migrations"
ballast = Table("ballast", MetaData(), Column("n", Integer, primary_key=True), Column("data", LargeBinary))
WORDS = [
    "hiking",
    "chess",
    "board",
    "games",
    "running",
    "photography",
    "knitting",
    "python",
    "climbing",
    "jazz",
    "poetry",
    "cooking",
]


class Load:
    """Commits --rate events/s in transactions of --per-tx until stopped; records commit → handled latencies."""

    def __init__(self, harness: Harness, rate: int, per_tx: int) -> None:
        self.harness = harness
        self.rate = rate
        self.per_tx = per_tx
        self._stop = asyncio.Event()
        self.committed = 0

    async def run(self) -> None:
        interval = self.per_tx / self.rate
        started = time.perf_counter()
        i = 0
        while not self._stop.is_set():
            delay = started + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.harness.commit(range(i * self.per_tx, (i + 1) * self.per_tx))
            self.harness.expected = (i + 1) * self.per_tx
            self.committed = (i + 1) * self.per_tx
            i += 1

    def stop(self) -> None:
        self._stop.set()


async def prefill_log(harness: Harness, count: int) -> None:
    # A topic with 1 ms retention: every record is old by the time the purge runs.
    await harness.log.ensure_topics([TopicConfig("bench-old", partitions=4, retention_ms=1)])
    for first in range(0, count, 5000):
        await harness.log.publish(
            [OutgoingMessage("bench-old", f"k{n % 97}", b"x" * 200, {}) for n in range(first, min(count, first + 5000))]
        )


async def prefill_inbox(db: Database, count: int) -> None:
    old = datetime.now(UTC) - timedelta(days=30)
    for first in range(0, count, 10_000):
        async with db.writing() as session:
            await session.execute(
                insert(INBOX),
                [
                    {"consumer": "bench.old", "message_id": new_message_id(), "processed_at": old}
                    for _ in range(first, min(count, first + 10_000))
                ],
            )


async def prefill_groups(db: Database, count: int) -> None:
    await db.migrate(GROUPS_MIGRATIONS)
    now = datetime.now(UTC)
    for first in range(0, count, 5000):
        rows: list[dict[str, object]] = []
        for n in range(first, min(count, first + 5000)):
            name = f"{WORDS[n % len(WORDS)]} club {n}"
            description = f"We meet weekly for {WORDS[(n * 7) % len(WORDS)]} and {WORDS[(n * 3) % len(WORDS)]}."
            rows.append(
                {
                    "id": uuid.uuid4().hex[:26],
                    "slug": f"club-{n}",
                    "name": name,
                    "description": description,
                    "search_text": f"{name} {description}".casefold(),
                    "topics": [],
                    "city": None,
                    "lat": None,
                    "lng": None,
                    "visibility": "public",
                    "join_policy": "open",
                    "questions": [],
                    "banner_image_id": None,
                    "member_count": 1,
                    "created_at": now - timedelta(seconds=n),
                    "updated_at": now,
                    "deleted_at": None,
                }
            )
        async with db.writing() as session:
            await session.execute(insert(groups), rows)


async def search_repeatedly(db: Database, seconds: float) -> str:
    deadline = time.perf_counter() + seconds
    searches, durations = 0, []
    queries = ["zzz-nothing-matches", "poetry", "club 4242"]
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        async with db.read_session() as session:
            await GroupStore(session).search(GroupSearch(text=queries[searches % len(queries)]), 20, None)
        durations.append((time.perf_counter() - started) * 1000)
        searches += 1
        await asyncio.sleep(0.01)
    return f"{searches} searches, p50 {percentile(durations, 0.5):.1f} ms, max {max(durations):.1f} ms each"


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def write_burst(db: Database, megabytes: int) -> str:
    def checkpoints() -> float:
        return sum(
            sample.value
            for metric in WAL_CHECKPOINTS.collect()
            for sample in metric.samples
            if sample.name.endswith("_total") and sample.labels["outcome"] in ("done", "partial")
        )

    before = checkpoints()
    async with db.engine.begin() as connection:
        await connection.run_sync(ballast.create, checkfirst=True)
    largest_wal = 0
    wal = Path(str(db.engine.url.database) + "-wal")
    for chunk in range(megabytes * 16):  # 64 KiB per transaction
        async with db.writing() as session:
            await session.execute(insert(ballast), [{"n": chunk * 16 + i, "data": os.urandom(4096)} for i in range(16)])
        largest_wal = max(largest_wal, await asyncio.to_thread(_size, wal))
        await asyncio.sleep(0.005)
    await asyncio.sleep(2.5)  # let the checkpointer threads run their rounds
    return (
        f"{megabytes} MB written; {checkpoints() - before:.0f} checkpoints completed off the loop; "
        f"largest producer WAL seen {largest_wal / 2**20:.1f} MB"
    )


async def measure(probe: LoopLagProbe, what: Callable[[], Awaitable[object]]) -> tuple[float, float, float, object]:
    probe.reset()
    started = time.perf_counter()
    detail = await what()
    await probe.next_sample()  # a stall at the very end is counted too
    return probe.worst * 1000, probe.worst_busy * 1000, time.perf_counter() - started, detail


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--per-tx", type=int, default=10)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "reports" / "loop_stall.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        harness = Harness(Path(folder), "sqlite")
        groups_db = Database(f"sqlite:///{Path(folder) / 'groups.db'}")
        await harness.start()
        print("preparing: log records, inbox rows, groups ...", flush=True)
        await prefill_log(harness, args.records)
        await prefill_inbox(harness.consumer_db, args.records)
        await prefill_groups(groups_db, args.groups)

        probe = LoopLagProbe(interval=0.005)
        probe_task = asyncio.create_task(probe.run())
        load = Load(harness, args.rate, args.per_tx)
        load_task = asyncio.create_task(load.run())
        await asyncio.sleep(1)  # warm up

        async def idle() -> str:
            await asyncio.sleep(3)
            return "3 s of load only"

        async def purge() -> str:
            deleted = await harness.log.enforce_retention()
            return f"{deleted} records deleted"

        async def prune() -> str:
            deleted = await prune_inbox(harness.consumer_db, older_than=timedelta(days=8))
            return f"{deleted} inbox rows deleted"

        phases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("load only", idle),
            ("retention purge (embedded log)", purge),
            ("inbox pruning", prune),
            (f"group search ({args.groups} groups)", lambda: search_repeatedly(groups_db, 3)),
            ("WAL growth and checkpoints", lambda: write_burst(harness.producer_db, 32)),
        ]
        results = []
        for name, phase in phases:
            print(f"phase: {name}", flush=True)
            results.append((name, *(await measure(probe, phase))))
        load.stop()
        await load_task
        harness.expected = load.committed
        harness.all_handled.clear()
        harness.note_handled([])  # sets the event if everything is handled already
        await asyncio.wait_for(harness.all_handled.wait(), timeout=120)
        probe_task.cancel()
        latencies = [(harness.handled_at[n] - harness.committed_at[n]) * 1000 for n in harness.committed_at]
        await harness.stop()
        await groups_db.dispose()

    lines = [
        "# Event-loop stalls under load (embedded mode)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; one process: "
        f"the message path at {args.rate} events/s (transactions of {args.per_tx}) plus each phase below. "
        'Stall = how late a 5 ms loop timer fired. "The loop busy" = the part of that stall during which the loop\'s '
        "thread was on a CPU (its own work: statements, Python); the rest is time the operating system gave other "
        "processes (on a shared machine). Target: no stall over 50 ms.",
        "",
        "| phase | worst stall ms | of it, the loop busy ms | took s | detail |",
        "|---|---|---|---|---|",
    ]
    for name, worst, busy, took, detail in results:
        lines.append(f"| {name} | {worst:.1f} | {busy:.1f} | {took:.1f} | {detail} |")
    lines += [
        "",
        f"Commit → handled over the whole run ({len(latencies)} events): p50 {percentile(latencies, 0.5):.1f} ms, "
        f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms.",
        "",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
