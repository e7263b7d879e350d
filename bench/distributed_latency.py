"""Benchmark: commit → consumer latency in distributed mode (PostgreSQL + Kafka), the polling relay beside Debezium.

One run, one broker: a Kafka (KRaft) broker and a Kafka Connect worker with Debezium 3.6.1.Final are started from
the jars the project's scripts fetch (scripts/kafka.sh, scripts/debezium.sh, through `running_kafka` and
`running_connect`), on scratch PostgreSQL databases (scripts/postgres.sh). Then, for each relay in turn:

- polling: a unit of work commits state + outbox rows; our `OutboxRelay` (woken by the commit, as in a service
  process) publishes them to Kafka with the idempotent producer (acks=all);
- debezium: the same commits on another database whose outbox Debezium's PostgreSQL connector reads from the WAL
  and routes with the Outbox Event Router (deploy/debezium/outbox-connector.json); no relay runs.

Beside the latencies, this process's CPU time per event (load-robust, unlike them).

Events are committed at --rate per second (in transactions of --per-tx events) for --seconds; a `ConsumerWorker` in
a consumer group handles each in a transaction of its own (inbox row + a row of its own) on a third database. The
latency of an event is from its producer's COMMIT returning to its handler's COMMIT returning, both timed in this
process: p50, p90, p99, max. Missing infrastructure fails the run (nothing is skipped).

Appends a dated section to bench/reports/distributed_latency.md (and prints it).

    uv run python bench/distributed_latency.py [--rate 500] [--per-tx 10 1] [--seconds 20] [--debezium-poll-ms 500 20]

`--debezium-poll-ms` runs Debezium once per value of the connector's `poll.interval.ms` (default: the value in
deploy/debezium/outbox-connector.json), to compare settings in one run; given no value (`--debezium-poll-ms`
alone) it runs the polling relay only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from sqlalchemy import Column, Integer, MetaData, String, Table, insert

from gatherly.contracts.base import IntegrationEvent
from gatherly.kernel import kafka_broker, kafka_connect
from gatherly.kernel.db import Database
from gatherly.kernel.delivery import ConsumerRegistry, ConsumerWorker
from gatherly.kernel.kafka_broker import running_kafka
from gatherly.kernel.kafka_connect import (
    ConnectClient,
    OutboxConnector,
    drop_slot,
    ensure_publication,
    outbox_connector,
    running_connect,
    wait_for_slot,
)
from gatherly.kernel.log.base import TopicConfig
from gatherly.kernel.log.kafka import KafkaLog
from gatherly.kernel.loop_health import freeze_startup_heap
from gatherly.kernel.relay import OutboxRelay
from gatherly.kernel.tables import kernel_tables
from gatherly.kernel.testing import scratch_databases
from gatherly.kernel.uow import OutboxSignal, UnitOfWork

REPORT = Path(__file__).parent / "reports" / "distributed_latency.md"
# Cold JVMs, and a connector's first task, at load 40 and more on two cores took longer than the tests' 180 s.
STARTUP_S = 600.0
PARTITIONS = 4
TARGETS_MS = {"polling": 100.0, "debezium": 500.0}
CONNECTOR = json.loads(kafka_connect.CONNECTOR_TEMPLATE.read_text())["config"]

metadata = MetaData()
kernel_tables(metadata)
seen = Table("seen", metadata, Column("n", Integer, primary_key=True), Column("key", String, nullable=False))


class Pinged(IntegrationEvent):
    """Subclassed per run with a topic of its own, so the runs never read each other's messages."""

    AGGREGATE_ID: ClassVar[str] = "key"

    key: str
    n: int


def pinged_event(relay: str) -> type[Pinged]:
    suffix = f"{relay}-{uuid.uuid4().hex[:8]}"
    return type(f"Pinged_{relay}", (Pinged,), {"TOPIC": f"bench-ping-{suffix}", "TYPE": f"bench.pinged.{suffix}"})


class Stamps:
    """When each event was committed and when its handler's transaction committed (perf_counter seconds)."""

    def __init__(self) -> None:
        self.committed_at: dict[int, float] = {}
        self.handled_at: dict[int, float] = {}
        self.expected = 0
        self.all_handled = asyncio.Event()
        self.transactions = 0  # the consumer's, that handled events

    def handled(self, numbers: list[int]) -> None:
        now = time.perf_counter()
        self.transactions += bool(numbers)
        for n in numbers:
            self.handled_at[n] = now
        if len(self.handled_at) >= self.expected:
            self.all_handled.set()


