"""Conformance: replay by resetting a group's committed offsets (how read models are rebuilt)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gatherly.kernel.log import GroupNotEmpty, MessageLog, OutgoingMessage, TopicConfig, TopicPartition

from .support import consume, keys_on_each_partition, messages, values


async def a_fully_consumed_topic(log: MessageLog, unique: Callable[[str], str]) -> tuple[str, str, list[str]]:
    """A topic with 5 records on each of its 3 partitions, and a group that has read and committed them all."""
    topic, group = unique("topic"), unique("group")
    await log.ensure_topics([TopicConfig(topic, partitions=3)])
    sent = messages(topic, keys_on_each_partition(3, per_partition=1), per_key=5)
    await log.publish(sent)
    consumer = log.consumer(group, [topic])
    await consume(consumer, lambda got: len(got) >= len(sent))
    await consumer.close()
    return topic, group, [m.value.decode() for m in sent]


async def test_reset_to_earliest_makes_the_group_read_everything_again(
    message_log: MessageLog, unique: Callable[[str], str]
) -> None:
    topic, group, sent = await a_fully_consumed_topic(message_log, unique)

    await message_log.reset_group(group, [topic], "earliest")

    assert [await message_log.committed(group, TopicPartition(topic, p)) for p in range(3)] == [0, 0, 0]
    consumer = message_log.consumer(group, [topic])
    again = await consume(consumer, lambda got: len(got) >= len(sent))
    assert sorted(values(again)) == sorted(sent)
    assert await consumer.poll(timeout=0.2) == []
    await consumer.close()


async def test_reset_to_latest_skips_what_is_already_there(
    message_log: MessageLog, unique: Callable[[str], str]
) -> None:
    topic, group, _ = await a_fully_consumed_topic(message_log, unique)
    await message_log.reset_group(group, [topic], "earliest")

    await message_log.reset_group(group, [topic], "latest")

    ends = await message_log.end_offsets(topic)
    assert {tp: await message_log.committed(group, tp) for tp in ends} == ends
    consumer = message_log.consumer(group, [topic])
    assert await consumer.poll(timeout=0.2) == []
    await message_log.publish([OutgoingMessage(topic, "new", b"after the reset")])
    assert values(await consume(consumer, lambda got: len(got) >= 1)) == ["after the reset"]
    await consumer.close()


async def test_reset_to_an_offset_rereads_every_partition_from_there(
    message_log: MessageLog, unique: Callable[[str], str]
) -> None:
    topic, group, _ = await a_fully_consumed_topic(message_log, unique)

    await message_log.reset_group(group, [topic], 3)

    consumer = message_log.consumer(group, [topic])
    again = await consume(consumer, lambda got: len(got) >= 3 * 2)
    assert sorted((r.partition, r.offset) for r in again) == [(p, o) for p in range(3) for o in (3, 4)]
    await consumer.close()


async def test_a_group_with_a_live_member_cannot_be_reset(
    message_log: MessageLog, unique: Callable[[str], str]
) -> None:
    topic, group, _ = await a_fully_consumed_topic(message_log, unique)
    member = message_log.consumer(group, [topic])
    assert await member.poll(timeout=0.2) == []  # joins the group

    with pytest.raises(GroupNotEmpty):
        await message_log.reset_group(group, [topic], "earliest")

    await member.close()
    await message_log.reset_group(group, [topic], "earliest")
    assert await message_log.committed(group, TopicPartition(topic, 0)) == 0
