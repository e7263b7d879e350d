"""The event catalog's topics as Kafka needs them created: `gatherly kafka init` and `gatherly stack up`."""

from __future__ import annotations

from gatherly.app.services import ALL
from gatherly.kernel.delivery import dead_letter_topic_config, event_topic, redelivery_topic_config
from gatherly.kernel.log.base import TopicConfig
from gatherly.kernel.runtime import ServiceDefinition


def catalog_topics(partitions: int) -> list[TopicConfig]:
    """Every topic the services publish or read (records kept 7 days, or less where the events say so: personal
    data), the dead-letter topic of each (kept until an operator acts, or as briefly as its topic where that is
    short) and each consumer group's redelivery topic (`dlq replay` writes there). The same topics each service
    creates at start; none is compacted, since each holds events whose history is replayed."""
    topics = sorted({t for d in ALL.values() for t in topics_of(d)})
    groups = {g: s.topics for d in ALL.values() for g, s in d.consumers.specs.items()}
    return (
        [event_topic(t, partitions) for t in topics]
        + [dead_letter_topic_config(t, partitions) for t in topics]
        + [redelivery_topic_config(g, groups[g], partitions) for g in sorted(groups)]
    )


def topics_of(definition: ServiceDefinition) -> set[str]:
    """The topics a service publishes to or consumes from."""
    return set(definition.topics) | {t for s in definition.consumers.specs.values() for t in s.topics}
