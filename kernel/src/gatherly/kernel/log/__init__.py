"""The message log: one interface (Kafka's semantics), its embedded SQLite and Kafka implementations."""

from pathlib import Path

from gatherly.kernel.log.base import (
    CommitFailed,
    GroupNotEmpty,
    InvalidHeaders,
    LogConsumer,
    LogUnavailable,
    MessageLog,
    OutgoingMessage,
    Record,
    TopicConfig,
    TopicPartition,
    UnknownTopic,
    check_headers,
    murmur2,
    partition_for,
    utcnow,
)
from gatherly.kernel.log.embedded import EmbeddedConsumer, EmbeddedLog, assign_partitions, open_embedded_log
from gatherly.kernel.log.kafka import KafkaConsumer, KafkaLog
from gatherly.kernel.settings import LogBackend, Settings

__all__ = [
    "CommitFailed",
    "EmbeddedConsumer",
    "EmbeddedLog",
    "GroupNotEmpty",
    "InvalidHeaders",
    "KafkaConsumer",
    "KafkaLog",
    "LogConsumer",
    "LogUnavailable",
    "MessageLog",
    "OutgoingMessage",
    "Record",
    "TopicConfig",
    "TopicPartition",
    "UnknownTopic",
    "assign_partitions",
    "check_headers",
    "log_from_settings",
    "murmur2",
    "open_embedded_log",
    "partition_for",
    "utcnow",
]


def log_from_settings(settings: Settings, *, embedded_path: Path, embedded_poll_interval: float) -> MessageLog:
    """The configured message log, not yet started: the embedded file, or a Kafka cluster."""
    if settings.log_backend is LogBackend.KAFKA:
        return KafkaLog(
            settings.kafka_bootstrap_servers,
            replication_factor=settings.kafka_replication_factor,
            session_timeout=settings.kafka_session_timeout,
        )
    return EmbeddedLog(embedded_path, poll_interval=embedded_poll_interval)
