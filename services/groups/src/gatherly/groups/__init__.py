"""The groups service: what it is, declared once for every way of running it."""

from pathlib import Path

from gatherly.groups.api import router
from gatherly.groups.consumers import consumers
from gatherly.groups.store import GroupsUnitOfWork, metadata
from gatherly.kernel.runtime import ServiceContext, ServiceDefinition


def _unit_of_work(context: ServiceContext) -> GroupsUnitOfWork:
    return GroupsUnitOfWork(context.db, clock=context.clock, signal=context.signal)


SERVICE = ServiceDefinition(
    name="groups",
    title="groups service",
    routers=[router],
    metadata=metadata,
    migrations=Path(__file__).parent / "migrations",
    unit_of_work=_unit_of_work,
    consumers=consumers,
)
