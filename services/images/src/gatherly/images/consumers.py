"""Reactions of the images service to other services' events: a deleted account's images are deleted with it (the
images service's step of the account-deletion saga); the parts of a data export are collected for its archive."""

from gatherly.contracts.users import UserDeleted, UserExportPartReady, UserExportRequested
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


# Both the request and the parts: the archive is written (by a task, storage is not touched in a transaction) once
# the request and every part are in, in whichever order they came.
@consumers.on(UserExportRequested, UserExportPartReady, group="images.exports")
async def collect_export(event: UserExportRequested | UserExportPartReady, uow: ImagesUnitOfWork) -> None:
    if isinstance(event, UserExportRequested):
        await service.note_export_request(uow, event)
    else:
        await service.keep_export_part(uow, event)
