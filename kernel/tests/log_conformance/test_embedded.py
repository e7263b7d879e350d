"""What only the embedded log promises: its file is the truth, in-process wake-ups, retention, the assignor."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ledger import deposit_event

from gatherly.kernel.delivery import ConsumerRegistry, ConsumerWorker
from gatherly.kernel.log import (
    CommitFailed,
    EmbeddedLog,
    InvalidHeaders,
    OutgoingMessage,
    Record,
    TopicConfig,
    TopicPartition,
    assign_partitions,
    embedded,
    open_embedded_log,
    utcnow,
)
from gatherly.kernel.log.embedded import (
    RECENT_BYTES,
    RECENT_RECORDS,
    EmbeddedConsumer,
    _headers,
    _stored_headers,
)

from .support import consume, keys_on_each_partition, messages, values, wait_until


async def test_a_published_message_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    async with EmbeddedLog(path) as log:
        await log.ensure_topics([TopicConfig("user")])
        await log.publish([OutgoingMessage("user", "u1", b"registered", {"type": "user.registered"})])

    async with EmbeddedLog(path) as reopened:
        [record] = await reopened.read("user")
        assert (record.key, record.value, record.headers) == ("u1", b"registered", {"type": "user.registered"})
        assert await reopened.end_offsets("user") == {
            TopicPartition("user", p): int(p == record.partition) for p in range(4)
        }


async def test_a_waiting_poll_is_woken_at_once_by_a_publish_in_the_same_process(tmp_path: Path) -> None:
    # A poll interval far longer than the allowed delay: only the in-process wake-up can deliver in time.
    async with EmbeddedLog(tmp_path / "log.sqlite", poll_interval=5.0) as log:
        await log.ensure_topics([TopicConfig("t", partitions=1)])
        consumer = log.consumer("g", ["t"])
        assert await consumer.assignment() == {TopicPartition("t", 0)}
        waiting = asyncio.create_task(consumer.poll(timeout=10.0))
        # Not the assertion: lets the poll look once and start waiting, so the publish has to wake it.
        await asyncio.sleep(0.1)

        await log.publish([OutgoingMessage("t", "k", b"now")])

        assert values(await asyncio.wait_for(waiting, 1.0)) == ["now"]


async def test_a_publish_wakes_only_the_consumers_of_its_topic(tmp_path: Path) -> None:
    # Every woken consumer looks at the log again (membership, bounds): a process runs a consumer group per
    # subscribing service, so waking all of them on every append cost more than the append.
    async with EmbeddedLog(tmp_path / "log.sqlite", poll_interval=5.0) as log:
        await log.ensure_topics([TopicConfig("busy", partitions=1), TopicConfig("quiet", partitions=1)])
        bystander = log.consumer("g", ["quiet"])
        assert await bystander.assignment() == {TopicPartition("quiet", 0)}
        looks = 0
        refresh = bystander._refresh

        async def counted_refresh() -> None:
            nonlocal looks
            looks += 1
            await refresh()

        bystander._refresh = counted_refresh  # type: ignore[method-assign]
        waiting = asyncio.create_task(bystander.poll(timeout=0.5))
        await asyncio.sleep(0.1)  # not the assertion: lets the poll look once and start waiting
        for n in range(5):
            await log.publish([OutgoingMessage("busy", "k", f"{n}".encode())])
            await asyncio.sleep(0.02)  # not the assertion: a woken poll would look before the next append

        assert await waiting == []
        # The first look only: no append to "busy" woke it, and at the poll's deadline nothing had changed that
        # another look could find (see test_an_idle_consumer_looks_again_only_when_the_log_may_have_changed).
        assert looks == 1


@contextlib.asynccontextmanager
async def a_waiting_poll(
    tmp_path: Path,
) -> AsyncIterator[tuple[EmbeddedLog, EmbeddedConsumer, asyncio.Task[list[Record]]]]:
    """A log, a consumer of a group that handles only `user.deleted` on topic `user`, and its poll, already waiting.
    Poll interval and session timeout far longer than a test: only a wake-up can make the poll look again."""
    async with EmbeddedLog(tmp_path / "log.sqlite", poll_interval=60.0, session_timeout=600.0) as log:
        await log.ensure_topics([TopicConfig("user", partitions=1)])
        consumer = log.consumer("g", ["user"])
        consumer.handles = frozenset({"user.deleted"})
        assert await consumer.assignment() == {TopicPartition("user", 0)}
        waiting = asyncio.create_task(consumer.poll(timeout=30.0))
        await asyncio.sleep(0.1)  # not the assertion: lets the poll look once and start waiting
        yield log, consumer, waiting


async def test_appends_a_consumer_only_skips_wake_it_late_and_are_read_in_one_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process runs many groups that read a topic for types other than those most appends carry (twelve read `user`
    # for a profile edit): each woken at once read and skipped every record alone. Woken late, a run costs one look.
    monkeypatch.setattr(embedded, "SKIP_WAKE_DELAY_S", 1.0)
    async with a_waiting_poll(tmp_path) as (log, _, waiting):
        for n in range(3):
            await log.publish([OutgoingMessage("user", "k", f"edit {n}".encode(), {"type": "user.profile_updated"})])

        # Read (offsets, lag and settle() rely on every group reading past every record), all in one look.
        assert values(await asyncio.wait_for(waiting, 10.0)) == ["edit 0", "edit 1", "edit 2"]


async def test_an_append_a_consumer_may_handle_wakes_it_at_once_with_the_skipped_ones_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "SKIP_WAKE_DELAY_S", 600.0)  # a late wake-up never comes within the test
    async with a_waiting_poll(tmp_path) as (log, consumer, waiting):
        await log.publish([OutgoingMessage("user", "k", b"skipped", {"type": "user.profile_updated"})])
        await asyncio.sleep(0.1)  # not the assertion: a poll woken at once would be done by now
        assert not waiting.done()
        await log.publish([OutgoingMessage("user", "k", b"handled", {"type": "user.deleted"})])
        assert values(await asyncio.wait_for(waiting, 10.0)) == ["skipped", "handled"]

        # A record without a type is parsed (and parked when it does not parse): it wakes the consumer at once too.
        waiting = asyncio.create_task(consumer.poll(timeout=30.0))
        await asyncio.sleep(0.1)
        await log.publish([OutgoingMessage("user", "k", b"untyped")])
        assert values(await asyncio.wait_for(waiting, 10.0)) == ["untyped"]
        await consumer.close()


async def test_a_consumer_worker_tells_its_embedded_consumer_the_types_it_handles(tmp_path: Path) -> None:
    # Without it every append would wake the group at once again (correct, only slower): the wiring is checked here.
    deposit = deposit_event()
    registry: ConsumerRegistry[Any] = ConsumerRegistry()

    @registry.on(deposit, group="ledger")
    async def apply(event: Any, uow: Any) -> None: ...

    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        # No units of work (so its poll size given): the worker never gets as far as applying a record.
        worker = ConsumerWorker(
            registry.specs["ledger"],
            log,
            lambda: None,  # type: ignore[arg-type,return-value]
            batch_size=500,
        )
        running = asyncio.create_task(worker.run())

        async def started() -> bool:
            return worker._consumer is not None

        await wait_until(started, "the worker made its consumer")
        assert isinstance(worker._consumer, EmbeddedConsumer)
        assert worker._consumer.handles == frozenset({deposit.TYPE})
        worker.stop()
        await running


def count_looks(consumer: object) -> list[int]:
    """Counts the consumer's looks at the log (its membership and assignment refresh); returns the live counter."""
    looks = [0]
    refresh = consumer._refresh  # type: ignore[attr-defined]

    async def counted_refresh() -> None:
        looks[0] += 1
        await refresh()

    consumer._refresh = counted_refresh  # type: ignore[attr-defined]
    return looks


