"""The users service: what it is, declared once for every way of running it."""

from pathlib import Path

from gatherly.kernel.runtime import ServiceContext, ServiceDefinition
from gatherly.kernel.uow import OutboxSignal
from gatherly.users import service
from gatherly.users.api import router
from gatherly.users.consumers import consumers
from gatherly.users.store import unit_of_work
from gatherly.users.tables import metadata
from gatherly.users.tasks import deliver_mail, keep_tidy, watch_deletions, watch_exports


async def _start(context: ServiceContext) -> None:
    context.extras["mail_signal"] = OutboxSignal()
    identity = service.Identity.build(context.settings)
    context.extras["identity"] = identity
    await service.ensure_signing_key(unit_of_work(context))
    await identity.passwords.decoy()  # made now, so the first login for an unknown address is not faster


SERVICE = ServiceDefinition(
    name="users",
    title="users service",
    routers=[router],
    metadata=metadata,
    migrations=Path(__file__).parent / "migrations",
    unit_of_work=unit_of_work,
    consumers=consumers,
    topics=["user", "user_export"],
    tasks=[deliver_mail, keep_tidy, watch_deletions, watch_exports],
    on_start=_start,
)
