"""Batch handlers (`ConsumerRegistry.on_batch`): a polled run of events in one call, the guarantees kept."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ledger import Deposit, LedgerUnitOfWork, apply_deposit, deposit_event, totals
from prometheus_client import REGISTRY

from gatherly.kernel.db import Database
from gatherly.kernel.delivery import ConsumerRegistry, dead_letter_topic
from gatherly.kernel.log.base import LogConsumer, MessageLog, Record, TopicConfig
from gatherly.kernel.messages import Envelope

from .test_delivery import Running, caught_up, eventually, group_name, publish_deposits, worker_for


async def test_a_batch_handler_gets_a_polled_run_of_events_at_once_in_log_order(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    await publish_deposits(message_log, deposit, list(range(1, 41)))  # one key: one partition, in this order
    calls: list[list[int]] = []

    async def apply_all(events: Sequence[Deposit], uow: LedgerUnitOfWork) -> None:
        calls.append([event.amount for event in events])
        for event in events:
            await apply_deposit(event, uow)

    registry = ConsumerRegistry()
    registry.on_batch(deposit, group=group_name())(apply_all)
    async with Running(worker_for(registry, message_log, ledger_db)):

        async def all_applied() -> bool:
            return await totals(ledger_db) == (820, 40)

        await eventually(all_applied)
    assert [amount for call in calls for amount in call] == list(range(1, 41))
    assert len(calls) < 40, "each event went alone"


async def apply_in_batches(
    ledger_db: Database,
    message_log: MessageLog,
    deposit: type[Deposit],
    note: Callable[[Sequence[Deposit]], object],
) -> str:
    """Run a new group whose batch handler notes each call's events and applies them, until it has caught up with
    the deposits' topic; returns the group's name."""

    async def apply_all(events: Sequence[Deposit], uow: LedgerUnitOfWork) -> None:
        note(events)
        for event in events:
            await apply_deposit(event, uow)

    group = group_name()
    registry = ConsumerRegistry()
    registry.on_batch(deposit, group=group)(apply_all)
    async with Running(worker_for(registry, message_log, ledger_db)):
        await eventually(lambda: caught_up(message_log, group, deposit.TOPIC))
    return group


async def test_a_batch_handler_never_gets_a_message_twice(ledger_db: Database, message_log: MessageLog) -> None:
    deposit = deposit_event()
    envelopes = await publish_deposits(message_log, deposit, [1, 2, 3])
    # The same messages again (a relay that crashed before deleting its rows), in the same poll or the next.
    await message_log.publish([envelope.to_message() for envelope in envelopes])
    seen: list[int] = []
    group = await apply_in_batches(
        ledger_db, message_log, deposit, lambda events: seen.extend(event.amount for event in events)
    )
    assert seen == [1, 2, 3]
    assert await totals(ledger_db) == (6, 3)
    # Counted (and a latency observed) once per message applied, however the runs were cut; each repeat counted.
    assert handled(group, "ok") == 3
    assert handled(group, "duplicate") == 3
    assert REGISTRY.get_sample_value("gatherly_message_latency_seconds_count", {"consumer": group}) == 3


async def test_a_worker_polls_1000_records_on_postgresql_and_500_on_sqlite_and_a_full_poll_commits_whole(
    ledger_db: Database, message_log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A poll's records share one transaction, whose fixed cost (round trips, the commit's fsync) larger polls share
    # among more records; on SQLite a batch holds the database's one write turn, so it polls fewer.
    expected = 500 if ledger_db.is_sqlite else 1000
    deposit = deposit_event()
    amounts = list(range(1, 1201))
    await publish_deposits(message_log, deposit, amounts)  # one key: one partition, all there before the first poll
    asked: list[int] = []
    make_consumer = message_log.consumer

    def asking_consumer(*args: Any, **kwargs: Any) -> LogConsumer:
        consumer = make_consumer(*args, **kwargs)
        poll = consumer.poll

        async def counted(max_records: int = 500, timeout: float = 1.0) -> list[Record]:
            asked.append(max_records)
            return await poll(max_records, timeout)

        consumer.poll = counted  # type: ignore[method-assign]
        return consumer

    monkeypatch.setattr(message_log, "consumer", asking_consumer)
    calls: list[list[int]] = []

    async def apply_all(events: Sequence[Deposit], uow: LedgerUnitOfWork) -> None:
        calls.append([event.amount for event in events])
        for event in events:
            await apply_deposit(event, uow)

    group = group_name()
    registry = ConsumerRegistry()
    registry.on_batch(deposit, group=group)(apply_all)
    async with Running(worker_for(registry, message_log, ledger_db)):
        await eventually(lambda: caught_up(message_log, group, deposit.TOPIC))
    assert set(asked) == {expected}
    assert max(len(call) for call in calls) == expected, [len(call) for call in calls]
    assert [amount for call in calls for amount in call] == amounts
    assert await totals(ledger_db) == (sum(amounts), len(amounts))
    assert handled(group, "ok") == len(amounts)


async def test_the_latency_histogram_counts_each_message_of_a_batch_by_its_own_latency(
    ledger_db: Database, message_log: MessageLog
) -> None:
    # The histogram is updated once per committed batch (`observe_all`), but each message is still counted in the
    # bucket of its own latency: 3 events of a minute ago (past the last bound, 30 s) and 2 of now, one key, one
    # run of the batch handler.
    deposit = deposit_event()
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])
    now = datetime.now(UTC)
    occurred = [now - timedelta(minutes=1)] * 3 + [now] * 2
    envelopes = [Envelope.wrap(deposit(account="ann", amount=n), at) for n, at in enumerate(occurred, 1)]
    await message_log.publish([envelope.to_message() for envelope in envelopes])
    calls: list[int] = []
    group = await apply_in_batches(ledger_db, message_log, deposit, lambda events: calls.append(len(events)))
    assert calls == [5]

    def latency(suffix: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(f"gatherly_message_latency_seconds_{suffix}", {"consumer": group, **labels})

    assert latency("count") == 5
    assert latency("bucket", le="+Inf") == 5
    assert latency("bucket", le="30.0") == 2  # the two of now (cumulative buckets: none of the three below 30 s)
    assert 180 <= (latency("sum") or 0) < 180 + 5 * 30


def handled(group: str, outcome: str) -> float | None:
    return REGISTRY.get_sample_value("gatherly_messages_handled_total", {"consumer": group, "outcome": outcome})


async def test_a_failing_batch_goes_one_by_one_and_only_the_poison_event_is_parked(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    await publish_deposits(message_log, deposit, [1, 2, 13, 3, 4])
    sizes: list[int] = []

    async def refuse_thirteen(events: Sequence[Deposit], uow: LedgerUnitOfWork) -> None:
        sizes.append(len(events))
        for event in events:
            if event.amount == 13:
                raise ValueError("thirteen is unlucky")
            await apply_deposit(event, uow)

    group = group_name()
    registry = ConsumerRegistry()
    registry.on_batch(deposit, group=group)(refuse_thirteen)
    async with Running(worker_for(registry, message_log, ledger_db)):

        async def others_applied() -> bool:
            return await totals(ledger_db) == (10, 4)

        await eventually(others_applied)

        async def parked() -> bool:
            return len(await message_log.read(dead_letter_topic(deposit.TOPIC))) == 1

        await eventually(parked)
    (dead,) = await message_log.read(dead_letter_topic(deposit.TOPIC))
    assert Envelope.from_record(dead).payload["amount"] == 13
    assert dead.headers["dlq.consumer_group"] == group
    assert 1 in sizes, "the failed batch was never split into single events"


async def test_batch_and_single_event_handlers_of_one_group_keep_the_log_order(
    ledger_db: Database, message_log: MessageLog
) -> None:
    # Two types on one partition: a run of the batch handler's type must not be applied past the other's event.
    big, small = deposit_event(), deposit_event()
    small.TOPIC = big.TOPIC
    await publish_deposits(message_log, big, [1, 2])
    await publish_deposits(message_log, small, [3])
    await publish_deposits(message_log, big, [4, 5])
    order: list[int] = []

    async def apply_all(events: Sequence[Deposit], uow: LedgerUnitOfWork) -> None:
        order.extend(event.amount for event in events)

    async def apply_one(event: Deposit, uow: LedgerUnitOfWork) -> None:
        order.append(event.amount)

    group = group_name()
    registry = ConsumerRegistry()
    registry.on_batch(big, group=group)(apply_all)
    registry.on(small, group=group)(apply_one)
    async with Running(worker_for(registry, message_log, ledger_db)):
        await eventually(lambda: caught_up(message_log, group, big.TOPIC))
    assert order == [1, 2, 3, 4, 5]
