"""The message log: one interface (Kafka's semantics) and its embedded SQLite implementation."""

from gatherly.kernel.log.base import (
    GroupNotEmpty,
    LogConsumer,
    MessageLog,
    OutgoingMessage,
    Record,
    TopicConfig,
    TopicPartition,
    partition_for,
    utcnow,
)
from gatherly.kernel.log.embedded import EmbeddedConsumer, EmbeddedLog, assign_partitions, open_embedded_log

__all__ = [
    "EmbeddedConsumer",
    "EmbeddedLog",
    "GroupNotEmpty",
    "LogConsumer",
    "MessageLog",
    "OutgoingMessage",
    "Record",
    "TopicConfig",
    "TopicPartition",
    "assign_partitions",
    "open_embedded_log",
    "partition_for",
    "utcnow",
]
