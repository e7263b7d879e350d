"""Outbox, relay and consumer runtime on top of the message log: each backend runs these same tests."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ledger import Deposit, LedgerUnitOfWork, apply_deposit, create_schema, deposit_event, ledger_consumers, totals
from sqlalchemy import func, select

from gatherly.kernel.db import Database
from gatherly.kernel.delivery import (
    ConsumerRegistry,
    ConsumerWorker,
    RetryPolicy,
    dead_letter_topic,
    forget_processed,
    records_per_poll,
    replay_dead_letters,
)
from gatherly.kernel.log.base import LogConsumer, MessageLog, OutgoingMessage, Record, TopicConfig, TopicPartition
from gatherly.kernel.loop_health import LoopLagProbe
from gatherly.kernel.messages import Envelope
from gatherly.kernel.relay import OutboxRelay
from gatherly.kernel.uow import OUTBOX, OutboxSignal

FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def outbox_size(db: Database) -> int:
    async with db.read_session() as session:
        return int(await session.scalar(select(func.count()).select_from(OUTBOX)) or 0)


async def test_state_and_its_events_commit_together(ledger_db: Database) -> None:
    deposit = deposit_event()
    async with LedgerUnitOfWork(ledger_db) as uow:
        await uow.add("ann", 5)
        uow.publish(deposit(account="ann", amount=5))
    assert await totals(ledger_db) == (5, 1)
    assert await outbox_size(ledger_db) == 1


async def test_a_failed_unit_of_work_leaves_neither_state_nor_events(ledger_db: Database) -> None:
    deposit = deposit_event()
    with pytest.raises(RuntimeError):
        async with LedgerUnitOfWork(ledger_db) as uow:
            await uow.add("ann", 5)
            uow.publish(deposit(account="ann", amount=5))
            raise RuntimeError("the rule said no")
    assert await totals(ledger_db) == (0, 0)
    assert await outbox_size(ledger_db) == 0


async def test_the_relay_publishes_each_accounts_events_in_order_and_empties_the_outbox(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    signal = OutboxSignal()
    for amount in range(1, 31):
        async with LedgerUnitOfWork(ledger_db, signal=signal) as uow:
            uow.publish(deposit(account=f"acct-{amount % 3}", amount=amount))
    relay = OutboxRelay("ledger", ledger_db, message_log, signal, batch_size=7)
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])
    while await relay.relay_once():
        pass
    assert await outbox_size(ledger_db) == 0
    records = await message_log.read(deposit.TOPIC, limit=100)
    assert len(records) == 30
    by_account: dict[str, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = Envelope.from_record(record).event()
        assert isinstance(event, deposit)
        by_account.setdefault(event.account, []).append(event.amount)
    for amounts in by_account.values():
        assert amounts == sorted(amounts)


async def test_a_commit_wakes_the_relay_at_once(ledger_db: Database, message_log: MessageLog) -> None:
    deposit = deposit_event()
    signal = OutboxSignal()
    # A poll interval far longer than the test: only the commit's signal can explain a prompt publish.
    relay = OutboxRelay("ledger", ledger_db, message_log, signal, poll_interval=60)
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0)  # let the relay reach its wait
        async with LedgerUnitOfWork(ledger_db, signal=signal) as uow:
            uow.publish(deposit(account="ann", amount=1))

        async def published() -> bool:
            return len(await message_log.read(deposit.TOPIC)) == 1

        await eventually(published, timeout=30)  # well under the poll: a loaded CI machine can take seconds
    finally:
        relay.stop()
        await task


async def test_events_committed_after_the_outbox_was_emptied_still_go_out(
    ledger_db: Database, message_log: MessageLog
) -> None:
    # The relay reads on from the last seq it published; SQLite must not hand a deleted row's seq to a new row.
    deposit = deposit_event()
    signal = OutboxSignal()
    relay = OutboxRelay("ledger", ledger_db, message_log, signal)
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])
    for round_amounts in ([1, 2, 3], [4], [5, 6]):
        for amount in round_amounts:
            async with LedgerUnitOfWork(ledger_db, signal=signal) as uow:
                uow.publish(deposit(account="ann", amount=amount))
        while await relay.relay_once():
            pass
        await relay.delete_published()
        assert await outbox_size(ledger_db) == 0
    records = await message_log.read(deposit.TOPIC, limit=100)
    amounts = [Envelope.from_record(r).event() for r in records]
    assert [a.amount for a in amounts if isinstance(a, deposit)] == [1, 2, 3, 4, 5, 6]


def worker_for(
    registry: ConsumerRegistry, message_log: MessageLog, db: Database, retry: RetryPolicy = FAST_RETRY
) -> ConsumerWorker:
    (spec,) = registry.specs.values()
    return ConsumerWorker(spec, message_log, lambda: LedgerUnitOfWork(db), retry=retry)


async def publish_deposits(
    message_log: MessageLog, deposit: type[Deposit], amounts: list[int], account: str = "ann"
) -> list[Envelope]:
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])
    envelopes = [Envelope.wrap(deposit(account=account, amount=a), datetime.now(UTC)) for a in amounts]
    await message_log.publish([e.to_message() for e in envelopes])
    return envelopes


class Running:
    """A consumer worker running in the background for the length of a `async with`."""

    def __init__(self, worker: ConsumerWorker) -> None:
        self.worker = worker
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.worker.run())
        return self

    async def __aexit__(self, *_: object) -> None:
        self.worker.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout=10)


def group_name() -> str:
    return f"ledger.{uuid.uuid4().hex[:8]}"


async def test_a_message_delivered_twice_is_applied_once(ledger_db: Database, message_log: MessageLog) -> None:
    deposit = deposit_event()
    (envelope,) = await publish_deposits(message_log, deposit, [10])
    await message_log.publish([envelope.to_message()])  # the same message id again, as after a relay crash
    group = group_name()
    async with Running(worker_for(ledger_consumers(deposit, group), message_log, ledger_db)):
        # Both copies have been handled once the group's committed offsets reach the end of the topic.
        await eventually(lambda: caught_up(message_log, group, deposit.TOPIC))
    assert await totals(ledger_db) == (10, 1)


async def caught_up(message_log: MessageLog, group: str, topic: str) -> bool:
    for partition, end in (await message_log.end_offsets(topic)).items():
        if (await message_log.committed(group, partition) or 0) < end:
            return False
    return True


async def test_offsets_are_committed_once_per_interval_not_after_every_poll(
    ledger_db: Database, message_log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A commit is a write transaction on the log: with one record per poll (a group keeping up with single-event
    # transactions) committing after every poll doubled the consumer's cost per event.
    deposit = deposit_event()
    group = group_name()
    commits: list[dict[TopicPartition, int]] = []
    make_consumer = message_log.consumer

    def counting_consumer(*args: Any, **kwargs: Any) -> LogConsumer:
        consumer = make_consumer(*args, **kwargs)
        commit = consumer.commit

        async def counted(offsets: Mapping[TopicPartition, int]) -> None:
            commits.append(dict(offsets))
            await commit(offsets)

        consumer.commit = counted  # type: ignore[method-assign]
        return consumer

    monkeypatch.setattr(message_log, "consumer", counting_consumer)
    worker = worker_for(ledger_consumers(deposit, group), message_log, ledger_db)
    worker.commit_interval = 5.0
    started = time.monotonic()
    async with Running(worker):
        for amount in range(1, 11):
            await publish_deposits(message_log, deposit, [amount])

            async def applied(count: int = amount) -> bool:
                return (await totals(ledger_db))[1] == count

            await eventually(applied)  # so each poll brings one record
        # Ten polls with a record each, committed after every poll before; now once per 5 s. Counted against the
        # time they took: on a loaded machine (load average 40) ten rounds can outlast one interval, or two.
        intervals = (time.monotonic() - started) / worker.commit_interval
        assert len(commits) <= 1 + int(intervals), (len(commits), intervals)
        # An idle group commits what it applied when the interval is over, without a new record to poll.
        await eventually(lambda: caught_up(message_log, group, deposit.TOPIC))
    assert await totals(ledger_db) == (55, 10)


async def test_a_worker_asks_its_database_for_the_records_per_poll_when_it_runs_not_when_it_is_built(
    ledger_db: Database, message_log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    deposit = deposit_event()
    (spec,) = ledger_consumers(deposit, group_name()).specs.values()
    built: list[LedgerUnitOfWork] = []

    def new_unit_of_work() -> LedgerUnitOfWork:
        built.append(LedgerUnitOfWork(ledger_db))
        return built[-1]

    asked: list[int] = []
    polled = asyncio.Event()
    make_consumer = message_log.consumer

    def recording_consumer(*args: Any, **kwargs: Any) -> LogConsumer:
        consumer = make_consumer(*args, **kwargs)
        poll = consumer.poll

        async def recorded(max_records: int, timeout: float) -> list[Record]:
            asked.append(max_records)
            polled.set()
            return await poll(max_records, timeout=timeout)

        consumer.poll = recorded  # type: ignore[method-assign]
        return consumer

    monkeypatch.setattr(message_log, "consumer", recording_consumer)
    worker = ConsumerWorker(spec, message_log, new_unit_of_work)
    assert built == []
    async with Running(worker):
        await asyncio.wait_for(polled.wait(), timeout=60)
    assert set(asked) == {records_per_poll(ledger_db)} and len(built) == 1


async def test_records_go_on_being_applied_while_an_offset_commit_is_in_flight(
    ledger_db: Database, message_log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A commit is a round trip to the log; awaited in the poll loop it held every record polled after it (10% of
    # the loop's time at 500 events/s on Kafka). It runs beside the loop now, and stopping still waits for it.
    deposit = deposit_event()
    group = group_name()
    commit_started = asyncio.Event()
    release = asyncio.Event()
    make_consumer = message_log.consumer

    def held_consumer(*args: Any, **kwargs: Any) -> LogConsumer:
        consumer = make_consumer(*args, **kwargs)
        commit = consumer.commit

        async def held(offsets: Mapping[TopicPartition, int]) -> None:
            commit_started.set()
            await release.wait()
            await commit(offsets)

        consumer.commit = held  # type: ignore[method-assign]
        return consumer

    monkeypatch.setattr(message_log, "consumer", held_consumer)
    worker = worker_for(ledger_consumers(deposit, group), message_log, ledger_db)
    worker.commit_interval = 0.0
    running = Running(worker)
    async with running:
        await publish_deposits(message_log, deposit, [1])
        await commit_started.wait()  # the first record is applied and its commit hangs
        await publish_deposits(message_log, deposit, [2])
        await eventually(lambda: _equal(totals(ledger_db), (3, 2)))
        worker.stop()
        await asyncio.sleep(0.05)
        assert running.task is not None and not running.task.done()  # stopping waits for the commit in hand
        release.set()
    assert await caught_up(message_log, group, deposit.TOPIC)


async def _equal(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_a_large_batch_lets_the_event_loop_run_between_its_handlers(
    ledger_db: Database, message_log: MessageLog
) -> None:
    # Inline SQLite runs statements on the loop's thread: a backlog applied in one transaction held the loop for
    # all of it (here 100 handlers of 2 ms of CPU each: 200 ms during which no request was served).
    deposit = deposit_event()
    await publish_deposits(message_log, deposit, list(range(1, 101)))  # one key: one partition, one batch

    async def costly(event: Deposit, uow: LedgerUnitOfWork) -> None:
        busy_until = time.thread_time() + 0.002  # CPU time: a handler doing real work, not waiting
        while time.thread_time() < busy_until:
            pass
        await apply_deposit(event, uow)

    registry = ConsumerRegistry()
    registry.on(deposit, group=group_name())(costly)
    probe = LoopLagProbe(interval=0.001)
    probe_task = asyncio.create_task(probe.run())
    # A full collection of the test process's heap is CPU on the loop's thread too (244 ms once, in a run of several
    # test files): not what this test is about, so none runs while it measures.
    gc.disable()
    try:
        async with Running(worker_for(registry, message_log, ledger_db)):

            async def all_applied() -> bool:
                return await totals(ledger_db) == (5050, 100)

            await eventually(all_applied, timeout=30)
    finally:
        gc.enable()
        probe_task.cancel()
    # The loop's own share of its worst stall (time the operating system gave other processes is not counted).
    assert probe.worst_busy < 0.05, f"the loop was held {probe.worst_busy * 1000:.0f} ms"


async def test_a_handler_that_fails_for_a_while_is_retried_until_it_succeeds(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    failures = {"left": 2}

    async def flaky(event: Deposit, uow: LedgerUnitOfWork) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("the database blinked")
        await apply_deposit(event, uow)

    registry = ConsumerRegistry()
    registry.on(deposit, group=group_name())(flaky)
    await publish_deposits(message_log, deposit, [7])
    async with Running(worker_for(registry, message_log, ledger_db)):

        async def applied() -> bool:
            return await totals(ledger_db) == (7, 1)

        await eventually(applied)
    assert failures["left"] == 0
    assert await message_log.read(dead_letter_topic(deposit.TOPIC)) == []


async def test_a_message_that_keeps_failing_is_parked_with_its_error_and_the_rest_go_on(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    group = group_name()

    async def refuse_thirteen(event: Deposit, uow: LedgerUnitOfWork) -> None:
        if event.amount == 13:
            raise ValueError("thirteen is unlucky")
        await apply_deposit(event, uow)

    registry = ConsumerRegistry()
    registry.on(deposit, group=group)(refuse_thirteen)
    await publish_deposits(message_log, deposit, [1, 13, 2])
    async with Running(worker_for(registry, message_log, ledger_db)):

        async def others_applied() -> bool:
            return await totals(ledger_db) == (3, 2)

        await eventually(others_applied)

    async def parked() -> bool:
        return len(await message_log.read(dead_letter_topic(deposit.TOPIC))) == 1

    await eventually(parked)
    (dead,) = await message_log.read(dead_letter_topic(deposit.TOPIC))
    assert dead.headers["dlq.consumer_group"] == group
    assert dead.headers["dlq.error_type"] == "ValueError"
    assert "thirteen is unlucky" in dead.headers["dlq.error"]
    assert dead.headers["dlq.attempts"] == str(FAST_RETRY.max_attempts)
    assert dead.headers["dlq.original_topic"] == deposit.TOPIC


async def test_an_error_whose_text_holds_a_lone_surrogate_is_parked_with_it_replaced(
    ledger_db: Database, message_log: MessageLog
) -> None:
    """Header text must be UTF-8 on every log (`check_headers`): an error quoting text with a lone surrogate would
    have its park refused, and the record retried for ever, but for `_sendable`."""
    deposit = deposit_event()

    async def refuse(event: Deposit, uow: LedgerUnitOfWork) -> None:
        raise ValueError("no such name: a\ud800b")

    registry = ConsumerRegistry()
    registry.on(deposit, group=group_name())(refuse)
    await publish_deposits(message_log, deposit, [1])
    async with Running(worker_for(registry, message_log, ledger_db)):

        async def parked() -> bool:
            return len(await message_log.read(dead_letter_topic(deposit.TOPIC))) == 1

        await eventually(parked)
    (dead,) = await message_log.read(dead_letter_topic(deposit.TOPIC))
    assert dead.headers["dlq.error"] == "no such name: a?b"
    assert "a?b" in dead.headers["dlq.stacktrace"]


async def test_a_message_that_does_not_parse_is_parked_without_retries(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])
    bad = Envelope.wrap(deposit(account="ann", amount=1), datetime.now(UTC)).to_message()
    await message_log.publish([OutgoingMessage(bad.topic, bad.key, b'{"account": "ann"}', bad.headers)])
    await publish_deposits(message_log, deposit, [4])
    async with Running(worker_for(ledger_consumers(deposit, group_name()), message_log, ledger_db)):

        async def good_one_applied() -> bool:
            return await totals(ledger_db) == (4, 1)

        await eventually(good_one_applied)
    (dead,) = await message_log.read(dead_letter_topic(deposit.TOPIC))
    assert dead.headers["dlq.error_type"] == "ValidationError"
    assert dead.headers["dlq.attempts"] == "1"


async def test_replaying_dead_letters_applies_them_once_the_cause_is_fixed(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    group = group_name()
    broken = {"yes": True}

    async def sometimes_broken(event: Deposit, uow: LedgerUnitOfWork) -> None:
        if broken["yes"]:
            raise RuntimeError("bug in the handler")
        await apply_deposit(event, uow)

    registry = ConsumerRegistry()
    registry.on(deposit, group=group)(sometimes_broken)
    await publish_deposits(message_log, deposit, [5, 6])
    async with Running(worker_for(registry, message_log, ledger_db)):

        async def both_parked() -> bool:
            return len(await message_log.read(dead_letter_topic(deposit.TOPIC))) == 2

        await eventually(both_parked)
        broken["yes"] = False  # the fix is deployed
        assert await replay_dead_letters(message_log, deposit.TOPIC, group=group) == 2

        async def both_applied() -> bool:
            return await totals(ledger_db) == (11, 2)

        await eventually(both_applied)
    # Replaying again publishes nothing new: progress through the dead-letter topic is kept.
    assert await replay_dead_letters(message_log, deposit.TOPIC, group=group) == 0


async def test_a_read_model_is_rebuilt_by_replaying_its_topic_from_the_beginning(
    ledger_db: Database, message_log: MessageLog, tmp_path: Path
) -> None:
    deposit = deposit_event()
    group = group_name()
    await publish_deposits(message_log, deposit, [1, 2, 3, 4])
    registry = ledger_consumers(deposit, group)
    async with Running(worker_for(registry, message_log, ledger_db)):

        async def applied() -> bool:
            return await totals(ledger_db) == (10, 4)

        await eventually(applied)

    # The read model is lost (a new database); rewind the group and forget what its inbox remembers.
    fresh = Database(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    await create_schema(fresh)
    try:
        await forget_processed(fresh, group)
        await message_log.reset_group(group, [deposit.TOPIC], "earliest")
        async with Running(worker_for(registry, message_log, fresh)):

            async def rebuilt() -> bool:
                return await totals(fresh) == (10, 4)

            await eventually(rebuilt)
    finally:
        await fresh.dispose()


async def test_inbox_rows_older_than_the_log_keeps_messages_are_pruned(ledger_db: Database) -> None:
    from datetime import timedelta

    from gatherly.kernel.clock import FrozenClock
    from gatherly.kernel.delivery import prune_inbox

    old = FrozenClock(datetime.now(UTC) - timedelta(days=10))
    async with LedgerUnitOfWork(ledger_db, clock=old) as uow:
        await uow.mark_processed("ledger.x", "old-message")
    async with LedgerUnitOfWork(ledger_db) as uow:
        await uow.mark_processed("ledger.x", "new-message")
    assert await prune_inbox(ledger_db, older_than=timedelta(days=8)) == 1
    async with LedgerUnitOfWork(ledger_db) as uow:
        assert await uow.processed_among("ledger.x", ["old-message", "new-message"]) == {"new-message"}
