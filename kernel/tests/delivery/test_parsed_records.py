"""Records handed to several consumer groups of a process are parsed once: the envelope always, the event when its
schema is deeply frozen, so that no group's handler can change what another's is given (`ParsedRecords`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from ledger import LedgerUnitOfWork
from pydantic import ValidationError

from gatherly.contracts.base import IntegrationEvent
from gatherly.kernel.db import Database
from gatherly.kernel.delivery import ConsumerRegistry, ConsumerWorker, ParsedRecords
from gatherly.kernel.log import EmbeddedLog
from gatherly.kernel.log.base import OutgoingMessage, Record, TopicConfig
from gatherly.kernel.messages import Envelope

NOON = datetime(2026, 1, 2, 12, tzinfo=UTC)


class Tagged(IntegrationEvent):
    TOPIC: ClassVar[str] = "parsed-records"
    TYPE: ClassVar[str] = "parsed_records.tagged"
    AGGREGATE_ID: ClassVar[str] = "key"

    key: str
    tags: tuple[str, ...] = ()


class Listed(IntegrationEvent):
    """The same, with a list: its events can be changed in place, so each group validates its own."""

    TOPIC: ClassVar[str] = "parsed-records"
    TYPE: ClassVar[str] = "parsed_records.listed"
    AGGREGATE_ID: ClassVar[str] = "key"

    key: str
    tags: list[str] = []


def message_of(event: IntegrationEvent) -> OutgoingMessage:
    return Envelope.wrap(event, NOON).to_message()


def record_of(message: OutgoingMessage, offset: int = 0) -> Record:
    return Record(message.topic, 0, offset, message.key, message.value, message.headers, NOON)


def test_a_record_is_parsed_once_for_every_group_and_its_frozen_event_shared() -> None:
    parsed = ParsedRecords()
    record = record_of(message_of(Tagged(key="k", tags=("a", "b"))))
    first, second = parsed.envelope(record), parsed.envelope(record)
    assert first is second
    assert first == Envelope.from_record(record)  # what each group parsed for itself before
    event = parsed.event(record, first)
    assert parsed.event(record, second) is event
    assert event == Envelope.from_record(record).event() == Tagged(key="k", tags=("a", "b"))


def test_an_event_of_a_schema_that_is_not_deeply_frozen_is_validated_for_each_group() -> None:
    parsed = ParsedRecords()
    record = record_of(message_of(Listed(key="k", tags=["a"])))
    envelope = parsed.envelope(record)
    first, second = parsed.event(record, envelope), parsed.event(record, envelope)
    assert first == second and first is not second
    assert isinstance(first, Listed)
    first.tags.append("changed by one group's handler")
    assert parsed.event(record, envelope) == Listed(key="k", tags=["a"])


def test_another_record_of_the_same_message_is_parsed_on_its_own() -> None:
    # Kafka hands each group records of its own: nothing is taken for another object with the same content.
    parsed = ParsedRecords()
    message = message_of(Tagged(key="k"))
    one, other = record_of(message), record_of(message)
    assert parsed.envelope(one) is not parsed.envelope(other)
    assert parsed.envelope(one) == parsed.envelope(other)


def test_an_envelope_the_worker_did_not_get_here_gets_its_own_event() -> None:
    parsed = ParsedRecords()
    record = record_of(message_of(Tagged(key="k")))
    parsed.event(record, parsed.envelope(record))
    own = Envelope.from_record(record)
    assert parsed.event(record, own) is not parsed.event(record, parsed.envelope(record))


def test_a_record_that_does_not_parse_fails_for_every_group_and_is_not_kept() -> None:
    parsed = ParsedRecords()
    message = message_of(Tagged(key="k"))
    no_id = record_of(OutgoingMessage(message.topic, message.key, message.value, {**message.headers, "id": ""}))
    headers = {name: value for name, value in message.headers.items() if name != "id"}
    without_id = record_of(OutgoingMessage(message.topic, message.key, message.value, headers))
    for _ in range(2):
        with pytest.raises(KeyError):
            parsed.envelope(without_id)
    assert parsed.envelope(no_id).id == ""
    bad_payload = record_of(OutgoingMessage(message.topic, message.key, b'{"key": 5}', message.headers))
    envelope = parsed.envelope(bad_payload)
    for _ in range(2):
        with pytest.raises(ValidationError):
            parsed.event(bad_payload, envelope)


MESSAGE = message_of(Tagged(key="k"))
SIZE = len(MESSAGE.value) + len(MESSAGE.key) + sum(len(name) + len(value) for name, value in MESSAGE.headers.items())
# A record whose headers (a producer's trace, say) weigh far more than its value.
TRACED = OutgoingMessage(MESSAGE.topic, MESSAGE.key, MESSAGE.value, {**MESSAGE.headers, "trace": "t" * 4096})
TRACED_SIZE = SIZE + len("trace") + 4096


@pytest.mark.parametrize(
    ("message", "size", "capacity", "max_bytes"),
    [(MESSAGE, SIZE, 2, 1 << 20), (MESSAGE, SIZE, 100, 2 * SIZE), (TRACED, TRACED_SIZE, 100, 2 * TRACED_SIZE)],
    ids=["records", "bytes", "bytes-of-headers"],
)
def test_the_oldest_records_are_let_go_past_the_capacity_or_the_bytes(
    message: OutgoingMessage, size: int, capacity: int, max_bytes: int
) -> None:
    """The bytes are those of the value, the key and the headers' names and values."""
    parsed = ParsedRecords(capacity=capacity, max_bytes=max_bytes)
    records = [record_of(message, offset) for offset in range(3)]
    first = [parsed.envelope(record) for record in records]
    assert parsed.envelope(records[2]) is first[2]
    assert parsed.envelope(records[0]) is not first[0]  # let go, so parsed again
    assert len(parsed._parsed) == 2 and parsed._bytes == 2 * size
    event = parsed.event(records[2], first[2])  # keeping the event keeps the size the record was counted with
    assert parsed.event(records[2], first[2]) is event and parsed._bytes == 2 * size


