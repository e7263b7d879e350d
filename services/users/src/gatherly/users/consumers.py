"""Reactions of the users service to other services' events: the read model of ready avatar images."""

from __future__ import annotations

from gatherly.contracts.images import ImageDeleted, ImageReady
from gatherly.kernel.consumers import ConsumerRegistry
from gatherly.users import service
from gatherly.users.store import UsersUnitOfWork

consumers = ConsumerRegistry()


@consumers.on(ImageReady, ImageDeleted, group="users.images")
async def keep_avatars(event: ImageReady | ImageDeleted, uow: UsersUnitOfWork) -> None:
    if isinstance(event, ImageReady):
        await service.keep_ready_image(uow, event)
    else:
        await service.forget_deleted_image(uow, event)
