"""Benchmark: our relay's publish throughput and our consumers' throughput beside Kafka's own perf tools, one run.

One Kafka (KRaft) broker from the jars scripts/kafka.sh fetches (`running_kafka`), and Kafka's perf tools from
scripts/kafka-tools.sh, on the same broker with messages of the same size:

1. Kafka's producer: `org.apache.kafka.tools.ProducerPerformance` (what kafka-producer-perf-test.sh runs) with our
   producer's settings (acks=all, idempotence on, linger.ms=2), records of the byte size of our messages (value +
   key + headers: the perf tool sends values only), as fast as it can.
2. Our relay: --messages events committed to a PostgreSQL outbox (100 per transaction) before the relay starts;
   then `OutboxRelay` reads, publishes (KafkaLog: aiokafka, idempotent, acks=all) and deletes them. Timed from the
   relay's start until every row is gone from the outbox.
3. Kafka's consumer: `org.apache.kafka.tools.ConsumerPerformance` (kafka-consumer-perf-test.sh) reading the
   messages our relay wrote, in a group of its own (its fetch rate, the group's join left out).
4. Our consumer: a `ConsumerWorker` in a group of its own reading the same messages, each applied with its inbox
   row in a PostgreSQL transaction (a polled batch per transaction, as in the services), twice: with a handler per
   event (`ConsumerRegistry.on`: one INSERT per event, as the services' handlers) and with a batch handler
   (`ConsumerRegistry.on_batch`: one INSERT per polled run, `db.BatchInsert`, its rows as arrays). Timed from the
   first message handled to the last (the group's join left out, as for 3), with the CPU time per message over the
   same span of this process, of the PostgreSQL backends serving its database and of the Kafka broker (read from
   /proc): what the machine's cores must carry per message, against what the 0.3 target allows them.

Ratios ours / Kafka's; the target is at least 0.3. Appends a dated section to bench/reports/kafka_throughput.md
(and prints it).

    uv run python bench/kafka_throughput.py [--messages 100000]

100,000 messages by default: with 20,000 (the default until 2026-12-01) Kafka's tools spent much of their run
starting their JVM and on first fetches, and measured 2.5-3x below their steady rates while ours hardly moved, so
every ratio came out too high (bench/reports/kafka_throughput.md, 02:22 UTC that day).

While working on the consumer's batch path, `--batch-only` leaves out Kafka's producer and our handler per event,
and `--repeat N` runs our batch consumer N times (each a group of its own, over the same messages). While working
on the relay, `--publish-only` leaves out the consumers, and `--repeat N` then runs our relay N times (each over
--messages freshly committed rows).

Our relay and consumers run on uvloop, as `gatherly run <service>` serves them (uvicorn's default loop);
`--loop asyncio` runs them on asyncio's own loop instead (until 2026-12-02 the bench did, unlike the services).

`--consumer-processes N` (N > 1) also runs the batch consumer as N processes, members of ONE consumer group sharing
its partitions (as replicas of a service do), in a row of its own beside the single process's: the group's msg/s
and the CPU per message of the N processes together.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import os
import platform
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import uvloop
from sqlalchemy import Column, Integer, MetaData, String, Table, delete, func, insert, select

from gatherly.contracts.base import IntegrationEvent
from gatherly.kernel import kafka_broker
from gatherly.kernel.db import BatchInsert, Database
from gatherly.kernel.delivery import ConsumerRegistry, ConsumerWorker
from gatherly.kernel.kafka_broker import kafka_libs, running_kafka
from gatherly.kernel.log.base import TopicConfig
from gatherly.kernel.log.kafka import KafkaLog
from gatherly.kernel.loop_health import freeze_startup_heap, set_young_collection_threshold, time_gc_pauses
from gatherly.kernel.messages import Envelope
from gatherly.kernel.relay import OutboxRelay
from gatherly.kernel.settings import Settings
from gatherly.kernel.tables import kernel_tables
from gatherly.kernel.testing import scratch_databases
from gatherly.kernel.uow import OUTBOX, OutboxSignal, UnitOfWork

REPORT = Path(__file__).parent / "reports" / "kafka_throughput.md"
ROOT = Path(__file__).parent.parent
PARTITIONS = 4
TARGET_RATIO = 0.3
TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")

metadata = MetaData()
kernel_tables(metadata)
seen = Table("seen", metadata, Column("n", Integer, primary_key=True), Column("key", String, nullable=False))
# The batch handler's statement, as a service's batch handler writes its rows (one statement of arrays on PostgreSQL).
INSERT_SEEN = BatchInsert(seen, ["n", "key"])


class Pinged(IntegrationEvent):
    TOPIC: ClassVar[str] = f"bench-throughput-{uuid.uuid4().hex[:8]}"
    TYPE: ClassVar[str] = "bench.throughput.pinged"
    AGGREGATE_ID: ClassVar[str] = "key"

    key: str
    n: int


def message_bytes() -> int:
    """What one of our messages puts on the wire besides Kafka's framing: value, key and headers."""
    message = Envelope.wrap(Pinged(key="k42", n=12345), datetime.now(UTC)).to_message()
    headers = sum(len(name) + len(value.encode()) for name, value in message.headers.items())
    return len(message.value) + len(message.key.encode()) + headers


