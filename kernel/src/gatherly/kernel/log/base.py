"""The message log interface: what the embedded log and Kafka both provide (topics, partitions, groups, offsets)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from gatherly.kernel.frozen import quick_init


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to append: the key picks the partition, so one key's messages keep their order."""

    topic: str
    key: str
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@quick_init  # the batch consumer builds one per message
@dataclass(frozen=True, slots=True)
class Record:
    """A message as stored in the log, with its position."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: Mapping[str, str]
    timestamp: datetime


class TopicPartition(NamedTuple):
    """A partition of a topic. A named tuple, not a dataclass: consumers look partitions up in dicts and sort them on
    every poll, and a tuple's hash and comparison are C code (a frozen dataclass's hash is a Python call, ~4x the
    time; a process's consumer groups made a few hundred such calls per request that published one event)."""

    topic: str
    partition: int


@dataclass(frozen=True)
class TopicConfig:
    name: str
    partitions: int = 4
    # None keeps records forever; otherwise records older than this are deleted by `enforce_retention`.
    retention_ms: int | None = 7 * 24 * 3600 * 1000


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`), as a signed 32-bit int.

    Written out because no maintained library exposes it without a Kafka client; tests pin it to Kafka's own
    test vectors."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length % 4
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: str, partitions: int) -> int:
    """Kafka's default partitioner on the key's UTF-8 bytes: `toPositive(murmur2(key)) % partitions`.

    Debezium's outbox router keys records by `aggregateid` with the string key converter (UTF-8 bytes), so a
    key lands on the same partition whoever publishes it: the relay, Debezium, or a Kafka producer."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def utcnow() -> datetime:
    return datetime.now(UTC)


class GroupNotEmpty(RuntimeError):
    """A group's committed offsets cannot be reset while it has live members (they would overwrite the reset)."""


class CommitFailed(RuntimeError):
    """The commit was refused: this member no longer owns the partition (its generation is stale, e.g. it was
    silent past the session timeout and another member took over). Its records will be redelivered there."""


class UnknownTopic(LookupError):
    """Publishing to a topic that was never created: topics are created explicitly with `ensure_topics`."""


class InvalidHeaders(ValueError):
    """A message whose headers Kafka cannot carry: a name or a value that is not text (Kafka's are UTF-8 bytes), or
    text that is not UTF-8 (a lone surrogate). Both logs refuse it, with the same words, before anything of the
    publish is appended: the embedded log's JSON would take a number or None (and write NaN as null), so code that
    works there would break only on Kafka."""


def check_headers(message: OutgoingMessage) -> None:
    """Raises `InvalidHeaders` naming the first header of `message` that Kafka would refuse."""
    for name, value in message.headers.items():
        for part, text in (("name", name), ("value", value)):
            if not isinstance(text, str):
                raise InvalidHeaders(
                    f"header {name!r} of a message to topic {message.topic!r}: its {part} is"
                    f" {type(text).__name__}, not text"
                )
            if not text.isascii():
                try:
                    text.encode()
                except UnicodeEncodeError:
                    raise InvalidHeaders(
                        f"header {name!r} of a message to topic {message.topic!r}: its {part} is not UTF-8 text"
                        " (it holds a lone surrogate)"
                    ) from None


class LogUnavailable(ConnectionError):
    """The log cannot be reached or written right now: an infrastructure error, worth retrying."""


# Called with the partitions gained or about to be lost. `on_revoked` runs BEFORE the partitions are released,
# so a consumer commits what it has processed there and the next owner starts exactly after it.
RebalanceCallback = Callable[[set["TopicPartition"]], Awaitable[None]]


class LogConsumer(Protocol):
    """A member of a consumer group. Partitions of its topics are shared among the group's live members."""

    group: str
    # A hint its owner may set: the record types it handles (None: all). Every record is still returned by `poll`;
    # a backend may wake the member later for appends of other types (the embedded log does; Kafka ignores it).
    handles: frozenset[str] | None

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Records after this member's position on its assigned partitions, in offset order per partition.

        Waits up to `timeout` seconds for something to arrive; returns [] if nothing did.
        The position starts at the group's committed offset (or the beginning when none is committed)."""
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Durably record, for the group, the NEXT offset to read on each partition.

        Fenced by generation: raises `CommitFailed` if this member does not own every partition at the
        generation it was assigned (a zombie's commit never overwrites the new owner's progress)."""
        ...

    def pause(self, partitions: set[TopicPartition]) -> None:
        """Stop returning records of these partitions from `poll` (they stay assigned; heartbeats go on)."""
        ...

    def resume(self, partitions: set[TopicPartition]) -> None:
        """Return records of these partitions from `poll` again, from the current position."""
        ...

    async def seek(self, partition: TopicPartition, offset: int) -> None:
        """Move this member's read position (not the committed offset)."""
        ...

    async def assignment(self) -> set[TopicPartition]:
        """The partitions this member currently reads (joining the group and rebalancing if needed)."""
        ...

    async def close(self) -> None:
        """Leave the group (after `on_revoked`); its partitions go to the remaining members."""
        ...


class MessageLog(Protocol):
    """A durable, partitioned, replayable log with consumer groups: the embedded log or Kafka."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ensure_topics(self, topics: Sequence[TopicConfig]) -> None:
        """Create the topics that do not exist yet (existing ones are left as they are)."""
        ...

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Append the messages; when this returns they are durable. A topic never created raises
        `UnknownTopic` (as Kafka with auto-creation off): retention and partitions are always chosen."""
        ...

    def consumer(
        self,
        group: str,
        topics: Sequence[str],
        *,
        on_assigned: RebalanceCallback | None = None,
        on_revoked: RebalanceCallback | None = None,
    ) -> LogConsumer:
        """A new member of `group` reading `topics`. It heartbeats in the background from its first poll
        until closed, however long the caller takes between polls."""
        ...

    async def group_members(self, group: str) -> set[str]:
        """The group's live members (for admin commands that must not run beside them)."""
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