async def test_an_idle_consumer_looks_again_only_when_the_log_may_have_changed(tmp_path: Path) -> None:
    # Idle consumers of `gatherly up` are timed out of their wait twice a second; each look (membership, owners,
    # bounds) costs about half a millisecond, and a process runs some thirty consumer groups.
    path = tmp_path / "log.sqlite"
    async with EmbeddedLog(path, poll_interval=0.01, session_timeout=60.0) as log, EmbeddedLog(path) as other:
        await log.ensure_topics([TopicConfig("t", partitions=1)])
        consumer = log.consumer("g", ["t"])
        assert await consumer.assignment() == {TopicPartition("t", 0)}
        looks = count_looks(consumer)

        assert await consumer.poll(timeout=0.3) == []
        assert looks[0] == 1  # some 30 time-outs of the wait, one look: nobody wrote to the log meanwhile

        # Another process's append cannot wake us: its commit changes the file's version, so the next time-out looks.
        waiting = asyncio.create_task(consumer.poll(timeout=5.0))
        await asyncio.sleep(0.1)  # not the assertion: lets the poll look and start waiting
        await other.publish([OutgoingMessage("t", "k", b"from elsewhere")])
        assert values(await asyncio.wait_for(waiting, 2.0)) == ["from elsewhere"]


