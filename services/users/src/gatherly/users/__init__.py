"""The users service: what it is, declared once for every way of running it."""

from pathlib import Path

from gatherly.kernel.runtime import ServiceContext, ServiceDefinition
from gatherly.users.api import router
from gatherly.users.consumers import consumers
from gatherly.users.store import UsersUnitOfWork, metadata


def _unit_of_work(context: ServiceContext) -> UsersUnitOfWork:
    return UsersUnitOfWork(context.db, clock=context.clock, signal=context.signal)


SERVICE = ServiceDefinition(
    name="users",
    title="users service",
    routers=[router],
    metadata=metadata,
    migrations=Path(__file__).parent / "migrations",
    unit_of_work=_unit_of_work,
    consumers=consumers,
)
