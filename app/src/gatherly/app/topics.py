"""The event catalog's topics as Kafka needs them created: `gatherly kafka init` and `gatherly stack up`."""

from __future__ import annotations

from gatherly.app.services import ALL
from gatherly.kernel.delivery import dead_letter_topic, redelivery_topic
from gatherly.kernel.log.base import TopicConfig
from gatherly.kernel.runtime import ServiceDefinition


def catalog_topics(partitions: int) -> list[TopicConfig]:
    """Every topic the services publish or read (records kept 7 days), the dead-letter topic of each (kept until
    an operator acts) and each consumer group's redelivery topic (kept: `dlq replay` writes there). The same
    topics each service creates at start; none is compacted, since each holds events whose history is replayed."""
    topics = sorted({t for d in ALL.values() for t in topics_of(d)})
    groups = sorted(g for d in ALL.values() for g in d.consumers.specs)
    return (
        [TopicConfig(t, partitions=partitions) for t in topics]
        + [TopicConfig(dead_letter_topic(t), partitions=partitions, retention_ms=None) for t in topics]
        + [TopicConfig(redelivery_topic(g), partitions=partitions, retention_ms=None) for g in groups]
    )


def topics_of(definition: ServiceDefinition) -> set[str]:
    """The topics a service publishes to or consumes from."""
    return set(definition.topics) | {t for s in definition.consumers.specs.values() for t in s.topics}