def tools_classpath() -> str:
    """Kafka's jars and its tools' jars; scripts/kafka-tools.sh fetches the tools (and fails loudly if it cannot)."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "kafka-tools.sh")], check=True, capture_output=True, text=True
    )
    return f"{kafka_libs()}/*:{done.stdout.strip().splitlines()[-1]}/*"


def java(classpath: str, main: str, *args: str) -> str:
    done = subprocess.run(
        ["java", "-Xmx512m", "-cp", classpath, main, *args], check=True, capture_output=True, text=True, timeout=600
    )
    return done.stdout


def kafka_producer(classpath: str, bootstrap: str, topic: str, messages: int, size: int) -> float:
    output = java(
        classpath,
        "org.apache.kafka.tools.ProducerPerformance",
        *("--topic", topic, "--num-records", str(messages), "--record-size", str(size), "--throughput", "-1"),
        *("--producer-props", f"bootstrap.servers={bootstrap}", "acks=all", "enable.idempotence=true", "linger.ms=2"),
    )
    # The last line: "20000 records sent, 81632.7 records/sec (9.18 MB/sec), ..."
    found = re.findall(r"(\d+) records sent, ([\d.]+) records/sec", output)
    if not found or int(found[-1][0]) != messages:
        raise RuntimeError(f"ProducerPerformance did not report {messages} records sent:\n{output}")
    return float(found[-1][1])


def kafka_consumer(classpath: str, bootstrap: str, topic: str, messages: int) -> float:
    output = java(
        classpath,
        "org.apache.kafka.tools.ConsumerPerformance",
        *("--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(messages)),
        *("--group", f"perf-{uuid.uuid4().hex[:8]}", "--timeout", "120000"),
    )
    # CSV: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms,
    # fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
    header, row = (line for line in output.splitlines() if line.strip())
    values = dict(zip((h.strip() for h in header.split(",")), (v.strip() for v in row.split(",")), strict=True))
    if int(values["data.consumed.in.nMsg"]) < messages:
        raise RuntimeError(f"ConsumerPerformance read fewer than {messages} messages:\n{output}")
    return float(values["fetch.nMsg.sec"])


def processes_cpu(matching: Sequence[str]) -> dict[int, float]:
    """CPU seconds (user + system) so far of each process whose command line contains all of `matching`: the
    PostgreSQL backends serving one database, the Kafka broker of one data folder."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if all(m in command for m in matching):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS
        except OSError:
            continue  # ended meanwhile
    return found


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the processes spent between two readings (a process first seen in the second counts whole)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def others_cpu(db: Database, broker: str) -> list[dict[int, float]]:
    """CPU seconds so far of the PostgreSQL backends serving `db` and of the Kafka broker whose data is in `broker`."""
    return [processes_cpu(["postgres:", f" {db.engine.url.database} "]), processes_cpu(["java", broker])]


class Counting(UnitOfWork):
    """Collects the numbers of the events its transaction applies (the handlers below add them), and tells
    `on_commit` how many once its transaction has committed."""

    def __init__(self, db: Database, on_commit: Callable[[int], None] | None = None) -> None:
        super().__init__(db)
        self.numbers: list[int] = []
        self.on_commit = on_commit

    async def __aexit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        await super().__aexit__(exc_type, exc, tb)
        if exc_type is None and self.numbers and self.on_commit is not None:
            self.on_commit(len(self.numbers))


