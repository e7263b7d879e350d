"""The groups service: what it is, declared once for every way of running it."""

from pathlib import Path

from gatherly.groups.api import router
from gatherly.groups.consumers import consumers
from gatherly.groups.store import unit_of_work
from gatherly.groups.tables import metadata
from gatherly.groups.tasks import watch_deletions
from gatherly.kernel.runtime import ServiceDefinition

SERVICE = ServiceDefinition(
    name="groups",
    title="groups service",
    routers=[router],
    metadata=metadata,
    migrations=Path(__file__).parent / "migrations",
    unit_of_work=unit_of_work,
    consumers=consumers,
    topics=["group", "membership", "join_request", "user_deletion", "user_export"],
    tasks=[watch_deletions],
)
