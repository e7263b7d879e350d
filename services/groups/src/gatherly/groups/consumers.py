"""Reactions of the groups service to other services' events: the read models of people's profiles (names and
avatars for member lists) and of ready banner images (replaying the topics from the beginning rebuilds both), its
step in the account-deletion saga, and the replies of the group-deletion saga."""

from gatherly.contracts.groups import GroupEventsCancelled
from gatherly.contracts.images import ImageDeleted, ImageReady
from gatherly.contracts.users import UserDeleted, UserExportRequested, UserProfileUpdated
from gatherly.groups import service
from gatherly.groups.store import GroupsUnitOfWork
from gatherly.kernel.delivery import ConsumerRegistry
from gatherly.kernel.revocation import register_revocations

consumers = ConsumerRegistry()
# Deleted and locked accounts: their access tokens are refused by this service too (kernel/revocation.py).
register_revocations(consumers, group="groups.revocations")

BANNER_PURPOSE = "group_banner"


@consumers.on(UserProfileUpdated, group="groups.profiles")
async def keep_profile(event: UserProfileUpdated, uow: GroupsUnitOfWork) -> None:
    await uow.profiles.apply(event)


# The groups step of the account-deletion saga: the profile is forgotten, memberships, requests and bans end, and
# the reply is published, all in this one transaction.
@consumers.on(UserDeleted, group="groups.profiles")
async def erase_member(event: UserDeleted, uow: GroupsUnitOfWork) -> None:
    await service.erase_member(uow, event)


@consumers.on(ImageReady, group="groups.banners")
async def keep_banner(event: ImageReady, uow: GroupsUnitOfWork) -> None:
    if event.purpose == BANNER_PURPOSE:
        await uow.banners.keep(event)


@consumers.on(ImageDeleted, group="groups.banners")
async def forget_banner(event: ImageDeleted, uow: GroupsUnitOfWork) -> None:
    await uow.banners.remove(event.image_id)


@consumers.on(GroupEventsCancelled, group="groups.deletions")
async def finish_deletion(event: GroupEventsCancelled, uow: GroupsUnitOfWork) -> None:
    await service.finish_deletion(uow, event)


@consumers.on(UserExportRequested, group="groups.exports")
async def give_export_part(event: UserExportRequested, uow: GroupsUnitOfWork) -> None:
    await service.give_export_part(uow, event)