async def handle_one(event: Pinged, uow: Counting) -> None:
    await uow.session.execute(insert(seen), {"n": event.n, "key": event.key})
    uow.numbers.append(event.n)


async def handle_all(events: Sequence[Pinged], uow: Counting) -> None:
    await INSERT_SEEN.run(uow.session, [(event.n, event.key) for event in events])
    uow.numbers.extend(event.n for event in events)


def run_as_served(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run `main` on the event loop a served process runs on: `gatherly run <service>` serves with uvicorn, whose
    default loop (`loop="auto"`) is uvloop when it is installed (uvicorn[standard], kernel/pyproject.toml), and the
    service's consumers and relay run on that loop. `loop="asyncio"`: asyncio's own loop, for comparing."""
    return uvloop.run(main) if loop == "uvloop" else asyncio.run(main)


async def collect_as_served() -> None:
    """Tune the garbage collector as a served process does (app/server.py `serve`, which `gatherly run <service>`
    goes through, consumers included): young collections every GATHERLY_GC_YOUNG_THRESHOLD allocations, their
    pauses timed, and what is alive once set up frozen. Without it a poll's thousands of small objects were walked
    by a young collection every 700 allocations: about a quarter of the consumer's CPU (docs/messaging.md)."""
    time_gc_pauses()
    set_young_collection_threshold(Settings().gc_young_threshold)
    await freeze_startup_heap()


async def our_relay(db: Database, log: KafkaLog, messages: int) -> tuple[float, float]:
    """Messages per second, and this process's CPU microseconds per message, from the relay's start until the
    outbox is empty (the bench's own check of the outbox every 10 ms is counted too: a few µs per message)."""
    signal = OutboxSignal()
    for first in range(0, messages, 100):
        async with UnitOfWork(db, signal=signal) as uow:
            uow.publish(*(Pinged(key=f"k{n % 64}", n=n) for n in range(first, min(messages, first + 100))))
    published_before = sum((await log.end_offsets(Pinged.TOPIC)).values())
    relay = OutboxRelay("bench", db, log, signal)
    started, cpu_started = time.perf_counter(), time.process_time()
    task = asyncio.create_task(relay.run())
    try:
        while True:
            async with db.read_session() as session:
                if not await session.scalar(select(func.count()).select_from(OUTBOX)):
                    break
            await asyncio.sleep(0.01)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        relay.stop()
        await asyncio.wait_for(task, 60)
    published = sum((await log.end_offsets(Pinged.TOPIC)).values()) - published_before
    if published < messages:
        raise RuntimeError(f"the relay emptied the outbox but only {published} of {messages} messages are in Kafka")
    return messages / elapsed, cpu * 1e6 / messages


async def our_consumer(
    db: Database, log: KafkaLog, messages: int, *, batch: bool, broker: str, batch_size: int | None = None
) -> tuple[float, float, float, float]:
    """Messages per second, and CPU microseconds per message (load-robust: CPU taken by other work on the machine
    is not counted) of this process, of the PostgreSQL backends serving its database and of the Kafka broker (whose
    data folder is `broker`), all from the first transaction handled to the last."""
    handled: list[float] = []
    cpu: list[float] = []  # process CPU seconds at each stamp in `handled`
    done = asyncio.Event()
    others: list[tuple[dict[int, float], dict[int, float]]] = []  # PostgreSQL's, the broker's: (first, last)

    def stamp(count: int) -> None:
        """Stamps a committed transaction's messages as handled."""
        first = not handled
        handled.extend([time.perf_counter()] * count)
        cpu.extend([time.process_time()] * count)
        if first:
            others.extend((reading, reading) for reading in others_cpu(db, broker))
        if len(handled) >= messages:
            others[:] = [(start, end) for (start, _), end in zip(others, others_cpu(db, broker), strict=True)]
            done.set()

    async with db.writing() as session:
        await session.execute(delete(seen))  # what an earlier run applied
    registry = ConsumerRegistry()
    group = f"bench.throughput.{uuid.uuid4().hex[:8]}"
    if batch:
        registry.on_batch(Pinged, group=group)(handle_all)
    else:
        registry.on(Pinged, group=group)(handle_one)
    (spec,) = registry.specs.values()
    worker = ConsumerWorker(spec, log, functools.partial(Counting, db, stamp))
    if batch_size is not None:
        worker.batch_size = batch_size  # records per poll (and per transaction), instead of the worker's default
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(done.wait(), 600)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)
    async with db.read_session() as reading:
        applied = await reading.scalar(select(func.count()).select_from(seen))
    if applied != messages:
        raise RuntimeError(f"{applied} of {messages} messages applied")
    first = handled[0]
    after_first = messages - handled.count(first)
    postgresql, broker_cpu = (cpu_between(start, end) * 1e6 / after_first for start, end in others)
    return after_first / (handled[-1] - first), (cpu[-1] - cpu[0]) * 1e6 / after_first, postgresql, broker_cpu


