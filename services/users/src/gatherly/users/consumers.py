"""Reactions of the users service to events: the read model of ready avatar images, and its own account-deletion
saga (the erasing step here and the other services' replies)."""

from __future__ import annotations

from gatherly.contracts.images import ImageDeleted, ImageReady
from gatherly.contracts.users import (
    UserDeleted,
    UserDeletionStepDone,
    UserExportArchiveReady,
    UserExportPartFailed,
    UserExportPartReady,
    UserExportRequested,
)
from gatherly.kernel.delivery import ConsumerRegistry
from gatherly.kernel.revocation import register_revocations
from gatherly.users import service
from gatherly.users.store import UsersUnitOfWork

consumers = ConsumerRegistry()
# Deleted and locked accounts: their access tokens are refused by this service too (kernel/revocation.py).
register_revocations(consumers, group="users.revocations")


@consumers.on(ImageReady, ImageDeleted, group="users.images")
async def keep_avatars(event: ImageReady | ImageDeleted, uow: UsersUnitOfWork) -> None:
    if isinstance(event, ImageReady):
        await service.keep_ready_image(uow, event)
    else:
        await service.forget_deleted_image(uow, event)


# Its own event: the erasure happens after the request, through the log, so it is retried until done.
@consumers.on(UserDeleted, group="users.deletions")
async def erase_deleted_account(event: UserDeleted, uow: UsersUnitOfWork) -> None:
    await service.erase_account(uow, event)


@consumers.on(UserDeletionStepDone, group="users.deletion_replies")
async def record_deletion_step(event: UserDeletionStepDone, uow: UsersUnitOfWork) -> None:
    await service.record_deletion_step(uow, event)


# The data-export saga: this service's own part, then the others' answers and the archive.
@consumers.on(UserExportRequested, group="users.exports")
async def give_profile_part(event: UserExportRequested, uow: UsersUnitOfWork) -> None:
    await service.give_profile_part(uow, event)


@consumers.on(UserExportPartReady, UserExportPartFailed, UserExportArchiveReady, group="users.export_saga")
async def follow_export(
    event: UserExportPartReady | UserExportPartFailed | UserExportArchiveReady,
    uow: UsersUnitOfWork,
) -> None:
    if isinstance(event, UserExportArchiveReady):
        await service.finish_export(uow, event)
    else:
        await service.record_export_part(uow, event)