class _Handling(UnitOfWork):
    """The consumer's unit of work: stamps its events as handled once its transaction has committed."""

    def __init__(self, db: Database, stamps: Stamps) -> None:
        super().__init__(db)
        self.stamps = stamps
        self.numbers: list[int] = []

    async def __aexit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        await super().__aexit__(exc_type, exc, tb)
        if exc_type is None:
            self.stamps.handled(self.numbers)


async def handle(event: Pinged, uow: _Handling) -> None:
    await uow.session.execute(insert(seen), {"n": event.n, "key": event.key})
    uow.numbers.append(event.n)


async def create_schema(db: Database) -> None:
    async with db.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)


@asynccontextmanager
async def publishing(
    relay: str, producer: Database, log: KafkaLog, signal: OutboxSignal, connect_url: str, poll_ms: int
) -> AsyncIterator[None]:
    """The producer database's outbox published to Kafka by `relay` while the block runs."""
    if relay == "polling":
        relay_task = asyncio.create_task(OutboxRelay("bench", producer, log, signal).run())
        try:
            yield
        finally:
            relay_task.cancel()
            await asyncio.gather(relay_task, return_exceptions=True)
        return
    service = f"bench-{uuid.uuid4().hex[:8]}"
    connector = outbox_connector(service, producer.url)  # its name and slot, for the clean-up
    async with ConnectClient(connect_url, timeout=STARTUP_S) as connect:
        try:
            config = {**connector.config, "poll.interval.ms": str(poll_ms)}
            await ensure_publication(producer.url)
            await connect.put(OutboxConnector(connector.name, config))
            await wait_for_slot(producer.url, connector.slot)
            yield
        finally:
            await connect.delete(connector.name)
            await drop_slot(producer.url, connector.slot)  # else the scratch database cannot be dropped


