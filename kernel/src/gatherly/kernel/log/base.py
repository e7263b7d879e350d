"""The message log interface: what the embedded log and Kafka both provide (topics, partitions, groups, offsets)."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to append: the key picks the partition, so one key's messages keep their order."""

    topic: str
    key: str
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    """A message as stored in the log, with its position."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: Mapping[str, str]
    timestamp: datetime


@dataclass(frozen=True, order=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True)
class TopicConfig:
    name: str
    partitions: int = 4
    # None keeps records forever; otherwise records older than this are deleted by `enforce_retention`.
    retention_ms: int | None = 7 * 24 * 3600 * 1000


def partition_for(key: str, partitions: int) -> int:
    """Stable key → partition mapping (the same in every process and every run)."""
    return zlib.crc32(key.encode()) % partitions


def utcnow() -> datetime:
    return datetime.now(UTC)


class GroupNotEmpty(RuntimeError):
    """A group's committed offsets cannot be reset while it has live members (they would overwrite the reset)."""


class LogConsumer(Protocol):
    """A member of a consumer group. Partitions of its topics are shared among the group's live members."""

    group: str

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Records after this member's position on its assigned partitions, in offset order per partition.

        Waits up to `timeout` seconds for something to arrive; returns [] if nothing did.
        The position starts at the group's committed offset (or the beginning when none is committed)."""
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Durably record, for the group, the NEXT offset to read on each partition."""
        ...

    async def seek(self, partition: TopicPartition, offset: int) -> None:
        """Move this member's read position (not the committed offset)."""
        ...

    async def assignment(self) -> set[TopicPartition]:
        """The partitions this member currently reads."""
        ...

    async def close(self) -> None:
        """Leave the group; its partitions go to the remaining members."""
        ...


class MessageLog(Protocol):
    """A durable, partitioned, replayable log with consumer groups: the embedded log or Kafka."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ensure_topics(self, topics: Sequence[TopicConfig]) -> None:
        """Create the topics that do not exist yet (existing ones are left as they are)."""
        ...

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Append the messages; when this returns they are durable. Unknown topics are created with defaults."""
        ...

    def consumer(self, group: str, topics: Sequence[str]) -> LogConsumer:
        """A new member of `group` reading `topics`."""
        ...

    async def committed(self, group: str, partition: TopicPartition) -> int | None:
        """The group's committed next offset on a partition, or None."""
        ...

    async def reset_group(self, group: str, topics: Sequence[str], to: str | int = "earliest") -> None:
        """Set a group's committed offsets on all partitions of `topics` to the beginning ("earliest"),
        the end ("latest"), or a given offset. Used to rebuild read models by replay.

        The group must have no live members (stop its consumers first), as in Kafka: otherwise raises
        `GroupNotEmpty`. Unknown topics are ignored."""
        ...

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        """The next offset to be written on each partition of a topic."""
        ...

    async def read(self, topic: str, from_offsets: Mapping[int, int] | None = None, limit: int = 1000) -> list[Record]:
        """Read records directly (no group): for tools such as `gatherly dlq list`.

        `from_offsets` maps partition → first offset to read; partitions it leaves out are read from their
        beginning. At most `limit` records, in (partition, offset) order."""
        ...
