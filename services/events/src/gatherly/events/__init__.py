"""The events service: what it is, declared once for every way of running it."""

from pathlib import Path

from gatherly.events.api import router
from gatherly.events.consumers import consumers
from gatherly.events.store import EventsUnitOfWork, metadata
from gatherly.kernel.runtime import ServiceContext, ServiceDefinition


def _unit_of_work(context: ServiceContext) -> EventsUnitOfWork:
    return EventsUnitOfWork(context.db, clock=context.clock, signal=context.signal)


SERVICE = ServiceDefinition(
    name="events",
    title="events service",
    routers=[router],
    metadata=metadata,
    migrations=Path(__file__).parent / "migrations",
    unit_of_work=_unit_of_work,
    consumers=consumers,
)