def consumer_member(
    database_url: str,
    bootstrap: str,
    topic: str,
    group: str,
    start: Any,
    stop: Any,
    progress: Any,
    results: Any,
    loop: str,
) -> None:
    """One member of the consumer group `our_consumer_group` runs, in a process of its own: puts on `results` a stamp
    (clock, this process's CPU seconds, messages) per committed transaction once `stop` is set."""
    Pinged.TOPIC = topic  # this module, imported again in this process, drew another topic name
    results.put(run_as_served(_member(database_url, bootstrap, group, start, stop, progress), loop))


async def _member(
    database_url: str, bootstrap: str, group: str, start: Any, stop: Any, progress: Any
) -> list[tuple[float, float, int]]:
    db = Database(database_url)
    log = KafkaLog(bootstrap, session_timeout=6.0)
    stamps: list[tuple[float, float, int]] = []

    def stamp(count: int) -> None:
        stamps.append((time.monotonic(), time.process_time(), count))
        with progress.get_lock():
            progress.value += count

    registry = ConsumerRegistry()
    registry.on_batch(Pinged, group=group)(handle_all)
    (spec,) = registry.specs.values()
    worker = ConsumerWorker(spec, log, functools.partial(Counting, db, stamp))
    try:
        await log.start()
        await collect_as_served()
        await asyncio.to_thread(start.wait, 300)  # the members join the group together (see `our_consumer_group`)
        task = asyncio.create_task(worker.run())
        # Until the bench says stop (it does at once when a member ends early, which ends this thread's wait too).
        stopped = asyncio.create_task(asyncio.to_thread(stop.wait, 900))
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        worker.stop()
        await asyncio.wait_for(task, 60)
    finally:
        await log.close()
        await db.dispose()
    return stamps


async def our_consumer_group(
    db: Database, bootstrap: str, messages: int, processes: int, *, broker: str, loop: str
) -> tuple[float, float, float, float]:
    """`our_consumer` with a batch handler, run by `processes` processes that are members of ONE consumer group and
    share its partitions, as replicas of a service do (issue #17). Messages per second of the group, from its first
    transaction to its last; CPU microseconds per message of our processes together (each counted from its own
    first transaction to its last, over the messages of its later ones), of PostgreSQL's backends and of the broker.
    The broker delays a new group's first assignment (`running_kafka(initial_rebalance_delay_ms=...)`) so that the
    members, started together, share the partitions from the first poll on instead of rebalancing mid-run."""
    async with db.writing() as session:
        await session.execute(delete(seen))  # what an earlier run applied
    context = multiprocessing.get_context("spawn")  # not forked: this process's event loop, connections, threads
    start, stop = context.Barrier(processes + 1), context.Event()
    progress, results = context.Value("q", 0), context.Queue()
    group = f"bench.throughput.{uuid.uuid4().hex[:8]}"
    url = db.engine.url.render_as_string(hide_password=False)
    members = [
        context.Process(
            target=consumer_member,
            args=(url, bootstrap, Pinged.TOPIC, group, start, stop, progress, results, loop),
        )
        for _ in range(processes)
    ]
    for member in members:
        member.start()
    try:
        await asyncio.to_thread(start.wait, 300)
        first: tuple[int, list[dict[int, float]]] | None = None
        while (applied := progress.value) < messages:
            if first is None and applied:
                first = (applied, others_cpu(db, broker))
            if not all(member.is_alive() for member in members):
                raise RuntimeError("a consumer process ended before the messages were applied")
            await asyncio.sleep(0.005)
        last = others_cpu(db, broker)
        stop.set()
        stamps = [await asyncio.to_thread(results.get, True, 120) for _ in members]
    finally:
        stop.set()
        for member in members:
            await asyncio.to_thread(member.join, 60)
            if member.is_alive():
                member.kill()
    async with db.read_session() as reading:
        applied = await reading.scalar(select(func.count()).select_from(seen))
    if applied != messages or first is None:
        raise RuntimeError(f"{applied} of {messages} messages applied")
    everything = sorted(stamp for member in stamps for stamp in member)
    began, _, first_messages = everything[0]
    rate = (messages - first_messages) / (everything[-1][0] - began)
    counted = sum(n for member in stamps for _, _, n in member[1:])
    ours = sum(member[-1][1] - member[0][1] for member in stamps if member) * 1e6 / counted
    postgresql, broker_cpu = (
        cpu_between(a, b) * 1e6 / (messages - first[0]) for a, b in zip(first[1], last, strict=True)
    )
    return rate, ours, postgresql, broker_cpu


