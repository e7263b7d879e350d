"""The envelope around every integration event, and how it travels as a log record (payload + headers)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic_core import from_json

from gatherly.contracts.base import IntegrationEvent, schema_for
from gatherly.kernel.frozen import quick_init
from gatherly.kernel.log.base import OutgoingMessage, Record
from gatherly.kernel.tracing import current_headers

# What caused the work in progress: set per HTTP request (correlation) and per consumed message (causation),
# so every event a request or a handler publishes can be traced back.
correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)
causation_id_var: ContextVar[str | None] = ContextVar("causation_id", default=None)

HEADER_FIELDS = (
    "id",
    "type",
    "schema_version",
    "aggregate_type",
    "aggregate_id",
    "occurred_at",
    "correlation_id",
    "causation_id",
    "traceparent",
    "tracestate",
)
_HEADER_FIELDS = frozenset(HEADER_FIELDS)


_RAND_B = (1 << 62) - 1  # the low 62 bits of an id: random
_VARIANT = 0b10 << 62  # RFC 9562's variant, in the two bits above them


class MessageIds:
    """UUIDv7 text (RFC 9562): 48 bits of Unix time in milliseconds, the version, a 12-bit counter, the variant and
    62 random bits. The counter (the RFC's "fixed-length dedicated counter") orders the ids one process makes within a
    millisecond; past 4,096 in one millisecond, or when the clock steps back, the time field goes on from the last
    id's, so a process's ids never go backwards. The random bits come from `os.urandom` (as `uuid4`'s), so a forked
    process makes other ids. uuid6's `uuid7` took ~4-6 µs an id (a `UUID` object, `secrets.randbits`), this ~2: every
    published event has one. Not locked: ids are made on the event loop's thread (the order holds per thread)."""

    def __init__(self) -> None:
        self._ms = 0
        self._counter = 0

    def __call__(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms > self._ms:
            self._ms, self._counter = ms, 0
        elif self._counter < 0xFFF:
            self._counter += 1
        else:
            self._ms, self._counter = self._ms + 1, 0
        high = (self._ms << 16 | 0x7000 | self._counter).to_bytes(8, "big").hex()
        low = (int.from_bytes(os.urandom(8), "big") & _RAND_B | _VARIANT).to_bytes(8, "big").hex()
        return f"{high[:8]}-{high[8:12]}-{high[12:]}-{low[:4]}-{low[4:]}"


# One per process: a process's ids are ordered against each other.
_message_ids = MessageIds()


def new_message_id() -> str:
    """A UUIDv7: time-ordered, so each consumer's inbox rows (keyed by consumer and message id) sit in time order
    in the key's index, and pruning the oldest deletes a contiguous run of its pages instead of rows scattered
    over all of them (random UUIDs made pruning stall the loop; bench/reports/loop_stall.md)."""
    return _message_ids()


class UnknownEventType(Exception):
    """A message whose type or version this build has no schema for."""


@quick_init  # the batch consumer builds one per message
@dataclass(frozen=True, slots=True)
class Envelope:
    id: str
    type: str
    schema_version: int
    aggregate_type: str
    aggregate_id: str
    occurred_at: datetime
    payload: dict[str, Any]
    correlation_id: str | None = None
    causation_id: str | None = None
    # W3C trace context of the work that published the event (kernel/tracing.py); None while tracing is off.
    traceparent: str | None = None
    tracestate: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def wrap(cls, event: IntegrationEvent, occurred_at: datetime) -> Envelope:
        message_id = new_message_id()
        traceparent, tracestate = current_headers()
        return cls(
            id=message_id,
            type=event.TYPE,
            schema_version=event.VERSION,
            aggregate_type=event.TOPIC,
            aggregate_id=event.aggregate_id,
            occurred_at=occurred_at,
            payload=event.model_dump(mode="json"),
            correlation_id=correlation_id_var.get() or message_id,
            causation_id=causation_id_var.get(),
            traceparent=traceparent,
            tracestate=tracestate,
        )

    def headers(self) -> dict[str, str]:
        values = {
            "id": self.id,
            "type": self.type,
            "schema_version": str(self.schema_version),
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "occurred_at": self.occurred_at.isoformat(),
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "traceparent": self.traceparent,
            "tracestate": self.tracestate,
        }
        return {**self.extra_headers, **{k: v for k, v in values.items() if v is not None}}

    def to_message(self) -> OutgoingMessage:
        """In the log, the payload is the value and everything else travels as headers (as with Kafka)."""
        return OutgoingMessage(
            topic=self.aggregate_type,
            key=self.aggregate_id,
            value=json.dumps(self.payload, separators=(",", ":")).encode(),
            headers=self.headers(),
        )

    @classmethod
    def from_record(cls, record: Record) -> Envelope:
        """The envelope a record carries. The batch consumer makes one per message: the fields are given by position,
        in their order (by keyword, the call took two fifths longer)."""
        headers = record.headers
        get = headers.get
        return cls(
            headers["id"],
            headers["type"],
            int(get("schema_version", "1")),
            get("aggregate_type", record.topic),
            get("aggregate_id", record.key),
            datetime.fromisoformat(headers["occurred_at"]),
            parse_payload(record.value),
            get("correlation_id"),
            get("causation_id"),
            get("traceparent"),
            get("tracestate"),
            _extra_headers(headers),
        )

    def event(self) -> IntegrationEvent:
        """The payload parsed with its registered schema (unknown fields ignored)."""
        schema = schema_for(self.type, self.schema_version)
        if schema is None:
            raise UnknownEventType(f"{self.type} v{self.schema_version}")
        return schema.model_validate(self.payload)


def _extra_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers that are not the envelope's own fields, in their order. Most records have none: one set check
    (C code) answers that, where the comprehension looked up every header (0.5-0.6 µs a message of the batch path)."""
    if _HEADER_FIELDS.issuperset(headers):
        return {}
    return {name: value for name, value in headers.items() if name not in _HEADER_FIELDS}


def parse_payload(value: bytes) -> Any:
    """A record's JSON value, as `json.loads` reads it. pydantic-core's parser reads our payloads 5-7 times faster
    (0.2-0.4 µs against 1.8-2.4 µs: `json.loads` first guesses the bytes' encoding); what it refuses and `json.loads`
    reads (lone surrogates, a byte-order mark) goes to `json.loads`, so both the result and the error are as before."""
    try:
        return from_json(value)
    except ValueError:
        return json.loads(value)