async def measure(
    relay: str, template: str, log: KafkaLog, connect_url: str, rate: int, per_tx: int, seconds: float, poll_ms: int
) -> dict[str, float | str]:
    event = pinged_event(relay)
    producer = Database(template.format(service=f"{relay}_producer"))
    consumer_db = Database(template.format(service=f"{relay}_consumer"))
    for db in (producer, consumer_db):
        await create_schema(db)
    await log.ensure_topics([TopicConfig(event.TOPIC, partitions=PARTITIONS)])
    signal = OutboxSignal()
    stamps = Stamps()
    registry = ConsumerRegistry()
    registry.on(event, group=f"bench.{relay}.{uuid.uuid4().hex[:8]}")(handle)
    (spec,) = registry.specs.values()
    worker = ConsumerWorker(spec, log, lambda: _Handling(consumer_db, stamps))
    worker_task = asyncio.create_task(worker.run())
    try:
        async with publishing(relay, producer, log, signal, connect_url, poll_ms):
            # Warm-up: one event through the whole path (the group joined, the connector streaming) before timing.
            stamps.expected = 1
            async with UnitOfWork(producer, signal=signal) as uow:
                uow.publish(event(key="warm-up", n=-1))
            await asyncio.wait_for(stamps.all_handled.wait(), timeout=300)
            # As a served process does once started (`gatherly up`/`run`): else a full collection walks the whole
            # start-up heap, a 0.2-0.3 s pause with everything stopped that served processes no longer have.
            await freeze_startup_heap()
            stamps.handled_at.clear()
            stamps.all_handled.clear()
            stamps.transactions = 0
            transactions = int(rate * seconds / per_tx)
            stamps.expected = transactions * per_tx
            interval = per_tx / rate
            started = time.perf_counter()
            cpu_started = time.process_time()
            late = 0
            for i in range(transactions):
                delay = started + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -interval:
                    late += 1
                numbers = range(i * per_tx, (i + 1) * per_tx)
                async with UnitOfWork(producer, signal=signal) as uow:
                    uow.publish(*(event(key=f"k{n % 64}", n=n) for n in numbers))
                now = time.perf_counter()
                for n in numbers:
                    stamps.committed_at[n] = now
            produced_for = time.perf_counter() - started
            await asyncio.wait_for(stamps.all_handled.wait(), timeout=300)
            cpu_s = time.process_time() - cpu_started
    finally:
        worker.stop()
        await asyncio.wait_for(worker_task, 60)
        await producer.dispose()
        await consumer_db.dispose()
    latencies = [(stamps.handled_at[n] - stamps.committed_at[n]) * 1000 for n in stamps.committed_at]
    return {
        "relay": relay if relay == "polling" else f"debezium (poll.interval.ms {poll_ms})",
        "target_ms": TARGETS_MS[relay],
        "rate": rate,
        "per_tx": per_tx,
        "events": len(latencies),
        "achieved_rate": len(latencies) / produced_for,
        "late_transactions": late,
        "load": os.getloadavg()[0],
        "p50_ms": statistics.median(latencies),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies),
        "cpu_us_per_event": cpu_s / len(latencies) * 1e6,
        "events_per_consumer_tx": len(latencies) / stamps.transactions,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(runs: list[dict[str, float | str]], loads: tuple[float, float, float], started: datetime) -> str:
    lines = [
        f"## {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Run on {platform.machine()}, {os.cpu_count()} cores (shared with other "
        f"work: load average {loads[0]:.1f} / {loads[1]:.1f} / {loads[2]:.1f} over 1 / 5 / 15 minutes at the end), "
        f"Python {platform.python_version()}. PostgreSQL 15 (a database each for producer and consumer), one Kafka "
        "4.1.1 broker (KRaft), one Kafka Connect worker with Debezium 3.6.1.Final (deploy/debezium's connector, "
        "its `poll.interval.ms` as the row says), all on this machine, all in one run "
        "(`bench/distributed_latency.py`).",
        "",
        "Latency: producer's COMMIT returned → consumer's handler transaction (inbox row + its own row) committed.",
        "",
        "| relay | target rate | events per tx | events | achieved rate | p50 ms | p90 ms | p99 ms | max ms "
        "| target p99 | CPU µs/event | events per consumer tx | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        target = float(r["target_ms"])
        verdict = "met" if float(r["p99_ms"]) < target else "missed"
        lines.append(
            f"| {r['relay']} | {r['rate']}/s | {r['per_tx']} | {r['events']} | {float(r['achieved_rate']):.0f}/s "
            f"| {float(r['p50_ms']):.1f} | {float(r['p90_ms']):.1f} | {float(r['p99_ms']):.1f} "
            f"| {float(r['max_ms']):.1f} | < {target:.0f} ms ({verdict}) | {float(r['cpu_us_per_event']):.0f} "
            f"| {float(r['events_per_consumer_tx']):.1f} | {float(r['load']):.1f} |"
        )
    lines += [
        "",
        "`achieved rate` below the target rate means the producer (sharing one Python process with the relay and "
        "the consumer) could not commit that many transactions per second on this machine; the latencies are then "
        "those of the rate achieved.",
        "",
        "`CPU µs/event`: this process's CPU time (producer, relay and consumer together; not PostgreSQL's, Kafka's or "
        "Connect's) from the first timed commit to the last event handled, per event. Unlike the latencies it hardly "
        "moves with the machine's load, so it is the figure to compare runs on a shared machine by, beside `events "
        "per consumer tx`: a consumer that falls behind polls larger batches and shares each transaction among more "
        "events, which also lowers the CPU per event.",
        "",
    ]
    return "\n".join(lines)


async def run(rates: list[int], per_txs: list[int], seconds: float, polls_ms: list[int], folder: Path) -> str:
    started = datetime.now(UTC)
    runs: list[dict[str, float | str]] = []
    with running_kafka(folder / "kafka") as bootstrap, running_connect(folder / "connect", bootstrap) as connect:
        names = [f"{relay}_{side}" for relay in TARGETS_MS for side in ("producer", "consumer")]
        for rate in rates:
            for per_tx in per_txs:
                for relay, poll_ms in [("polling", 0)] + [("debezium", poll) for poll in polls_ms]:
                    async with scratch_databases("postgresql", folder, names) as template:
                        log = KafkaLog(bootstrap, session_timeout=6.0)
                        await log.start()
                        try:
                            result = await measure(relay, template, log, connect.url, rate, per_tx, seconds, poll_ms)
                        finally:
                            await log.close()
                    print(result, flush=True)
                    runs.append(result)
    return report(runs, os.getloadavg(), started)


def main() -> None:
    kafka_broker.STARTUP_S = kafka_connect.STARTUP_S = STARTUP_S
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, nargs="*", default=[500])
    parser.add_argument("--per-tx", type=int, nargs="*", default=[10, 1])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--debezium-poll-ms", type=int, nargs="*", default=[int(CONNECTOR["poll.interval.ms"])])
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="b17-distributed-") as folder:
        text = asyncio.run(run(args.rate, args.per_tx, args.seconds, args.debezium_poll_ms, Path(folder)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as report:  # each run a dated section after the earlier ones
        report.write("\n" + text)
    print(text)


if __name__ == "__main__":
    main()