async def run(
    messages: int,
    folder: Path,
    *,
    batch_only: bool = False,
    publish_only: bool = False,
    repeat: int = 1,
    batch_size: int | None = None,
    consumer_processes: int = 1,
    loop: str = "uvloop",
) -> str:
    started = datetime.now(UTC)
    size = message_bytes()
    classpath = tools_classpath()
    group_runs = 0 if publish_only or consumer_processes < 2 else repeat
    # Several members started together wait for one another before the first assignment (Kafka's default delay).
    with running_kafka(folder / "kafka", initial_rebalance_delay_ms=3000 if group_runs else 0) as bootstrap:
        async with scratch_databases("postgresql", folder, ["producer", "consumer"]) as template:
            producer_db, consumer_db = (Database(template.format(service=s)) for s in ("producer", "consumer"))
            for db in (producer_db, consumer_db):
                async with db.engine.begin() as connection:
                    await connection.run_sync(metadata.create_all)
            log = KafkaLog(bootstrap, session_timeout=6.0)
            await log.start()
            await collect_as_served()
            try:
                perf_topic = f"bench-perf-{uuid.uuid4().hex[:8]}"
                await log.ensure_topics(
                    [TopicConfig(Pinged.TOPIC, partitions=PARTITIONS), TopicConfig(perf_topic, partitions=PARTITIONS)]
                )
                if not batch_only:
                    theirs_out = await asyncio.to_thread(
                        kafka_producer, classpath, bootstrap, perf_topic, messages, size
                    )
                ours_out = [await our_relay(producer_db, log, messages) for _ in range(repeat if publish_only else 1)]
                if not publish_only:
                    theirs_in = await asyncio.to_thread(kafka_consumer, classpath, bootstrap, Pinged.TOPIC, messages)
                broker = str(folder / "kafka")
                if not (batch_only or publish_only):
                    ours_in = await our_consumer(consumer_db, log, messages, batch=False, broker=broker)
                ours_in_batch = [
                    await our_consumer(consumer_db, log, messages, batch=True, broker=broker, batch_size=batch_size)
                    for _ in range(0 if publish_only else repeat)
                ]
                ours_in_group = [
                    await our_consumer_group(
                        consumer_db, bootstrap, messages, consumer_processes, broker=broker, loop=loop
                    )
                    for _ in range(group_runs)
                ]
            finally:
                await log.close()
                await producer_db.dispose()
                await consumer_db.dispose()
    loads = os.getloadavg()
    rows = (
        []
        if batch_only
        else [("publish (relay: outbox → Kafka)", "ProducerPerformance", theirs_out, *row) for row in ours_out]
    )
    if not (batch_only or publish_only):
        rows.append(("consume (worker, a handler per event)", "ConsumerPerformance", theirs_in, *ours_in[:2]))
    rows += [("consume (worker, a batch handler)", "ConsumerPerformance", theirs_in, *row[:2]) for row in ours_in_batch]
    group = f"{consumer_processes} processes, one consumer group"
    rows += [
        (f"consume (worker, a batch handler): {group}", "ConsumerPerformance", theirs_in, *row[:2])
        for row in ours_in_group
    ]
    consumers = (
        ([] if batch_only or publish_only else [("a handler per event", ours_in)])
        + [("a batch handler", row) for row in ours_in_batch]
        + [(f"a batch handler: {group} (CPU of the {consumer_processes} together)", row) for row in ours_in_group]
    )
    lines = [
        f"## {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Run on {platform.machine()}, {os.cpu_count()} cores (shared with other work: "
        f"load average {loads[0]:.1f} / {loads[1]:.1f} / {loads[2]:.1f} over 1 / 5 / 15 minutes at the end), "
        f"Python {platform.python_version()} ({loop}'s event loop, as served: `run_as_served`), "
        "one Kafka 4.1.1 broker (KRaft) and PostgreSQL 15 on this machine, "
        f"{PARTITIONS} partitions, {messages:,} messages of {size} bytes (value + key + headers; Kafka's tools send "
        "values of that size), all in one run (`bench/kafka_throughput.py`).",
        "",
        "| direction | Kafka's tool | Kafka's msg/s | ours msg/s | ratio | target | our CPU µs/message |",
        "|---|---|---|---|---|---|---|",
    ]
    for what, tool, theirs, ours, cpu in rows:
        ratio = ours / theirs
        verdict = "met" if ratio >= TARGET_RATIO else "missed"
        lines.append(
            f"| {what} | {tool} | {theirs:,.0f} | {ours:,.0f} | {ratio:.2f} | ≥ {TARGET_RATIO} ({verdict}) "
            f"| {'' if cpu is None else f'{cpu:.0f}'} |"
        )
    if consumers:
        lines += [
            "",
            "CPU per message of each process while our consumer ran (µs; the machine has "
            f"{os.cpu_count()} cores, so at the target rate the three may spend at most "
            f"{(os.cpu_count() or 1) * 1e6 / (TARGET_RATIO * theirs_in):.0f} µs a message together):",
            "",
            "| our consumer | msg/s | our process(es) | PostgreSQL (its database's backends) | Kafka broker |",
            "|---|---|---|---|---|",
            *(
                f"| {what} | {rate:,.0f} | {ours:.0f} | {postgresql:.0f} | {broker_cpu:.0f} |"
                for what, (rate, ours, postgresql, broker_cpu) in consumers
            ),
        ]
    lines += [
        "",
        "Ours does more than Kafka's tools: the relay reads the outbox from PostgreSQL and deletes what it published "
        "(one transaction per batch); the consumer writes each polled batch with its inbox rows in a PostgreSQL "
        "transaction and commits offsets after it. Kafka's tools only send and fetch bytes. A handler per event "
        "costs a database round trip per event, which bounds that consumer; the batch handler writes a polled "
        "run in one statement. Our CPU µs/message is the consumer process's CPU time (aiokafka, parsing, the "
        "worker, the database driver; not PostgreSQL's or Kafka's) per message while it consumed: unlike msg/s it "
        "hardly moves with the machine's load; the relay's is its process's CPU time (reading and deleting outbox "
        "rows, building records, aiokafka) per message.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    kafka_broker.STARTUP_S = 600.0  # a cold JVM at load 40 and more on two cores (a benchmark may wait)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100000)
    parser.add_argument("--out", type=Path, default=REPORT)
    parser.add_argument("--batch-only", action="store_true", help="only Kafka's consumer and our batch consumer")
    parser.add_argument("--publish-only", action="store_true", help="only Kafka's producer and our relay")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of our batch consumer (of our relay with --publish-only)"
    )
    parser.add_argument("--batch-size", type=int, help="records per poll of our batch consumer (default: the worker's)")
    parser.add_argument(
        "--consumer-processes",
        type=int,
        default=1,
        help="also run the batch consumer as this many processes of one consumer group (a row of its own)",
    )
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the event loop of our relay and consumers (uvloop: as `gatherly run` serves them)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="b17-throughput-") as folder:
        text = run_as_served(
            run(
                args.messages,
                Path(folder),
                batch_only=args.batch_only,
                publish_only=args.publish_only,
                repeat=args.repeat,
                batch_size=args.batch_size,
                consumer_processes=args.consumer_processes,
                loop=args.loop,
            ),
            args.loop,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as report:  # each run a dated section after the earlier ones
        report.write("\n" + text)
    print(text)


if __name__ == "__main__":
    main()