async def test_an_idle_consumer_still_looks_again_each_quarter_of_the_session_timeout(tmp_path: Path) -> None:
    # A member of this process that dies without a word writes nothing: only time shows it dead to the others.
    async with EmbeddedLog(tmp_path / "log.sqlite", poll_interval=0.01, session_timeout=0.4) as log:
        await log.ensure_topics([TopicConfig("t", partitions=1)])
        consumer = log.consumer("g", ["t"])
        await consumer.assignment()
        looks = count_looks(consumer)

        assert await consumer.poll(timeout=0.55) == []
        assert looks[0] >= 3  # at 0 and at least every 0.1 s after it (5 on an idle machine), not every 0.01 s
        assert looks[0] <= 7


async def test_an_idle_consumers_assignment_is_not_looked_up_again_while_nothing_changed(tmp_path: Path) -> None:
    # The delivery worker asks every group for its assignment once a second (the lag metrics).
    async with EmbeddedLog(tmp_path / "log.sqlite", poll_interval=0.01, session_timeout=60.0) as log:
        await log.ensure_topics([TopicConfig("t", partitions=1)])
        consumer = log.consumer("g", ["t"])
        assert await consumer.poll(timeout=0.05) == []
        looks = count_looks(consumer)
        for _ in range(10):
            assert await consumer.assignment() == {TopicPartition("t", 0)}
        assert looks[0] == 0


async def test_a_member_joining_in_the_same_process_gets_its_share_without_waiting_for_a_time_out(
    tmp_path: Path,
) -> None:
    # Its membership row is this process's own write, which other members' idle check does not see: joining wakes them.
    async with EmbeddedLog(tmp_path / "log.sqlite", poll_interval=5.0, session_timeout=60.0) as log:
        await log.ensure_topics([TopicConfig("t", partitions=2)])
        first, second = log.consumer("g", ["t"]), log.consumer("g", ["t"])
        assert len(await first.assignment()) == 2
        polling = asyncio.create_task(first.poll(timeout=10.0))
        await asyncio.sleep(0.1)  # not the assertion: the first member is idle, waiting in its poll

        async def shared() -> bool:
            return len(await second.assignment()) == 1

        await wait_until(shared, "the newcomer got one of the two partitions", deadline_s=2.0)
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling


async def test_a_busy_consumer_works_out_its_assignment_again_only_when_membership_may_have_changed(
    tmp_path: Path,
) -> None:
    # Issue #7: the live members, owners and partition counts were read on every poll, a third of a busy consumer's
    # poll, although records flowing in from this process change none of them.
    path = tmp_path / "log.sqlite"
    async with EmbeddedLog(path, session_timeout=60.0) as log, EmbeddedLog(path, session_timeout=60.0) as other:
        await log.ensure_topics([TopicConfig("t", partitions=2)])
        consumer = log.consumer("g", ["t"])
        assert len(await consumer.assignment()) == 2
        assert await consumer.poll(timeout=0.05) == []  # looks once more after its own claim of the partitions
        looks = count_looks(consumer)
        for n in range(20):
            await log.publish([OutgoingMessage("t", f"k{n}", b"v")])
            assert len(await consumer.poll(timeout=1.0)) == 1
        assert looks[0] == 0

        # A member joining through another connection changes the file's version: the next poll hands over its share.
        newcomer = other.consumer("g", ["t"])
        await newcomer._join()  # type: ignore[attr-defined]
        await log.publish([OutgoingMessage("t", "k", b"v")])
        await consumer.poll(timeout=0.05)
        assert looks[0] >= 1
        assert len(await consumer.assignment()) == 1
        await newcomer.close()


def count_bounds_reads(log: EmbeddedLog) -> list[int]:
    """Counts the log's reads of its partitions' bounds (the first query of every look for records)."""
    reads = [0]
    bounds = log._bounds

    async def counted_bounds(topics: Any) -> Any:
        reads[0] += 1
        return await bounds(topics)

    log._bounds = counted_bounds  # type: ignore[method-assign]
    return reads


