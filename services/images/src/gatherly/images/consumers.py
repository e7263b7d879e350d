"""Reactions of the images service to other services' events: a deleted account's images are deleted with it (the
images service's step of the account-deletion saga)."""

from gatherly.contracts.users import UserDeleted
from gatherly.images import service
from gatherly.images.store import ImagesUnitOfWork
from gatherly.kernel.delivery import ConsumerRegistry

consumers = ConsumerRegistry()


@consumers.on(UserDeleted, group="images.accounts")
async def delete_images_of_account(event: UserDeleted, uow: ImagesUnitOfWork) -> None:
    await service.delete_images_of(uow, event)
