"""The message log: one interface (Kafka's semantics) and its embedded SQLite implementation."""

from gatherly.kernel.log.base import (
    CommitFailed,
    GroupNotEmpty,
    LogConsumer,
    LogUnavailable,
    MessageLog,
    OutgoingMessage,
    Record,
    TopicConfig,
    TopicPartition,
    UnknownTopic,
    murmur2,
    partition_for,
    utcnow,
)
from gatherly.kernel.log.embedded import EmbeddedConsumer, EmbeddedLog, assign_partitions, open_embedded_log

__all__ = [
    "CommitFailed",
    "EmbeddedConsumer",
    "EmbeddedLog",
    "GroupNotEmpty",
    "LogConsumer",
    "LogUnavailable",
    "MessageLog",
    "OutgoingMessage",
    "Record",
    "TopicConfig",
    "TopicPartition",
    "UnknownTopic",
    "assign_partitions",
    "murmur2",
    "open_embedded_log",
    "partition_for",
    "utcnow",
]
