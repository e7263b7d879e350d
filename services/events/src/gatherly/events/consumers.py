"""Reactions of the events service to other services' events: the read models of groups, of memberships with
their roles (authorization without calling the groups service), of people's names and avatars (attendee lists)
and of ready cover images, which replaying the topics from the beginning rebuilds; seats freed when someone
leaves a group; and the events service's steps of the group-deletion and account-deletion sagas."""

from gatherly.contracts.groups import (
    GroupCreated,
    GroupDeleted,
    GroupUpdated,
    MembershipJoined,
    MembershipLeft,
    MembershipRemoved,
    MembershipRoleChanged,
)
from gatherly.contracts.images import ImageDeleted, ImageReady
from gatherly.contracts.users import UserDeleted, UserExportRequested, UserProfileUpdated
from gatherly.events import service
from gatherly.events.domain import Reason, UserId
from gatherly.events.store import EventsUnitOfWork
from gatherly.kernel.delivery import ConsumerRegistry
from gatherly.kernel.revocation import register_revocations

consumers = ConsumerRegistry()
# Deleted and locked accounts: their access tokens are refused by this service too (kernel/revocation.py).
register_revocations(consumers, group="events.revocations")

COVER_PURPOSE = "event_cover"


@consumers.on(GroupCreated, GroupUpdated, group="events.groups")
async def keep_group(event: GroupCreated | GroupUpdated, uow: EventsUnitOfWork) -> None:
    await uow.groups.apply(event)


@consumers.on(GroupDeleted, group="events.groups")
async def cancel_group_events(event: GroupDeleted, uow: EventsUnitOfWork) -> None:
    await service.cancel_group_events(uow, event)


@consumers.on(MembershipJoined, MembershipRoleChanged, group="events.members")
async def keep_member(event: MembershipJoined | MembershipRoleChanged, uow: EventsUnitOfWork) -> None:
    # A membership event that arrives after its group's deletion (another topic) must not revive it.
    if not await uow.groups.is_deleted(event.group_id):
        await uow.members.put(event.group_id, event.user_id, event.role)


@consumers.on(MembershipLeft, group="events.members")
async def forget_member(event: MembershipLeft, uow: EventsUnitOfWork) -> None:
    await service.drop_member(uow, event.group_id, UserId(event.user_id), Reason.LEFT_GROUP)


@consumers.on(MembershipRemoved, group="events.members")
async def forget_removed_member(event: MembershipRemoved, uow: EventsUnitOfWork) -> None:
    reason = Reason.BANNED if event.banned else Reason.REMOVED
    await service.drop_member(uow, event.group_id, UserId(event.user_id), reason)


@consumers.on(UserProfileUpdated, group="events.profiles")
async def keep_profile(event: UserProfileUpdated, uow: EventsUnitOfWork) -> None:
    await uow.profiles.apply(event)


@consumers.on(UserDeleted, group="events.profiles")
async def forget_person(event: UserDeleted, uow: EventsUnitOfWork) -> None:
    # In the profiles' group: a profile update published before the deletion is applied before it.
    await service.forget_person(uow, event)


@consumers.on(ImageReady, group="events.covers")
async def keep_cover(event: ImageReady, uow: EventsUnitOfWork) -> None:
    if event.purpose == COVER_PURPOSE:
        await uow.covers.keep(event)


@consumers.on(ImageDeleted, group="events.covers")
async def forget_cover(event: ImageDeleted, uow: EventsUnitOfWork) -> None:
    await uow.covers.remove(event.image_id)


@consumers.on(UserExportRequested, group="events.exports")
async def give_export_part(event: UserExportRequested, uow: EventsUnitOfWork) -> None:
    await service.give_export_part(uow, event)
