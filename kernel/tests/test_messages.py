"""Message ids: unique and time-ordered (the inbox key's order, which keeps its pruning a contiguous delete); an
envelope read back from its log record."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from gatherly.contracts.users import GeoPoint, UserProfileUpdated
from gatherly.kernel.log.base import OutgoingMessage, Record
from gatherly.kernel.messages import Envelope, MessageIds, new_message_id, parse_payload

NOON = "2026-01-02T12:00:00+00:00"


def test_message_ids_are_uuid7_in_the_order_they_were_made() -> None:
    ids = [new_message_id() for _ in range(2_000)]

    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {7}


def test_a_message_id_is_a_uuid7_of_the_time_it_was_made_with_its_version_and_variant_bits() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_message_id() for _ in range(100)]
    after = time.time_ns() // 1_000_000

    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # the canonical form: lower-case hex, dashes at 8-4-4-4-12
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after + 1  # 48 bits of Unix time in ms (+1: the counter may carry)
    assert len({uuid.UUID(text).int & ((1 << 62) - 1) for text in ids}) == len(ids)  # random low bits


def ids_at(times_ms: list[int], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids a fresh generator makes while the clock reads each of `times_ms` in turn."""
    clock = iter(times_ms)
    monkeypatch.setattr(time, "time_ns", lambda: next(clock) * 1_000_000)
    make = MessageIds()
    return [make() for _ in times_ms]


def test_ids_made_in_one_millisecond_keep_their_order_and_past_4096_the_time_field_moves_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = ids_at([1_700_000_000_000] * 5_000, monkeypatch)

    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    fields = [uuid.UUID(i).int for i in ids]
    assert [f >> 80 for f in fields[:4096]] == [1_700_000_000_000] * 4096
    assert [(f >> 64) & 0xFFF for f in fields[:4096]] == list(range(4096))  # the counter, after the version
    assert {f >> 80 for f in fields[4096:]} == {1_700_000_000_001}
    assert {uuid.UUID(i).version for i in ids} == {7}


def test_ids_keep_their_order_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = ids_at(
        [1_700_000_000_005, 1_700_000_000_006, 1_700_000_000_001, 1_700_000_000_002, 1_700_000_000_007], monkeypatch
    )

    assert ids == sorted(ids)
    assert [uuid.UUID(i).int >> 80 for i in ids] == [1_700_000_000_005, *[1_700_000_000_006] * 3, 1_700_000_000_007]


def a_record(message: OutgoingMessage, **headers: str) -> Record:
    return Record(
        topic=message.topic,
        partition=0,
        offset=7,
        key=message.key,
        value=message.value,
        headers={**message.headers, **headers},
        timestamp=datetime.now(UTC),
    )


def test_an_envelope_reads_back_from_its_record_with_other_headers_kept_apart() -> None:
    event = UserProfileUpdated(
        user_id="u1",
        email="ann@example.org",
        display_name="Ann",
        location=GeoPoint(lat=48.85, lng=2.35),
        topics=["go"],
        updated_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    envelope = replace(  # every field its own value: a field read into another's place shows
        Envelope.wrap(event, occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        schema_version=2,
        correlation_id="c-1",
        causation_id="c-2",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="vendor=1",
    )

    read = Envelope.from_record(a_record(envelope.to_message(), **{"gatherly.original_topic": "users"}))

    assert read == replace(envelope, extra_headers={"gatherly.original_topic": "users"})
    assert replace(read, schema_version=1).event() == event


def test_a_record_without_the_optional_headers_reads_with_their_defaults() -> None:
    message = OutgoingMessage("users", "u1", b'{"user_id":"u1"}', {"id": "m1", "type": "user.x", "occurred_at": NOON})

    read = Envelope.from_record(a_record(message))

    assert (read.schema_version, read.aggregate_type, read.aggregate_id) == (1, "users", "u1")
    assert (read.correlation_id, read.causation_id, read.traceparent, read.tracestate) == (None, None, None, None)
    assert read.extra_headers == {}


@pytest.mark.parametrize(
    "extra",
    [{}, {"z": "1"}, {"replayed_from": "t:0:1", "gatherly.original_topic": "users", "a": ""}],
)
def test_the_headers_that_are_not_envelope_fields_are_kept_in_their_order(extra: dict[str, str]) -> None:
    message = OutgoingMessage("users", "u1", b"{}", {"id": "m1", "type": "user.x", "occurred_at": NOON})
    headers = list(message.headers.items())
    for position, header in enumerate(extra.items()):  # interleaved with the envelope's own headers
        headers.insert(2 * position, header)

    read = Envelope.from_record(a_record(replace(message, headers=dict(headers))))

    assert list(read.extra_headers.items()) == list(extra.items())


# What other producers may write: the fast parser refuses some of it, and then `json.loads` decides.
PAYLOADS = [
    b'{"a":"\\ud800"}',  # a lone surrogate, escaped
    b'{"a":"\xed\xa0\x80"}',  # ... and encoded
    b'\xef\xbb\xbf{"a":1}',  # a UTF-8 byte-order mark
    b'{"a":"\xff"}',  # not UTF-8
    b'{"a":NaN,"b":Infinity,"c":-Infinity,"d":1e400,"e":-0.0,"f":5e-324,"g":0.1}',
    b'{"a":1,"a":2}',
    b'{"a":123456789012345678901234567890,"b":1.0,"c":-0}',
    b'{"a":"\\u0000\\/","\xc3\xa9":"\xe2\x80\xae"}',
    b' {"a":[1,{"b":null,"c":true}]} ',
    b'{"a":1} x',
    b"[1,2]",
    b'"s"',
    b"",
    b"{",
]


@pytest.mark.parametrize("value", PAYLOADS)
def test_a_payload_reads_as_json_loads_reads_it(value: bytes) -> None:
    try:
        expected = json.loads(value)
    except ValueError:
        with pytest.raises(ValueError):
            parse_payload(value)
        return

    assert repr(parse_payload(value)) == repr(expected)  # repr: NaN is not equal to itself