async def test_a_consumer_that_read_every_partition_to_its_end_looks_again_only_when_the_log_may_have_changed(
    tmp_path: Path,
) -> None:
    # A consumer worker polls again right after every batch it handled: that look found nothing, a bounds query per
    # event handled, while only an append (which wakes us, or changes the file's version) could give it something.
    path = tmp_path / "log.sqlite"
    async with EmbeddedLog(path, poll_interval=0.01, session_timeout=60.0) as log, EmbeddedLog(path) as other:
        await log.ensure_topics([TopicConfig("t", partitions=2)])
        consumer = log.consumer("g", ["t"])
        assert len(await consumer.assignment()) == 2
        reads = count_bounds_reads(log)
        await log.publish(messages("t", keys_on_each_partition(2, per_partition=1), per_key=2))
        assert len(await consumer.poll(timeout=1.0)) == 4
        assert reads[0] == 1

        assert await consumer.poll(timeout=0.2) == []
        assert reads[0] == 1  # some 20 time-outs of the wait, no look: nothing was appended since

        # An append in this process wakes it; one through another connection changes the file's version.
        await log.publish([OutgoingMessage("t", "k", b"from here")])
        assert values(await consumer.poll(timeout=1.0)) == ["from here"]
        waiting = asyncio.create_task(consumer.poll(timeout=5.0))
        await asyncio.sleep(0.1)  # not the assertion: lets the poll start waiting
        await other.publish([OutgoingMessage("t", "k", b"from elsewhere")])
        assert values(await asyncio.wait_for(waiting, 2.0)) == ["from elsewhere"]

        # A poll cut short by `max_records` left records behind: the next one looks again at once, unwoken.
        await log.publish([OutgoingMessage("t", "k", f"{n}".encode()) for n in range(5)])
        assert values(await consumer.poll(max_records=2, timeout=1.0)) == ["0", "1"]
        assert values(await consumer.poll(max_records=2, timeout=0)) == ["2", "3"]
        assert values(await consumer.poll(max_records=2, timeout=0)) == ["4"]


async def test_a_busy_consumer_sees_a_partition_released_in_the_same_process_at_its_next_poll(tmp_path: Path) -> None:
    # A release by another member of this process is this process's own write: the file's version does not show it.
    async with EmbeddedLog(tmp_path / "log.sqlite", poll_interval=5.0, session_timeout=60.0) as log:
        await log.ensure_topics([TopicConfig("t", partitions=2)])
        first = log.consumer("g", ["t"])
        assert len(await first.assignment()) == 2
        second = log.consumer("g", ["t"])
        assert await second.assignment() == set()  # joined; its share is still the first member's
        assert len(await first.assignment()) == 1  # the first member gave it up
        assert len(await second.poll(timeout=0.05) or await second.assignment()) == 1
        await first.close()
        assert len(await second.assignment()) == 2


async def test_a_refresh_that_failed_is_tried_again_at_the_next_poll(tmp_path: Path) -> None:
    failing = [True]

    async def revoked(partitions: set[TopicPartition]) -> None:
        if failing[0]:
            raise RuntimeError("commit on revoke failed")

    async with EmbeddedLog(tmp_path / "log.sqlite", poll_interval=5.0, session_timeout=60.0) as log:
        await log.ensure_topics([TopicConfig("t", partitions=2)])
        first = log.consumer("g", ["t"], on_revoked=revoked)
        assert len(await first.assignment()) == 2
        second = log.consumer("g", ["t"])
        await second._join()  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError):
            await first.poll(timeout=0.05)
        failing[0] = False
        await first.poll(timeout=0.05)
        assert len(await first.assignment()) == 1
        await first.close()
        await second.close()


