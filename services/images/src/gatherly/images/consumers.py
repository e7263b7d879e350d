"""Reactions of the images service to other services' events: a deleted account's images are deleted with it (the
images service's step of the account-deletion saga)."""

from gatherly.contracts.users import UserDeleted
from gatherly.images import service
from gatherly.images.store import ImagesUnitOfWork
from gatherly.kernel.delivery import ConsumerRegistry
from gatherly.kernel.revocation import register_revocations

consumers = ConsumerRegistry()
# Deleted and locked accounts: their access tokens are refused by this service too (kernel/revocation.py).
register_revocations(consumers, group="images.revocations")


@consumers.on(UserDeleted, group="images.accounts")
async def delete_images_of_account(event: UserDeleted, uow: ImagesUnitOfWork) -> None:
    await service.delete_images_of(uow, event)
