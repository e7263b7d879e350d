"""Real process kills: a consumer or a relay dies mid-stream (SIGKILL) and nothing is lost or applied twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ledger import create_schema, deposit_event, totals

from gatherly.kernel.db import Database
from gatherly.kernel.delivery import dead_letter_topic, redelivery_topic, replay_dead_letters
from gatherly.kernel.log.base import TopicConfig
from gatherly.kernel.log.embedded import EmbeddedLog
from gatherly.kernel.messages import Envelope

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("ledger_process.py")


def start(*args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready", process.stderr.read() if process.stderr else ""
    return process


def wait_for_line(process: subprocess.Popen[str], line: str) -> None:
    """Read the child's output (log lines included) until it prints `line`; fail if it exits first."""
    assert process.stdout is not None
    for printed in process.stdout:
        if printed.strip() == line:
            return
    pytest.fail(f"the child exited without printing {line!r}")


def kill(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def until_complete(progress: Callable[[], Awaitable[tuple[int, int]]], stall_after: float = 30.0) -> None:
    """Wait until `progress()` (done, goal) reaches its goal; fail only when it stops moving for `stall_after` s.

    A fixed deadline measured the machine, not the guarantee: a replacement consumer on PostgreSQL makes a round
    trip per deposit, ~10 ms each when a dozen processes share the two cores, so 1,600 deposits took over 30 s.
    Lost or stuck progress still fails, after `stall_after` seconds without any. Polled every 0.1 s: each look is
    a query on the database the consumer under test is using."""
    best, moved_at = -1, time.monotonic()
    while True:
        done, goal = await progress()
        if done >= goal:
            return
        if done > best:
            best, moved_at = done, time.monotonic()
        elif time.monotonic() - moved_at > stall_after:
            raise AssertionError(f"no progress for {stall_after:g} s: {done} of {goal}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EmbeddedLog]:
    message_log = EmbeddedLog(tmp_path / "log.db")
    await message_log.start()
    yield message_log
    await message_log.close()


async def test_a_consumer_killed_mid_stream_loses_nothing_and_applies_nothing_twice(
    tmp_path: Path, log: EmbeddedLog, database_url: str
) -> None:
    suffix, group, count = uuid.uuid4().hex[:8], f"ledger.{uuid.uuid4().hex[:6]}", 2000
    deposit = deposit_event(suffix)
    await log.ensure_topics([TopicConfig(deposit.TOPIC)])
    envelopes = [
        Envelope.wrap(deposit(account=f"acct-{n % 7}", amount=n), datetime.now(UTC)) for n in range(1, count + 1)
    ]
    for start_at in range(0, count, 500):
        await log.publish([e.to_message() for e in envelopes[start_at : start_at + 500]])
    db = Database(database_url)
    await create_schema(db)
    try:
        consumer = start("consume-and-stall", str(tmp_path / "log.db"), database_url, suffix, group)
        assert consumer.stdout is not None
        # The worst moment: two batches applied in the database, the second one's offsets not committed.
        assert consumer.stdout.readline().strip() == "applied, offsets not committed"
        kill(consumer)
        applied_at_kill = (await totals(db))[1]
        committed_at_kill = sum([await log.committed(group, tp) or 0 for tp in (await log.end_offsets(deposit.TOPIC))])
        assert 0 < applied_at_kill < count, "the kill must land mid-stream"
        assert committed_at_kill < applied_at_kill, "some applied records must be waiting for their offset commit"

        replacement = start("consume", str(tmp_path / "log.db"), database_url, suffix, group)
        try:

            async def applied() -> tuple[int, int]:
                return (await totals(db))[1], count

            await until_complete(applied)
            # Let the replacement finish its batch: nothing more may be applied after this point.
            await until_complete(lambda: _commit_progress(log, group, deposit.TOPIC))
        finally:
            replacement.terminate()
            replacement.wait(timeout=10)
        assert await totals(db) == (count * (count + 1) // 2, count)
        # The records applied but not committed at the kill were delivered again; the inbox skipped them.
    finally:
        await db.dispose()


async def _commit_progress(log: EmbeddedLog, group: str, topic: str) -> tuple[int, int]:
    """(offsets committed, offsets to commit) summed over the topic's partitions."""
    ends = await log.end_offsets(topic)
    return sum([await log.committed(group, tp) or 0 for tp in ends]), sum(ends.values())


async def test_a_relay_killed_mid_stream_loses_nothing_and_duplicates_are_harmless(
    tmp_path: Path, log: EmbeddedLog, database_url: str
) -> None:
    suffix, count = uuid.uuid4().hex[:8], 2000
    deposit = deposit_event(suffix)
    source = database_url
    producer = start("produce", str(tmp_path / "log.db"), source, suffix, str(count))
    source_db = Database(source)
    try:

        async def some_relayed() -> tuple[int, int]:
            return len(await log.read(deposit.TOPIC, limit=count)), count // 10

        await until_complete(some_relayed)
        kill(producer)
        committed_deposits = (await totals(source_db))[1]
        assert 0 < committed_deposits <= count
    finally:
        await source_db.dispose()

    # A new relay publishes whatever the killed one left in the outbox.
    finisher = subprocess.run(
        [sys.executable, str(SCRIPT), "relay", str(tmp_path / "log.db"), source, suffix],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finisher.returncode == 0, finisher.stderr

    records = []
    for partition in await log.end_offsets(deposit.TOPIC):
        records += await log.read(deposit.TOPIC, {partition.partition: 0}, limit=10 * count)
    records = [r for r in records if r.partition in {p.partition for p in await log.end_offsets(deposit.TOPIC)}]
    ids = {r.headers["id"] for r in records}
    # Every committed deposit reached the log (maybe twice, if the kill fell between publish and delete)...
    assert len(ids) == committed_deposits

    # ...and a consumer applies each exactly once.
    group = f"ledger.{uuid.uuid4().hex[:6]}"
    target = f"sqlite:///{tmp_path / 'target.db'}"
    target_db = Database(target)
    await create_schema(target_db)
    consumer = start("consume", str(tmp_path / "log.db"), target, suffix, group)
    try:
        await until_complete(lambda: _commit_progress(log, group, deposit.TOPIC))
    finally:
        consumer.terminate()
        consumer.wait(timeout=10)
    try:
        source_totals = await _totals_at(source)
        assert await totals(target_db) == source_totals
    finally:
        await target_db.dispose()


async def _totals_at(url: str) -> tuple[int, int]:
    db = Database(url)
    try:
        return await totals(db)
    finally:
        await db.dispose()


async def _publish_deposits(log: EmbeddedLog, suffix: str, count: int) -> tuple[str, list[Envelope]]:
    """`count` deposits on a new topic; returns the topic and the envelopes published."""
    deposit = deposit_event(suffix)
    await log.ensure_topics([TopicConfig(deposit.TOPIC)])
    envelopes = [
        Envelope.wrap(deposit(account=f"acct-{n % 7}", amount=n), datetime.now(UTC)) for n in range(1, count + 1)
    ]
    await log.publish([e.to_message() for e in envelopes])
    return deposit.TOPIC, envelopes


async def _parked_ids(log: EmbeddedLog, topic: str) -> list[str]:
    return [r.headers["id"] for r in await log.read(dead_letter_topic(topic), limit=100_000)]


async def test_a_consumer_killed_while_dead_lettering_loses_nothing_and_parks_only_poison(
    tmp_path: Path, log: EmbeddedLog, database_url: str
) -> None:
    suffix, group, count = uuid.uuid4().hex[:8], f"ledger.{uuid.uuid4().hex[:6]}", 300
    topic, envelopes = await _publish_deposits(log, suffix, count)
    poison = {e.id for e in envelopes if e.payload["amount"] % 10 == 0}
    db = Database(database_url)
    await create_schema(db)
    try:
        consumer = start("consume-poison-and-stall", str(tmp_path / "log.db"), database_url, suffix, group)
        assert consumer.stdout is not None
        wait_for_line(consumer, "parked, offset not committed")
        kill(consumer)
        replacement = start("consume-poison", str(tmp_path / "log.db"), database_url, suffix, group)
        try:
            await until_complete(lambda: _commit_progress(log, group, topic))
        finally:
            replacement.terminate()
            replacement.wait(timeout=10)
        good = [e.payload["amount"] for e in envelopes if e.id not in poison]
        assert await totals(db) == (sum(good), len(good))  # every good one applied, once
        parked = await _parked_ids(log, topic)
        # Every poison message is parked; one whose park landed but whose commit the kill prevented, twice.
        assert set(parked) == poison
        assert len(parked) == len(poison) + 1
    finally:
        await db.dispose()


async def test_a_replay_killed_midway_redelivers_each_parked_message_and_applies_it_once(
    tmp_path: Path, log: EmbeddedLog, database_url: str
) -> None:
    suffix, group, count = uuid.uuid4().hex[:8], f"ledger.{uuid.uuid4().hex[:6]}", 100
    topic, envelopes = await _publish_deposits(log, suffix, count)
    db = Database(database_url)
    await create_schema(db)
    try:
        buggy = start("consume-poison", str(tmp_path / "log.db"), database_url, suffix, group)
        try:
            await until_complete(lambda: _commit_progress(log, group, topic))
        finally:
            buggy.terminate()
            buggy.wait(timeout=10)
        assert len(await _parked_ids(log, topic)) == count // 10

        replay = start("replay-and-stall", str(tmp_path / "log.db"), database_url, suffix, group)
        assert replay.stdout is not None
        wait_for_line(replay, "redelivered, progress not committed")
        kill(replay)
        await eventually(lambda: _no_live_members(log, f"gatherly.dlq-replay.{group}"))
        # The fix is deployed: a second replay finishes the pass (redelivering what the killed one had sent).
        assert await replay_dead_letters(log, topic, group=group) == count // 10
        fixed = start("consume", str(tmp_path / "log.db"), database_url, suffix, group)
        try:
            await until_complete(lambda: _commit_progress(log, group, redelivery_topic(group)))
        finally:
            fixed.terminate()
            fixed.wait(timeout=10)
        amounts = [e.payload["amount"] for e in envelopes]
        assert await totals(db) == (sum(amounts), count)  # the twice-redelivered ones applied once
        assert await replay_dead_letters(log, topic, group=group) == 0
    finally:
        await db.dispose()


async def _no_live_members(log: EmbeddedLog, group: str) -> bool:
    return not await log.group_members(group)
