"""Reactions of the groups service to other services' events: the read models of people's profiles (names and
avatars for member lists) and of ready banner images (replaying the topics from the beginning rebuilds both), and
the replies of the group-deletion saga."""

from gatherly.contracts.groups import GroupEventsCancelled
from gatherly.contracts.images import ImageDeleted, ImageReady
from gatherly.contracts.users import UserDeleted, UserExportRequested, UserProfileUpdated
from gatherly.groups import service
from gatherly.groups.store import GroupsUnitOfWork
from gatherly.kernel.delivery import ConsumerRegistry

consumers = ConsumerRegistry()

BANNER_PURPOSE = "group_banner"


@consumers.on(UserProfileUpdated, group="groups.profiles")
async def keep_profile(event: UserProfileUpdated, uow: GroupsUnitOfWork) -> None:
    await uow.profiles.apply(event)


@consumers.on(UserDeleted, group="groups.profiles")
async def forget_profile(event: UserDeleted, uow: GroupsUnitOfWork) -> None:
    # Memberships of a deleted account end with the account-deletion saga; until then the member shows unnamed.
    await uow.profiles.forget(event.user_id, event.deleted_at)


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
