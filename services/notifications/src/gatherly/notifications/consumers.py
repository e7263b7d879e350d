"""Reactions of the notifications service to other services' events: the read models it tells people from
(recipients, group members, events and attendees; replaying the topics rebuilds them) and the notifications
themselves. Each notification's cause is its message id, so a redelivered or replayed message tells nobody twice.

The event, rsvp and comment topics are one consumer group: the read model of an event and what is told about it
change in one transaction, in the order the events service published them."""

from gatherly.contracts.events import (
    CommentPosted,
    EventCancelled,
    EventScheduled,
    EventUpdated,
    RsvpCancelled,
    RsvpConfirmed,
    RsvpPromoted,
    RsvpWaitlisted,
)
from gatherly.contracts.groups import (
    GroupAnnouncement,
    GroupCreated,
    GroupDeleted,
    GroupInvitationSent,
    GroupUpdated,
    JoinRequestApproved,
    JoinRequestCreated,
    JoinRequestDenied,
    MembershipJoined,
    MembershipLeft,
    MembershipRemoved,
    MembershipRoleChanged,
)
from gatherly.contracts.users import (
    UserConfirmed,
    UserDeleted,
    UserExportRequested,
    UserProfileUpdated,
    UserRegistered,
)
from gatherly.kernel.delivery import ConsumerRegistry
from gatherly.kernel.messages import causation_id_var
from gatherly.kernel.revocation import register_revocations
from gatherly.notifications import service
from gatherly.notifications.store import NotificationsUnitOfWork

consumers = ConsumerRegistry()
# Deleted and locked accounts: their access tokens are refused by this service too (kernel/revocation.py).
register_revocations(consumers, group="notifications.revocations")


def _cause() -> str:
    # The delivery runtime sets the message being handled as the causation of whatever the handler does.
    cause = causation_id_var.get()
    assert cause, "handlers run inside the delivery runtime, which names the message they handle"
    return cause


# --- recipients ----------------------------------------------------------------------------------------------------


@consumers.on(UserRegistered, group="notifications.recipients")
async def keep_registered(event: UserRegistered, uow: NotificationsUnitOfWork) -> None:
    await uow.recipients.keep(event.user_id, event.registered_at, email=event.email, display_name=event.display_name)


@consumers.on(UserConfirmed, group="notifications.recipients")
async def keep_confirmed(event: UserConfirmed, uow: NotificationsUnitOfWork) -> None:
    await uow.recipients.keep(
        event.user_id, event.confirmed_at, confirmed=True, email=event.email, display_name=event.display_name
    )


@consumers.on(UserProfileUpdated, group="notifications.recipients")
async def keep_profile(event: UserProfileUpdated, uow: NotificationsUnitOfWork) -> None:
    where = event.location
    await uow.recipients.keep(
        event.user_id,
        event.updated_at,
        email=event.email,
        display_name=event.display_name,
        lat=where.lat if where else None,
        lng=where.lng if where else None,
    )


@consumers.on(UserDeleted, group="notifications.recipients")
async def forget_recipient(event: UserDeleted, uow: NotificationsUnitOfWork) -> None:
    await service.forget_person(uow, event)


# --- groups: members, announcements, deletion, join requests -------------------------------------------------------


@consumers.on(GroupCreated, GroupUpdated, group="notifications.members")
async def keep_group(event: GroupCreated | GroupUpdated, uow: NotificationsUnitOfWork) -> None:
    await uow.members.keep_group(event.group_id, event.visibility)


@consumers.on(MembershipJoined, group="notifications.members")
async def keep_joined_member(event: MembershipJoined, uow: NotificationsUnitOfWork) -> None:
    await service.member_joined(uow, event)


@consumers.on(MembershipRoleChanged, group="notifications.members")
async def keep_member_role(event: MembershipRoleChanged, uow: NotificationsUnitOfWork) -> None:
    await uow.members.put(event.group_id, event.user_id, event.role)


@consumers.on(MembershipLeft, MembershipRemoved, group="notifications.members")
async def forget_member(event: MembershipLeft | MembershipRemoved, uow: NotificationsUnitOfWork) -> None:
    await uow.members.remove(event.group_id, event.user_id)


@consumers.on(GroupDeleted, group="notifications.members")
async def tell_group_deleted(event: GroupDeleted, uow: NotificationsUnitOfWork) -> None:
    await service.group_deleted(uow, event, _cause())


@consumers.on(GroupAnnouncement, group="notifications.members")
async def tell_announcement(event: GroupAnnouncement, uow: NotificationsUnitOfWork) -> None:
    await service.group_announced(uow, event, _cause())


@consumers.on(JoinRequestCreated, group="notifications.requests")
async def tell_join_requested(event: JoinRequestCreated, uow: NotificationsUnitOfWork) -> None:
    await service.join_requested(uow, event, _cause())


@consumers.on(JoinRequestApproved, JoinRequestDenied, group="notifications.requests")
async def tell_join_decided(event: JoinRequestApproved | JoinRequestDenied, uow: NotificationsUnitOfWork) -> None:
    await service.join_decided(
        uow,
        event.group_id,
        event.group_name,
        event.user_id,
        approved=isinstance(event, JoinRequestApproved),
        by=event.decided_by,
        source=_cause(),
        message=event.message,
    )


@consumers.on(GroupInvitationSent, group="notifications.members")
async def tell_invitation(event: GroupInvitationSent, uow: NotificationsUnitOfWork) -> None:
    await service.invited(uow, event, _cause())


# --- events, RSVPs, comments ---------------------------------------------------------------------------------------


@consumers.on(EventScheduled, group="notifications.events")
async def tell_event_scheduled(event: EventScheduled, uow: NotificationsUnitOfWork) -> None:
    await service.event_scheduled(uow, event, _cause())


@consumers.on(EventUpdated, group="notifications.events")
async def tell_event_updated(event: EventUpdated, uow: NotificationsUnitOfWork) -> None:
    await service.event_updated(uow, event, _cause())


@consumers.on(EventCancelled, group="notifications.events")
async def tell_event_cancelled(event: EventCancelled, uow: NotificationsUnitOfWork) -> None:
    await service.event_cancelled(uow, event, _cause())


@consumers.on(RsvpConfirmed, RsvpWaitlisted, RsvpPromoted, group="notifications.events")
async def tell_rsvp(event: RsvpConfirmed | RsvpWaitlisted | RsvpPromoted, uow: NotificationsUnitOfWork) -> None:
    await service.rsvp_changed(uow, event, _cause())


@consumers.on(RsvpCancelled, group="notifications.events")
async def forget_attendee(event: RsvpCancelled, uow: NotificationsUnitOfWork) -> None:
    await service.rsvp_cancelled(uow, event)


@consumers.on(CommentPosted, group="notifications.events")
async def tell_comment(event: CommentPosted, uow: NotificationsUnitOfWork) -> None:
    await service.comment_posted(uow, event, _cause())


@consumers.on(UserExportRequested, group="notifications.exports")
async def give_export_part(event: UserExportRequested, uow: NotificationsUnitOfWork) -> None:
    await service.give_export_part(uow, event)
