"""The notifications service: what it is, declared once for every way of running it."""

from pathlib import Path

from gatherly.kernel.runtime import ServiceContext, ServiceDefinition
from gatherly.notifications.api import router
from gatherly.notifications.consumers import consumers
from gatherly.notifications.store import NotificationsUnitOfWork, metadata


def _unit_of_work(context: ServiceContext) -> NotificationsUnitOfWork:
    return NotificationsUnitOfWork(context.db, clock=context.clock, signal=context.signal)


SERVICE = ServiceDefinition(
    name="notifications",
    title="notifications service",
    routers=[router],
    metadata=metadata,
    migrations=Path(__file__).parent / "migrations",
    unit_of_work=_unit_of_work,
    consumers=consumers,
)