async def test_records_appended_through_another_connection_to_the_file_are_noticed(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    async with EmbeddedLog(path, poll_interval=0.02) as reader, EmbeddedLog(path) as writer:
        await writer.ensure_topics([TopicConfig("t")])
        consumer = reader.consumer("g", ["t"])
        waiting = asyncio.create_task(consume(consumer, lambda got: len(got) >= 20))
        await writer.publish(messages("t", keys_on_each_partition(4, per_partition=1), per_key=5))
        assert len(await waiting) == 20


async def test_a_consumer_reads_the_log_on_the_writer_connection_whose_page_cache_its_writes_keep(
    tmp_path: Path,
) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t", partitions=1)])
        consumer = log.consumer("g", ["t"])
        await consumer.assignment()
        statements: list[str] = []
        assert log._writer is not None
        log._writer.set_trace_callback(statements.append)
        await log.publish(messages("t", ["k"], per_key=2))

        assert len(await consumer.poll(timeout=1.0)) == 2

        assert any(s.startswith("SELECT offset, key, value") for s in statements)
        assert any(s.startswith("SELECT topic, partition, start_offset") for s in statements)


class _BusyReads:
    """A writer connection whose reads fail as during another connection's TRUNCATE checkpoint."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        if sql.startswith(("SELECT", "PRAGMA data_version")):
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
            raise error
        return self.db.execute(sql, parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


async def test_a_read_the_writer_connection_cannot_do_at_once_goes_to_the_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t", partitions=1)])
        consumer = log.consumer("g", ["t"])
        await consumer.assignment()
        await log.publish(messages("t", ["k"], per_key=3))
        monkeypatch.setattr(log, "_writer", _BusyReads(log._writer))

        assert len(await consumer.poll(timeout=1.0)) == 3
        assert await log.end_offsets("t") == {TopicPartition("t", 0): 3}


async def test_a_group_reading_records_another_group_just_read_takes_them_without_reading_the_file(
    tmp_path: Path,
) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t", partitions=1)])
        first, second = log.consumer("g1", ["t"]), log.consumer("g2", ["t"])
        for consumer in (first, second):
            await consumer.assignment()
        await log.publish(messages("t", ["k"], per_key=3))
        read = await first.poll(timeout=1.0)
        statements: list[str] = []
        assert log._writer is not None
        log._writer.set_trace_callback(statements.append)

        assert await second.poll(timeout=1.0) == read
        assert not [s for s in statements if s.startswith("SELECT offset, key, value")]


async def test_records_polled_by_groups_at_different_paces_are_those_of_the_file(tmp_path: Path) -> None:
    # The records kept of each partition against the file's: groups reading at their own pace (some from the
    # beginning, some behind, small and large polls, more than RECENT_RECORDS behind) while records are appended.
    rng = random.Random(9)
    path = tmp_path / "log.sqlite"
    async with EmbeddedLog(path) as log, EmbeddedLog(path) as file:
        await log.ensure_topics([TopicConfig("t", partitions=2)])
        consumers = [log.consumer(f"g{n}", ["t"]) for n in range(4)]
        got: dict[str, list[Record]] = {consumer.group: [] for consumer in consumers}
        for _ in range(60):
            if rng.random() < 0.6:
                per_key = rng.choice([1, 3, 40, 300])
                await log.publish(messages("t", keys_on_each_partition(2, per_partition=1), per_key))
            for consumer in rng.sample(consumers, rng.randint(1, 4)):
                max_records = rng.choice([1, 5, 50, 500])
                records = await consumer.poll(max_records=max_records, timeout=0)
                assert len(records) <= max_records
                got[consumer.group] += records
            for kept in log._recent.values():  # bounded, and consecutive offsets as `_records` slices them
                assert 0 < len(kept) <= RECENT_RECORDS
                assert sum(len(r.value) for r in kept) <= RECENT_BYTES
                assert [r.offset for r in kept] == list(range(kept[0].offset, kept[0].offset + len(kept)))

        for consumer in consumers:
            while records := await consumer.poll(max_records=500, timeout=0):
                got[consumer.group] += records
            from_file = []
            for tp in sorted(await consumer.assignment()):
                from_file += [r for r in await file.read("t", limit=100_000) if r.partition == tp.partition]
            polled = sorted(got[consumer.group], key=lambda r: (r.partition, r.offset))
            assert polled == from_file, consumer.group
            await consumer.close()


async def test_the_records_kept_of_a_partition_hold_at_most_recent_bytes_of_values(tmp_path: Path) -> None:
    big = RECENT_BYTES // 5 + 1  # four fit, five do not
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t", partitions=1)])
        first, second = log.consumer("g1", ["t"]), log.consumer("g2", ["t"])
        for consumer in (first, second):
            await consumer.assignment()
        await log.publish([OutgoingMessage("t", "k", bytes([n]) * big, {}) for n in range(10)])
        read = await first.poll(timeout=1.0)
        assert len(read) == 10

        (kept,) = log._recent.values()
        assert [r.offset for r in kept] == [6, 7, 8, 9]  # the newest that fit
        assert await second.poll(timeout=1.0) == read  # the older ones from the file, the newest from those kept
        await log.publish([OutgoingMessage("t", "k", b"x" * (RECENT_BYTES + 1), {})])
        assert len(await first.poll(timeout=1.0)) == 1
        assert not log._recent, "a record larger than the bound is not kept, nor are those before it"
        assert len(await second.poll(timeout=1.0)) == 1


def _kept_per_partition(log: EmbeddedLog) -> dict[str, dict[Any, Any]]:
    """Whatever the log holds keyed by partition (its attributes that are dicts of TopicPartition keys)."""
    return {
        name: value
        for name, value in vars(log).items()
        if isinstance(value, dict) and value and all(isinstance(key, TopicPartition) for key in value)
    }


async def test_nothing_is_held_of_a_partition_once_its_kept_records_are_dropped(tmp_path: Path) -> None:
    """The version a partition's kept records were last checked at goes with them: nothing is left of a partition
    once they are dropped (by retention, by the bytes bound), however many partitions a process has read."""
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t", partitions=4, retention_ms=60_000)])
        consumer = log.consumer("g", ["t"])
        await consumer.assignment()
        await log.publish(messages("t", keys_on_each_partition(4, per_partition=1), per_key=2))
        assert len(await consumer.poll(timeout=1.0)) == 8
        assert set(_kept_per_partition(log)) == {"_recent"} and len(log._recent) == 4
        assert log._writer is not None
        log._writer.execute("UPDATE records SET timestamp_ms = 0")

        assert await log.enforce_retention() == 8
        assert _kept_per_partition(log) == {}

        await log.publish([OutgoingMessage("t", "k", b"x" * (RECENT_BYTES + 1), {})])
        assert len(await consumer.poll(timeout=1.0)) == 1
        assert _kept_per_partition(log) == {}, "a record larger than the bound is not kept, nor anything of it"
        await consumer.close()


async def test_records_deleted_by_retention_are_no_longer_read_from_those_kept(tmp_path: Path) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t", partitions=1, retention_ms=60_000)])
        await log.publish(messages("t", ["k"], per_key=3))
        assert len(await log.read("t")) == 3
        # Offset 1 is older than the others: retention deletes it alone, leaving a gap (clocks of two processes).
        assert log._writer is not None
        log._writer.execute("UPDATE records SET timestamp_ms = 0 WHERE offset = 1")

        assert await log.enforce_retention() == 1

        assert [r.offset for r in await log.read("t")] == [0, 2]
        assert [r.offset for r in await log.read("t")] == [0, 2]


async def test_a_record_another_process_deleted_by_retention_is_not_read_from_those_kept(tmp_path: Path) -> None:
    # Every process runs retention (enforce_log_retention_hourly): another process's purge must not leave records it
    # deleted in this process's kept runs. Out of order, as when two processes' appends commit in the opposite order
    # to their timestamps: the partition's start does not move, only the file tells.
    path = tmp_path / "log.sqlite"
    async with EmbeddedLog(path) as log, EmbeddedLog(path) as other_process:
        await log.ensure_topics([TopicConfig("t", partitions=1, retention_ms=60_000)])
        first, second = log.consumer("g1", ["t"]), log.consumer("g2", ["t"])
        for consumer in (first, second):
            await consumer.assignment()
        await log.publish(messages("t", ["k"], per_key=3))
        assert [r.offset for r in await first.poll(timeout=1.0)] == [0, 1, 2]
        assert other_process._writer is not None
        other_process._writer.execute("UPDATE records SET timestamp_ms = 0 WHERE offset = 1")

        assert await other_process.enforce_retention() == 1

        assert [r.offset for r in await second.poll(timeout=1.0)] == [0, 2]
        assert [r.offset for r in await log.read("t")] == [0, 2]


async def test_records_deleted_by_a_purge_that_failed_half_way_are_not_read_from_those_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t", partitions=1, retention_ms=60_000)])
        await log.publish(messages("t", ["k"], per_key=3))
        assert len(await log.read("t")) == 3
        assert log._writer is not None
        log._writer.execute("UPDATE records SET timestamp_ms = 0 WHERE offset = 1")
        log.retention_batch = 1  # the first batch deletes offset 1; the second fails (the lock held past the timeout)
        write, writes = log._write, 0

        async def failing_second_write(work: Any) -> Any:
            nonlocal writes
            writes += 1
            if writes == 2:
                raise sqlite3.OperationalError("database is locked")
            return await write(work)

        monkeypatch.setattr(log, "_write", failing_second_write)
        with pytest.raises(sqlite3.OperationalError):
            await log.enforce_retention()

        assert [r.offset for r in await log.read("t")] == [0, 2]


async def test_a_group_polling_between_two_purge_batches_gets_no_record_the_first_deleted(tmp_path: Path) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t", partitions=1, retention_ms=60_000)])
        first, second = log.consumer("g1", ["t"]), log.consumer("g2", ["t"])
        for consumer in (first, second):
            await consumer.assignment()
        await log.publish(messages("t", ["k"], per_key=4))
        assert [r.offset for r in await first.poll(timeout=1.0)] == [0, 1, 2, 3]
        assert log._writer is not None
        log._writer.execute("UPDATE records SET timestamp_ms = 0 WHERE offset IN (1, 3)")
        log.retention_batch = 1  # offset 1, then the loop yields, then offset 3

        purge = asyncio.create_task(log.enforce_retention())
        await asyncio.sleep(0)  # the first batch is in: offset 1 is gone
        polled = await second.poll(timeout=0)
        assert await purge == 2

        assert 1 not in [r.offset for r in polled]


async def test_a_bounds_read_that_failed_leaves_no_partitions_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t", partitions=2)])
        await log.publish(messages("t", keys_on_each_partition(2, per_partition=1), per_key=1))
        select = log._select

        def locked(sql: str, parameters: Any = ()) -> Any:
            raise sqlite3.OperationalError("database is locked")  # the reader waited READ_BUSY_TIMEOUT_S in vain

        monkeypatch.setattr(log, "_select", locked)
        with pytest.raises(sqlite3.OperationalError):
            await log.end_offsets("t")
        monkeypatch.setattr(log, "_select", select)

        assert sum((await log.end_offsets("t")).values()) == 2


async def test_a_log_started_again_on_a_new_file_reads_none_of_the_old_records(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    log = EmbeddedLog(path)
    async with log:
        await log.ensure_topics([TopicConfig("t", partitions=1)])
        await log.publish(messages("t", ["k"], per_key=3))
        assert len(await log.read("t")) == 3
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    async with log:
        await log.ensure_topics([TopicConfig("t", partitions=1)])
        await log.publish([OutgoingMessage("t", "k", b"new")])

        assert [r.value for r in await log.read("t")] == [b"new"]


async def test_groups_looking_at_a_log_unchanged_since_the_last_look_read_no_bounds(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    async with EmbeddedLog(path) as log, EmbeddedLog(path) as other_process:
        await log.ensure_topics([TopicConfig("t", partitions=2)])
        consumers = [log.consumer(f"g{n}", ["t"]) for n in range(3)]
        for consumer in consumers:
            await consumer.assignment()
        await log.publish(messages("t", keys_on_each_partition(2, per_partition=1), per_key=2))
        statements: list[str] = []
        assert log._writer is not None
        log._writer.set_trace_callback(statements.append)

        for consumer in consumers:
            assert len(await consumer.poll(timeout=1.0)) == 4
        assert len([s for s in statements if s.startswith("SELECT topic, partition, start_offset")]) == 1

        # Any write, ours or another connection's, makes the next look read them again.
        await log.publish(messages("t", ["k"], per_key=1))
        assert sum((await log.end_offsets("t")).values()) == 5
        await other_process.publish(messages("t", ["k"], per_key=1))
        assert sum((await log.end_offsets("t")).values()) == 6
        assert await log.end_offsets("new") == {}
        await other_process.ensure_topics([TopicConfig("new", partitions=3)])
        assert len(await log.end_offsets("new")) == 3
        assert len([s for s in statements if s.startswith("SELECT topic, partition, start_offset")]) == 5


async def test_a_frozen_member_loses_its_partitions_and_its_late_commit_is_refused(tmp_path: Path) -> None:
    # Long enough that the survivor's own heartbeats (every session_timeout / 4) are never that late under load: at
    # 0.3 s a starved event loop could evict the survivor too, and its commit would then be refused.
    async with EmbeddedLog(tmp_path / "log.sqlite", session_timeout=2.0) as log:
        await log.ensure_topics([TopicConfig("t", partitions=2)])
        everything = {TopicPartition("t", 0), TopicPartition("t", 1)}
        zombie, survivor = log.consumer("g", ["t"]), log.consumer("g", ["t"])
        assert await zombie.assignment() == everything
        # A frozen process (GC pause, SIGSTOP): its heartbeats stop along with everything else.
        assert zombie._heartbeats is not None
        zombie._heartbeats.cancel()

        async def survivor_has_everything() -> bool:
            return await survivor.assignment() == everything

        await wait_until(survivor_has_everything, "the frozen member's partitions moved")
        await survivor.commit({TopicPartition("t", 0): 7})

        with pytest.raises(CommitFailed):
            await zombie.commit({TopicPartition("t", 0): 3})
        assert await log.committed("g", TopicPartition("t", 0)) == 7


async def test_a_cancelled_publish_leaves_the_log_usable(tmp_path: Path) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t")])
        publishing = asyncio.create_task(log.publish(messages("t", ["a", "b"], per_key=50)))
        await asyncio.sleep(0)
        publishing.cancel()
        # Whether the cancellation lands before the append or after it finished depends on timing.
        with contextlib.suppress(asyncio.CancelledError):
            await publishing

        await log.publish([OutgoingMessage("t", "c", b"after")])

        # The cancelled append either happened whole or not at all; the next one lands after it either way.
        stored = values(await log.read("t"))
        assert len(stored) in (1, 101)
        assert "after" in stored


async def test_seeking_a_partition_the_member_does_not_own_is_refused(tmp_path: Path) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t", partitions=1)])
        consumer = log.consumer("g", ["t"])
        with pytest.raises(ValueError, match="not assigned"):
            await consumer.seek(TopicPartition("other", 0), 0)


async def old_and_new(log: EmbeddedLog, topic: str) -> datetime:
    """Publish 5 records, then 5 more at a later millisecond; returns the newer batch's timestamp."""
    await log.publish(messages(topic, ["k"], per_key=5))
    first = (await log.read(topic))[-1].timestamp

    async def clock_moved() -> bool:
        return utcnow() > first + timedelta(milliseconds=1)

    await wait_until(clock_moved, "the clock passed the first batch")
    await log.publish([OutgoingMessage(topic, "k", f"k:{n}".encode()) for n in range(5, 10)])
    return (await log.read(topic))[-1].timestamp


async def test_retention_deletes_old_records_and_never_reuses_their_offsets(tmp_path: Path) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t", partitions=1, retention_ms=60_000)])
        newer = await old_and_new(log, "t")

        deleted = await log.enforce_retention(now=newer + timedelta(milliseconds=60_000))

        assert deleted == 5
        assert [r.offset for r in await log.read("t")] == list(range(5, 10))
        assert await log.end_offsets("t") == {TopicPartition("t", 0): 10}
        await log.publish([OutgoingMessage("t", "k", b"next")])
        assert (await log.read("t", {0: 10}))[0].offset == 10
        await log.reset_group("g", ["t"], "earliest")
        assert await log.committed("g", TopicPartition("t", 0)) == 5


async def test_a_group_behind_the_kept_records_resumes_at_the_earliest_kept_one(tmp_path: Path) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t", partitions=1, retention_ms=60_000)])
        newer = await old_and_new(log, "t")
        tp = TopicPartition("t", 0)
        behind = log.consumer("g", ["t"])
        assert await behind.assignment() == {tp}
        await behind.commit({tp: 2})
        await behind.close()

        await log.enforce_retention(now=newer + timedelta(milliseconds=60_000))

        consumer = log.consumer("g", ["t"])
        records = await consume(consumer, lambda got: len(got) >= 5)
        assert [r.offset for r in records] == list(range(5, 10))


async def test_an_existing_topic_takes_a_shorter_retention_asked_for_but_never_a_longer_one(tmp_path: Path) -> None:
    # A topic made with the default, then declared short-lived (personal data): its records must not stay longer.
    async with EmbeddedLog(tmp_path / "log.sqlite") as log:
        await log.ensure_topics([TopicConfig("t", partitions=1)])
        newer = await old_and_new(log, "t")
        await log.ensure_topics([TopicConfig("t", partitions=1, retention_ms=60_000)])
        await log.ensure_topics([TopicConfig("t", partitions=1)])  # a longer one asked for later changes nothing

        assert await log.enforce_retention(now=newer + timedelta(milliseconds=60_000)) == 5


async def test_a_topic_without_retention_keeps_everything(tmp_path: Path) -> None:
    log = await open_embedded_log(tmp_path / "log.sqlite")
    try:
        await log.ensure_topics([TopicConfig("forever", partitions=1, retention_ms=None)])
        await log.publish(messages("forever", ["k"], per_key=3))
        assert await log.enforce_retention(now=utcnow() + timedelta(days=10_000)) == 0
        assert len(await log.read("forever")) == 3
    finally:
        await log.close()


def test_partitions_are_dealt_evenly_and_the_same_way_by_every_member() -> None:
    partitions = [TopicPartition(topic, p) for topic in ("a", "b") for p in range(3)]
    members = {"m2": frozenset({"a", "b"}), "m1": frozenset({"a", "b"})}

    assignment = assign_partitions(members, reversed(partitions))

    assert assignment == assign_partitions(dict(reversed(members.items())), partitions)
    assert sorted(map(len, assignment.values())) == [3, 3]
    assert set().union(*assignment.values()) == set(partitions)


def test_a_member_only_gets_partitions_of_topics_it_reads() -> None:
    partitions = [TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)]
    members = {"m1": frozenset({"a"}), "m2": frozenset({"a", "b"})}

    assignment = assign_partitions(members, partitions)

    assert TopicPartition("b", 0) in assignment["m2"]
    assert all(tp.topic == "a" for tp in assignment["m1"])
    assert set().union(*assignment.values()) == set(partitions)


HEADER_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)  # lone surrogates too


@given(st.dictionaries(HEADER_TEXT, HEADER_TEXT, max_size=12))
def test_headers_kept_in_the_file_read_back_as_json_dumps_text_did(headers: dict[str, str]) -> None:
    """Headers every log takes read back as they were; with a lone surrogate (not UTF-8, which Kafka's headers are)
    they are refused, as Kafka refuses them (the conformance suite's test_publishing has the cases)."""
    message = OutgoingMessage("t", "k", b"", headers)
    if any(not text.isascii() and _has_lone_surrogate(text) for pair in headers.items() for text in pair):
        with pytest.raises(InvalidHeaders):
            _stored_headers(message)
        return
    assert _headers(_stored_headers(message)) == json.loads(json.dumps(headers)) == headers


def _has_lone_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


def test_headers_orjson_cannot_write_are_written_as_json_dumps_wrote_them() -> None:
    headers = MappingProxyType({"type": "a"})
    assert _stored_headers(OutgoingMessage("t", "k", b"", headers)) == json.dumps(dict(headers))
