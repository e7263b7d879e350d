"""Conformance: appending to topics, partitioning by key, offsets, and reading without a group."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import pytest

from gatherly.kernel.log import (
    InvalidHeaders,
    MessageLog,
    OutgoingMessage,
    TopicConfig,
    TopicPartition,
    UnknownTopic,
    murmur2,
    partition_for,
)

from .support import consume, keys_on_each_partition, messages, values


async def test_messages_with_the_same_key_keep_their_order(
    message_log: MessageLog, unique: Callable[[str], str]
) -> None:
    topic = unique("order")
    await message_log.ensure_topics([TopicConfig(topic, partitions=4)])
    keys = [f"aggregate-{i}" for i in range(10)]
    batch = messages(topic, keys, per_key=20)
    for start in range(0, len(batch), 30):  # several appends, so order must hold across them too
        await message_log.publish(batch[start : start + 30])

    consumer = message_log.consumer(unique("group"), [topic])
    records = await consume(consumer, lambda got: len(got) >= len(batch))
    await consumer.close()

    by_key: dict[str, list[int]] = defaultdict(list)
    for record in records:
        key, n = record.value.decode().split(":")
        assert key == record.key
        assert record.headers == {"n": n}
        by_key[key].append(int(n))
    assert by_key == {key: list(range(20)) for key in keys}


async def test_the_key_picks_the_partition_and_offsets_count_up_from_zero(
    message_log: MessageLog, unique: Callable[[str], str]
) -> None:
    topic = unique("partitions")
    await message_log.ensure_topics([TopicConfig(topic, partitions=3)])
    keys = [f"k{i}" for i in range(12)]
    await message_log.publish(messages(topic, keys, per_key=5))

    records = await message_log.read(topic)

    assert len(records) == 60
    offsets: dict[int, list[int]] = defaultdict(list)
    for record in records:
        assert record.partition == partition_for(record.key, 3)
        offsets[record.partition].append(record.offset)
    for partition, seen in offsets.items():
        assert seen == list(range(len(seen))), f"partition {partition} has gaps or is out of order"


async def test_end_offsets_are_the_next_offset_to_be_written_on_each_partition(
    message_log: MessageLog, unique: Callable[[str], str]
) -> None:
    topic = unique("ends")
    await message_log.ensure_topics([TopicConfig(topic, partitions=4)])
    assert await message_log.end_offsets(topic) == {TopicPartition(topic, p): 0 for p in range(4)}

    keys = [f"k{i}" for i in range(9)]
    await message_log.publish(messages(topic, keys, per_key=3))

    expected = {TopicPartition(topic, p): 0 for p in range(4)}
    for key in keys:
        expected[TopicPartition(topic, partition_for(key, 4))] += 3
    assert await message_log.end_offsets(topic) == expected


async def test_publishing_to_a_topic_never_created_is_refused(
    message_log: MessageLog, unique: Callable[[str], str]
) -> None:
    # Topics are created explicitly, so retention and partitions are always chosen (a DLQ must keep forever).
    topic = unique("unknown")
    with pytest.raises(UnknownTopic):
        await message_log.publish([OutgoingMessage(topic, "k", b"hello")])
    assert await message_log.end_offsets(topic) == {}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # Kafka's own test vectors (UtilsTest.testMurmur2) and values from Kafka's Java partitioner.
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
        (b"0", 971027396),
        (b"1", -1993445489),
    ],
)
def test_murmur2_matches_kafka(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


def test_keys_land_on_the_partition_kafkas_default_partitioner_picks() -> None:
    # toPositive(murmur2(utf8(key))) % partitions, as Kafka producers and Debezium's outbox router do.
    assert partition_for("21", 4) == (-973932308 & 0x7FFFFFFF) % 4
    assert partition_for("foobar", 12) == (-790332482 & 0x7FFFFFFF) % 12
    assert [partition_for(k, 4) for k in ("0", "1", "abc")] == [
        (v & 0x7FFFFFFF) % 4 for v in (971027396, -1993445489, 479470107)
    ]


async def test_ensure_topics_leaves_an_existing_topic_as_it_is(
    message_log: MessageLog, unique: Callable[[str], str]
) -> None:
    topic = unique("existing")
    await message_log.ensure_topics([TopicConfig(topic, partitions=2)])
    await message_log.publish([OutgoingMessage(topic, "k", b"kept")])

    await message_log.ensure_topics([TopicConfig(topic, partitions=6)])

    assert len(await message_log.end_offsets(topic)) == 2
    assert values(await message_log.read(topic)) == ["kept"]


async def test_read_starts_at_the_given_offsets_and_stops_at_the_limit(
    message_log: MessageLog, unique: Callable[[str], str]
) -> None:
    topic = unique("read")
    await message_log.ensure_topics([TopicConfig(topic, partitions=2)])
    await message_log.publish(messages(topic, keys_on_each_partition(2, per_partition=3), per_key=4))
    ends = await message_log.end_offsets(topic)
    assert ends == {TopicPartition(topic, 0): 12, TopicPartition(topic, 1): 12}

    everything = await message_log.read(topic)
    assert len(everything) == 24
    assert [(r.partition, r.offset) for r in everything] == sorted((r.partition, r.offset) for r in everything)

    later = await message_log.read(topic, {0: 2, 1: ends[TopicPartition(topic, 1)] - 1})
    assert [(r.partition, r.offset) for r in later] == [
        *((0, o) for o in range(2, ends[TopicPartition(topic, 0)])),
        (1, ends[TopicPartition(topic, 1)] - 1),
    ]

    # A partition left out of from_offsets is read from its beginning.
    assert [r.offset for r in await message_log.read(topic, {0: ends[TopicPartition(topic, 0)]})] == list(
        range(ends[TopicPartition(topic, 1)])
    )
    assert len(await message_log.read(topic, limit=5)) == 5


class Kind(StrEnum):
    SCHEDULED = "event.scheduled"


# Headers Kafka cannot carry (its headers are UTF-8 bytes), and the words both logs refuse them with.
UNSENDABLE_HEADERS = [
    ({"n": math.nan}, "header 'n' of a message to topic {topic!r}: its value is float, not text"),
    ({"n": 1}, "header 'n' of a message to topic {topic!r}: its value is int, not text"),
    ({"n": None}, "header 'n' of a message to topic {topic!r}: its value is NoneType, not text"),
    ({"n": b"1"}, "header 'n' of a message to topic {topic!r}: its value is bytes, not text"),
    (
        {"n": "\ud800"},
        "header 'n' of a message to topic {topic!r}: its value is not UTF-8 text (it holds a lone surrogate)",
    ),
    ({7: "1"}, "header 7 of a message to topic {topic!r}: its name is int, not text"),
    (
        {"\udcff": "1"},
        "header '\\udcff' of a message to topic {topic!r}: its name is not UTF-8 text (it holds a lone surrogate)",
    ),
]


@pytest.mark.parametrize(
    ("headers", "words"),
    UNSENDABLE_HEADERS,
    ids=["nan", "int", "none", "bytes", "surrogate-value", "int-name", "surrogate-name"],
)
async def test_headers_kafka_cannot_carry_are_refused_by_every_log_and_nothing_is_appended(
    message_log: MessageLog, unique: Callable[[str], str], headers: dict[Any, Any], words: str
) -> None:
    """The embedded log stores headers as JSON, which takes a number or None and writes NaN as null: code that
    publishes them would work there and break on Kafka. Both refuse them with `InvalidHeaders`, in the same words,
    and the publish appends nothing (the good message before the bad one neither)."""
    topic = unique("headers")
    await message_log.ensure_topics([TopicConfig(topic, partitions=1)])
    good = OutgoingMessage(topic, "k", b"good", {"type": "fine", "accents": "Zoë ✓"})
    with pytest.raises(InvalidHeaders) as refused:
        await message_log.publish([good, OutgoingMessage(topic, "k", b"bad", headers)])
    assert str(refused.value) == words.format(topic=topic)
    assert await message_log.end_offsets(topic) == {TopicPartition(topic, 0): 0}

    await message_log.publish([good, OutgoingMessage(topic, "k", b"enum", {"type": Kind.SCHEDULED})])
    [first, second] = await message_log.read(topic)
    assert (first.headers, second.headers) == ({"type": "fine", "accents": "Zoë ✓"}, {"type": "event.scheduled"})
