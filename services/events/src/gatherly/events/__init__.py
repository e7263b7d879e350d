"""The events service: what it is, declared once for every way of running it."""

from pathlib import Path

from gatherly.events.api import calendar_router, router
from gatherly.events.consumers import consumers
from gatherly.events.store import metadata, unit_of_work
from gatherly.events.tasks import top_up_series
from gatherly.kernel.runtime import ServiceDefinition

SERVICE = ServiceDefinition(
    name="events",
    title="events service",
    routers=[router, calendar_router],
    metadata=metadata,
    migrations=Path(__file__).parent / "migrations",
    unit_of_work=unit_of_work,
    consumers=consumers,
    topics=["event", "rsvp", "comment", "group_deletion", "user_deletion", "user_export"],
    tasks=[top_up_series],
)