def test_a_record_whose_headers_alone_pass_the_bytes_is_not_kept() -> None:
    parsed = ParsedRecords(max_bytes=TRACED_SIZE - 1)
    record = record_of(TRACED)
    assert parsed.envelope(record) is not parsed.envelope(record)
    assert not parsed._parsed and parsed._bytes == 0


async def test_groups_of_a_process_reading_the_embedded_log_get_the_same_frozen_event(
    tmp_path: Path, ledger_db: Database
) -> None:
    received: dict[str, list[Any]] = {"first": [], "second": []}
    both = asyncio.Event()
    registry = ConsumerRegistry()
    for group in received:

        async def keep(event: IntegrationEvent, uow: LedgerUnitOfWork, group: str = group) -> None:
            received[group].append(event)
            if all(received.values()):
                both.set()

        registry.on(Tagged, group=f"parsed-records.{group}")(keep)
    parsed = ParsedRecords()
    async with EmbeddedLog(tmp_path / "log.sqlite", session_timeout=2.0, poll_interval=0.02) as log:
        await log.ensure_topics([TopicConfig(Tagged.TOPIC)])
        workers = [
            ConsumerWorker(spec, log, lambda: LedgerUnitOfWork(ledger_db), parsed=parsed)
            for spec in registry.specs.values()
        ]
        tasks = [asyncio.create_task(worker.run()) for worker in workers]
        try:
            await log.publish([message_of(Tagged(key="k", tags=("a",)))])
            async with asyncio.timeout(30):
                await both.wait()
        finally:
            for worker in workers:
                worker.stop()
            await asyncio.gather(*tasks)
    (first,), (second,) = received.values()
    assert first is second
    assert first == Tagged(key="k", tags=("a",))


def test_with_no_capacity_nothing_is_kept_and_every_group_parses_its_own() -> None:
    """As the process builds it on Kafka (app/compose.py), where each group's records are its own objects."""
    record = record_of(message_of(Tagged(key="k", tags=("a",))))
    kept_nothing = ParsedRecords(capacity=0)
    first, second = kept_nothing.envelope(record), kept_nothing.envelope(record)
    assert first == second and first is not second
    assert kept_nothing.event(record, first) is not kept_nothing.event(record, first)
    keeping = ParsedRecords()
    assert keeping.envelope(record) is keeping.envelope(record)
