"""The images service: what it is, declared once for every way of running it."""

from pathlib import Path

from gatherly.images.api import router
from gatherly.images.consumers import consumers
from gatherly.images.store import ImagesUnitOfWork, metadata
from gatherly.kernel.runtime import ServiceContext, ServiceDefinition


def _unit_of_work(context: ServiceContext) -> ImagesUnitOfWork:
    return ImagesUnitOfWork(context.db, clock=context.clock, signal=context.signal)


SERVICE = ServiceDefinition(
    name="images",
    title="images service",
    routers=[router],
    metadata=metadata,
    migrations=Path(__file__).parent / "migrations",
    unit_of_work=_unit_of_work,
    consumers=consumers,
)
