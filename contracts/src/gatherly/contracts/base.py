"""The base of every integration event: a versioned pydantic schema that tolerates unknown fields."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

_REGISTRY: dict[tuple[str, int], type[IntegrationEvent]] = {}
_TOPIC_RETENTION: dict[str, timedelta] = {}


class IntegrationEvent(BaseModel):
    """An event one service publishes for others.

    TOPIC is the aggregate type (one topic per aggregate type), TYPE the event name in the past tense,
    AGGREGATE_ID the field whose value is the message key (so one aggregate's events keep their order)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    TOPIC: ClassVar[str]
    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1
    AGGREGATE_ID: ClassVar[str]
    # How long the log keeps the topic's records when that must be shorter than its default (7 days): records
    # carrying personal data or links to it, which must not outlive their use (the person may delete their account).
    TOPIC_RETENTION: ClassVar[timedelta | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        retention = cls.__dict__.get("TOPIC_RETENTION")
        if retention is not None and _TOPIC_RETENTION.setdefault(cls.TOPIC, retention) != retention:
            raise TypeError(f"two retentions for topic {cls.TOPIC}")
        if "TYPE" in cls.__dict__:
            key = (cls.TYPE, cls.VERSION)
            if key in _REGISTRY and _REGISTRY[key] is not cls:
                raise TypeError(f"two schemas for {cls.TYPE} v{cls.VERSION}")
            _REGISTRY[key] = cls

    @property
    def aggregate_id(self) -> str:
        return str(getattr(self, self.AGGREGATE_ID))


def schema_for(event_type: str, version: int = 1) -> type[IntegrationEvent] | None:
    """The registered schema of an event type and version (None when this build does not know it)."""
    return _REGISTRY.get((event_type, version))


def topic_retention(topic: str) -> timedelta | None:
    """The short retention a topic's events declare (None: the log's default)."""
    return _TOPIC_RETENTION.get(topic)


def all_schemas() -> dict[tuple[str, int], type[IntegrationEvent]]:
    return dict(_REGISTRY)
