"""What only the Kafka backend needs showing: fencing of a frozen member's commit, and an unreachable cluster."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from gatherly.kernel.log import (
    KafkaLog,
    LogUnavailable,
    OutgoingMessage,
    Record,
    TopicConfig,
    TopicPartition,
    UnknownTopic,
)
from gatherly.kernel.log.kafka import _records
from gatherly.kernel.testing import LOG_BACKENDS, free_port

from .support import DEADLINE_S, consume, keys_on_each_partition, messages, wait_until

MEMBER = Path(__file__).with_name("kafka_member.py")


def positions(records: list[Record]) -> set[tuple[int, int]]:
    return {(r.partition, r.offset) for r in records}


async def test_a_log_whose_brokers_cannot_be_reached_is_unavailable() -> None:
    # Nothing listens there: the infrastructure error the delivery code retries, not a crash or a hang.
    log = KafkaLog(f"127.0.0.1:{free_port()}", request_timeout=2.0)
    with pytest.raises(LogUnavailable):
        await asyncio.wait_for(log.start(), DEADLINE_S)


def test_records_sharing_a_millisecond_share_its_timestamp_and_are_the_records_built_one_by_one() -> None:
    # `_records` gives the fields by position and builds a record's timestamp only when its millisecond differs from
    # the record before it: the result must be what building each record alone, by keyword, gives.
    stamps = [1_764_652_800_123] * 3 + [1_764_652_800_124, 1_764_652_800_123, 0, 0, 1_764_652_801_000]
    # Header values: plain, none at all, null, not UTF-8, and a name given twice (the later value wins, in the
    # first one's place).
    headers: list[list[tuple[str, bytes | None]]] = [
        [("id", b"a"), ("type", b"t")],
        [],
        [("empty", None)],
        [("id", b"a"), ("odd", b"\xffx"), ("id", b"b")],
    ]
    keys = [b"k1", None, b"\xff\xfe"]
    values = [b'{"n": 1}', None, b"\x00"]
    messages = [
        ConsumerRecord("topic", n % 2, n, stamp, 0, keys[n % 3], values[n % 3], None, 2, 8, headers[n % 4])
        for n, stamp in enumerate(stamps)
    ]
    one_by_one = [
        Record(
            topic=m.topic,
            partition=m.partition,
            offset=m.offset,
            key=(m.key or b"").decode(errors="replace"),
            value=m.value or b"",
            headers={name: "" if value is None else value.decode(errors="replace") for name, value in m.headers},
            timestamp=datetime.fromtimestamp(m.timestamp / 1000, UTC),
        )
        for m in messages
    ]
    records = _records(messages)
    assert records == one_by_one
    assert [r.timestamp for r in records] == [r.timestamp for r in one_by_one]  # equal instants, and the same zone
    assert all(r.timestamp.tzinfo is UTC for r in records)
    assert records[0].timestamp is records[1].timestamp is records[2].timestamp
    assert records[3].timestamp is not records[4].timestamp
    assert records[5].timestamp == datetime(1970, 1, 1, tzinfo=UTC)


if "kafka" in LOG_BACKENDS:  # these need the session's broker, started only when Kafka is under test

    async def test_a_frozen_member_loses_its_partitions_and_its_late_commit_is_refused(
        kafka_bootstrap: str, unique: Callable[[str], str]
    ) -> None:
        topic, group = unique("fenced"), unique("group")
        async with KafkaLog(kafka_bootstrap, session_timeout=3.0) as log:
            await log.ensure_topics([TopicConfig(topic, partitions=2)])
            await log.publish(messages(topic, keys_on_each_partition(2, per_partition=1), per_key=3))
            frozen = await asyncio.create_subprocess_exec(
                sys.executable,
                str(MEMBER),
                kafka_bootstrap,
                topic,
                group,
                "6",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                assert frozen.stdout is not None and frozen.stdin is not None
                line = (await asyncio.wait_for(frozen.stdout.readline(), DEADLINE_S * 2)).decode()
                assert line.startswith("holding"), line
                frozen.send_signal(signal.SIGSTOP)  # no heartbeats: past the session timeout it is out

                successor = log.consumer(group, [topic])
                everything = {TopicPartition(topic, 0), TopicPartition(topic, 1)}
                seen: list[Record] = []

                async def took_over() -> bool:
                    seen.extend(await successor.poll(timeout=0.1))
                    return await successor.assignment() == everything

                await wait_until(took_over, "the other member took every partition", deadline_s=DEADLINE_S * 2)
                # The frozen member commits the moment it runs again, before it can notice it was replaced.
                frozen.stdin.write(b"commit\n")
                await frozen.stdin.drain()
                frozen.send_signal(signal.SIGCONT)
                outcome = (await asyncio.wait_for(frozen.stdout.readline(), DEADLINE_S)).decode()

                assert outcome.startswith("refused:"), outcome
                assert [await log.committed(group, tp) for tp in sorted(everything)] == [None, None]
                # The new owner read from the start, since the zombie's progress never landed.
                # (Possibly twice: the zombie rejoins and the group rebalances, so reading again from no commit.)
                read = positions(seen)
                read |= positions(await consume(successor, lambda got: len(read | positions(got)) >= 6))
                assert read == {(p, o) for p in (0, 1) for o in range(3)}
                await successor.close()
            finally:
                with contextlib.suppress(ProcessLookupError):
                    frozen.send_signal(signal.SIGCONT)
                    frozen.kill()
                await frozen.wait()

    async def test_a_publish_to_an_unknown_topic_is_refused_without_creating_it(
        kafka_bootstrap: str, unique: Callable[[str], str]
    ) -> None:
        # The broker never auto-creates topics, and the log checks before sending rather than waiting on metadata.
        topic = unique("never-created")
        async with KafkaLog(kafka_bootstrap) as log:
            started = asyncio.get_running_loop().time()
            with pytest.raises(UnknownTopic):
                await log.publish([OutgoingMessage(topic, "k", b"v")])
            assert asyncio.get_running_loop().time() - started < 5.0
            assert await log.end_offsets(topic) == {}

    async def test_a_record_from_another_producer_with_broken_key_and_headers_is_still_delivered(
        kafka_bootstrap: str, unique: Callable[[str], str]
    ) -> None:
        # Not UTF-8, a null header value: the worker must get the record (and park it), not have its poll loop fail.
        topic = unique("foreign")
        async with KafkaLog(kafka_bootstrap) as log:
            await log.ensure_topics([TopicConfig(topic, partitions=1)])
            outsider = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await outsider.start()
            try:
                await outsider.send_and_wait(
                    topic, b"\x00payload", key=b"\xff\xfe", headers=[("type", b"\xc3\x28"), ("empty", None)]
                )
            finally:
                await outsider.stop()
            consumer = log.consumer(unique("group"), [topic])
            [record] = await consume(consumer, lambda got: len(got) >= 1)
            await consumer.close()

        assert (record.key, record.value) == ("\ufffd\ufffd", b"\x00payload")
        assert record.headers == {"type": "\ufffd(", "empty": ""}

    async def test_a_member_busy_past_its_session_timeout_stays_in_the_group_and_its_commit_is_accepted(
        kafka_bootstrap: str, unique: Callable[[str], str]
    ) -> None:
        # Heartbeats run in aiokafka's background task, not in poll: a handler slower than the session timeout does
        # not cost the member its partitions (a newcomer would still take its share: aiokafka rebalances meanwhile).
        topic, group = unique("busy"), unique("group")
        async with KafkaLog(kafka_bootstrap, session_timeout=3.0) as log:
            await log.ensure_topics([TopicConfig(topic, partitions=2)])
            busy = log.consumer(group, [topic])
            everything = {TopicPartition(topic, 0), TopicPartition(topic, 1)}
            assert await busy.assignment() == everything
            members = await log.group_members(group)

            await asyncio.sleep(2 * 3.0)  # "in a handler": no poll for twice the session timeout

            assert await log.group_members(group) == members
            assert await busy.assignment() == everything
            await busy.commit({TopicPartition(topic, 0): 0})
            assert await log.committed(group, TopicPartition(topic, 0)) == 0
            await busy.close()
