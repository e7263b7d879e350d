"""Helpers for the log tests: waiting for a condition with a deadline, and consuming until one holds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import pytest

from gatherly.kernel.log import LogConsumer, OutgoingMessage, Record, TopicPartition, partition_for

# Generous, because a Kafka group takes seconds to rebalance; the embedded log meets every condition in ms.
DEADLINE_S = 30.0


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str, deadline_s: float = DEADLINE_S) -> None:
    """Check `condition` until it holds; fail saying `what` was awaited when the deadline passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not await condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {deadline_s}s waiting until {what}")
        await asyncio.sleep(0.01)


async def consume(
    consumer: LogConsumer,
    until: Callable[[list[Record]], bool],
    *,
    commit: bool = True,
    deadline_s: float = DEADLINE_S,
) -> list[Record]:
    """Poll (committing after each batch unless told not to) until `until(records so far)` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    records: list[Record] = []
    while not until(records):
        if loop.time() > deadline:
            pytest.fail(f"timed out after {deadline_s}s; consumed {len(records)} records so far")
        batch = await consumer.poll(max_records=100, timeout=0.2)
        records.extend(batch)
        if commit and batch:
            await consumer.commit(next_offsets(batch))
    return records


def next_offsets(records: Iterable[Record]) -> dict[TopicPartition, int]:
    """The offsets to commit once `records` are processed."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
    return offsets


def messages(topic: str, keys: list[str], per_key: int) -> list[OutgoingMessage]:
    """`per_key` messages for each key, interleaved, valued `<key>:<n>`."""
    return [OutgoingMessage(topic, key, f"{key}:{n}".encode(), {"n": str(n)}) for n in range(per_key) for key in keys]


def keys_on_each_partition(partitions: int, per_partition: int) -> list[str]:
    """Keys that put `per_partition` keys on every partition, so no partition is left empty by chance."""
    candidates = [f"key-{i}" for i in range(1000)]
    return [
        key
        for partition in range(partitions)
        for key in [k for k in candidates if partition_for(k, partitions) == partition][:per_partition]
    ]


def values(records: Iterable[Record]) -> list[str]:
    return [record.value.decode() for record in records]


async def settle_split(consumers: list[LogConsumer], partitions: set[TopicPartition]) -> list[set[TopicPartition]]:
    """Poll every member until their assignments are disjoint, each non-empty, and cover `partitions`.
    Only call this while the topic holds nothing the members have not read: polls here may return records."""
    assignments: list[set[TopicPartition]] = []

    async def split() -> bool:
        nonlocal assignments
        for consumer in consumers:
            stray = await consumer.poll(timeout=0.05)
            assert not stray, "settle_split was called while records were waiting"
        assignments = [await consumer.assignment() for consumer in consumers]
        disjoint = sum(len(a) for a in assignments) == len(set().union(*assignments))
        return disjoint and all(assignments) and set().union(*assignments) == partitions

    await wait_until(split, "the group's members split the partitions between them")
    return assignments
