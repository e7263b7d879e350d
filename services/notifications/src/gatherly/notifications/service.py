"""Use cases of the notifications service: one function per thing that happens, state and outbox committed together.

Telling people (`tell`) writes the inbox rows, the sends each person's preferences ask for (one row per
notification and channel: the idempotency key) and a `notification.created` per row in one transaction, so a
notification is never in the inbox without its email queued, nor announced to live streams before it exists."""

from __future__ import annotations

import hashlib
import secrets as random_secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

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
    GroupDeleted,
    GroupInvitationSent,
    JoinRequestCreated,
    MembershipJoined,
)
from gatherly.contracts.notifications import NotificationCreated
from gatherly.contracts.users import UserDeleted, UserDeletionStepDone, UserExportRequested
from gatherly.kernel.addresses import address_hash
from gatherly.kernel.auth import Principal
from gatherly.kernel.db import Database
from gatherly.kernel.egress import NotPublic, Resolver, check_public_endpoint
from gatherly.kernel.errors import InvalidInput, NotFound
from gatherly.kernel.exports import export_part
from gatherly.kernel.geo import Point
from gatherly.notifications import domain
from gatherly.notifications.domain import (
    Channel,
    EventFacts,
    InvalidSubscription,
    Kind,
    Notice,
    Preferences,
    UserId,
    check_subscription,
    signature_matches,
)
from gatherly.notifications.store import Delivery, Notification, NotificationsUnitOfWork, Recipient, reading

# --- telling people ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class People:
    """What telling people needs to know of them, read once per message: what the service knows of each (their
    tombstone too) and the preferences of those who set any."""

    known: dict[UserId, Recipient]
    chosen: dict[UserId, Preferences]
    subscribed: frozenset[UserId] | None = None  # those of them with a push subscription, when read with them

    def gone(self, user_id: UserId) -> bool:
        """They deleted their account: nothing of theirs is kept again, nothing is told to them."""
        found = self.known.get(user_id)
        return found is not None and found.deleted

    def preferences(self, user_id: UserId) -> Preferences:
        return self.chosen.get(user_id, Preferences())


async def people(uow: NotificationsUnitOfWork, user_ids: Sequence[UserId]) -> People:
    distinct = sorted(set(user_ids))
    return People(await uow.recipients.known(distinct), await uow.preferences.many(distinct))


@dataclass(frozen=True)
class AtEvent:
    """What the rsvp.* handler knows of its one person and one event from one read (`at_event`)."""

    told: People  # the person, with their push subscription
    event: EventFacts | None  # None: the service does not know the event (yet)
    reminders_pending: bool  # the person has reminders of the event not sent yet


async def at_event(uow: NotificationsUnitOfWork, user_id: UserId, event_id: str) -> AtEvent:
    """`people` of one person with their push subscription, the event as kept and whether the person has unsent
    reminders of it: one read, where `people`, `tell`, the event's and the reminders' reads were four."""
    found = await uow.recipients.at_event(user_id, event_id)
    person = found.person
    known = {user_id: person.recipient} if person.recipient is not None else {}
    chosen = {user_id: person.preferences} if person.preferences is not None else {}
    told = People(known, chosen, frozenset({user_id} if person.subscribed else ()))
    return AtEvent(told, found.event, found.reminders_pending)


async def tell(
    uow: NotificationsUnitOfWork,
    notices: Sequence[Notice],
    source: str,
    *,
    mail: bool = True,
    told: People | None = None,
) -> int:
    """Put the notices in their people's inboxes (once per cause and person), queue the emails their preferences
    and addresses allow (none when not `mail`), and announce each on the log for live streams. Returns how many
    were new. `told`: the notices' people, when the caller has read them already."""
    if told is None:
        told = await people(uow, [notice.user_id for notice in notices])
    # Nothing for anyone who deleted their account (a later event may still name them, as an attendee, say).
    notices = [notice for notice in notices if not told.gone(notice.user_id)]
    if not notices:
        return 0
    now = uow.clock.now()
    new = await uow.inbox.add(notices, source, now)
    if not new:
        return 0
    # Read with the people when they were (`at_event`), else now, for those who get something new.
    subscribed: Collection[UserId] | None = told.subscribed
    if subscribed is None:
        subscribed = await uow.push.subscribed(sorted({notice.user_id for _, notice in new}))
    sends: list[tuple[str, UserId, Channel]] = []
    for notification_id, notice in new:
        recipient = told.known.get(notice.user_id)
        wants = told.preferences(notice.user_id)
        if mail and recipient is not None and recipient.mailable and wants.wants(Channel.EMAIL, notice.kind):
            sends.append((notification_id, notice.user_id, Channel.EMAIL))
        if notice.user_id in subscribed and wants.wants(Channel.PUSH, notice.kind):
            sends.append((notification_id, notice.user_id, Channel.PUSH))
    await uow.queue_sends(sends)
    uow.publish(
        *(
            NotificationCreated(
                notification_id=notification_id, user_id=notice.user_id, kind=notice.kind.value, created_at=now
            )
            for notification_id, notice in new
        )
    )
    return len(new)


async def event_scheduled(uow: NotificationsUnitOfWork, event: EventScheduled, source: str) -> None:
    await uow.members.lock_group(event.group_id)
    await uow.events.keep(event)
    await uow.events.scheduled(event.event_id, event.scheduled_at, event.scheduled_by, source)
    facts = await uow.events.get(event.event_id)
    assert facts is not None
    members = await uow.members.of(event.group_id)
    await tell(uow, domain.event_scheduled(facts, members, by=event.scheduled_by), source)


async def member_joined(uow: NotificationsUnitOfWork, event: MembershipJoined) -> None:
    """Keep the member, and tell them of the group's events scheduled since they joined that were handled before
    their joining was: `membership.joined` and `event.scheduled` travel on different topics, so either may come
    first (docs/messaging.md). Told under the scheduling's own cause, so whichever handler comes second adds
    nothing (an inbox holds one notice per cause and person)."""
    await uow.members.lock_group(event.group_id)
    await uow.members.put(event.group_id, event.user_id, event.role)
    for missed in await uow.events.scheduled_since(event.group_id, event.joined_at, uow.clock.now()):
        await tell(uow, domain.event_scheduled(missed.event, [event.user_id], by=missed.by), missed.cause)


async def event_updated(uow: NotificationsUnitOfWork, event: EventUpdated, source: str) -> None:
    await uow.events.keep(event)
    facts = await uow.events.get(event.event_id)
    assert facts is not None
    if "starts_at" in event.changed:
        for person in await uow.attendees.going(event.event_id):
            await schedule_reminders(uow, event.event_id, person)
    await tell(uow, domain.event_updated(facts, event.changed, event.attendee_ids, by=event.updated_by), source)


async def event_cancelled(uow: NotificationsUnitOfWork, event: EventCancelled, source: str) -> None:
    await uow.events.cancel(event.event_id, event.sequence)
    await uow.reminders.drop(event.event_id)
    people = [*event.attendee_ids, *event.waitlist_ids]
    notices = domain.event_cancelled(
        event.event_id, event.title, event.starts_at, event.reason, people, by=event.cancelled_by
    )
    await tell(uow, notices, source)


async def rsvp_changed(
    uow: NotificationsUnitOfWork, event: RsvpConfirmed | RsvpWaitlisted | RsvpPromoted, source: str
) -> None:
    if isinstance(event, RsvpWaitlisted):
        kind, status, position = Kind.RSVP_WAITLISTED, "waitlisted", event.position
    else:
        kind = Kind.RSVP_CONFIRMED if isinstance(event, RsvpConfirmed) else Kind.RSVP_PROMOTED
        status, position = "going", None
    person = UserId(event.user_id)
    # One read of the person, the event and the person's pending reminders serves the read model, the reminders and
    # the notice.
    found = await at_event(uow, person, event.event_id)
    told = found.told
    if told.gone(person):
        return  # an RSVP that raced the account's deletion: nothing of theirs is kept again
    await uow.attendees.put(event.event_id, person, status)
    kept = found.event
    if status == "going":
        await _schedule_reminders(
            uow, event.event_id, person, kept, told.preferences(person), pending=found.reminders_pending
        )
    elif found.reminders_pending:
        await uow.reminders.drop(event.event_id, person)
    facts = kept or domain.unknown_event(event.event_id, event.group_id)
    await tell(uow, [domain.rsvp_outcome(kind, facts, person, position=position)], source, told=told)


async def rsvp_cancelled(uow: NotificationsUnitOfWork, event: RsvpCancelled) -> None:
    await uow.attendees.remove(event.event_id, event.user_id)
    await uow.reminders.drop(event.event_id, event.user_id)


async def comment_posted(uow: NotificationsUnitOfWork, event: CommentPosted, source: str) -> None:
    facts = await uow.events.get(event.event_id) or domain.unknown_event(event.event_id, event.group_id)
    going = await uow.attendees.going(event.event_id)
    await tell(uow, domain.comment_posted(facts, going, author=event.author_id, text=event.body), source)


async def join_requested(uow: NotificationsUnitOfWork, event: JoinRequestCreated, source: str) -> None:
    notices = domain.join_requested(event.group_id, event.group_name, event.approver_ids, requester=event.user_id)
    await tell(uow, notices, source)


async def join_decided(
    uow: NotificationsUnitOfWork,
    group_id: str,
    group_name: str,
    user_id: str,
    *,
    approved: bool,
    by: str,
    source: str,
    message: str | None = None,
) -> None:
    notices = domain.join_decided(group_id, group_name, user_id, approved=approved, by=by, message=message)
    await tell(uow, notices, source)


async def invited(uow: NotificationsUnitOfWork, event: GroupInvitationSent, source: str) -> None:
    """An email invitation reaches the person whose confirmed account has that address (inbox, and email per
    their preferences), or else the address itself: one email with the group's name, who invites and the link.
    An address whose owner opted out of invitations is mailed no invitation again (a person with an account
    still finds it in their inbox)."""
    opted_out = await uow.invitations.opted_out(address_hash(event.email))
    person = await uow.recipients.with_email(event.email)
    if person is not None:
        notices = domain.group_invitation(event.group_id, event.group_name, person, event.token, by=event.invited_by)
        await tell(uow, notices, source, mail=not opted_out)
        return
    if opted_out or event.expires_at <= uow.clock.now():
        return  # nor is an invitation mailed that lapsed before it got here (a late redelivery or a replay)
    inviter = await uow.recipients.get(event.invited_by)
    mail = domain.InvitationMail(
        invitation_id=event.invitation_id,
        email=event.email,
        group_name=event.group_name,
        inviter_name=inviter.display_name if inviter is not None else "",
        link=domain.invitation_link(event.group_id, event.token),
        expires_at=event.expires_at,
    )
    if await uow.invitations.add(mail, uow.clock.now()):
        await uow.queue_sends([(event.invitation_id, UserId(""), Channel.INVITATION_EMAIL)])


async def group_announced(uow: NotificationsUnitOfWork, event: GroupAnnouncement, source: str) -> None:
    notices = domain.group_announcement(
        event.group_id, event.group_name, event.subject, event.body, event.recipient_ids, author=event.author_id
    )
    await tell(uow, notices, source)


async def group_deleted(uow: NotificationsUnitOfWork, event: GroupDeleted, source: str) -> None:
    await uow.members.forget_group(event.group_id, event.deleted_at)
    await tell(uow, domain.group_deleted(event.name, event.member_ids, by=event.deleted_by), source)


async def forget_person(uow: NotificationsUnitOfWork, deleted: UserDeleted) -> dict[str, int]:
    """The notifications service's step of the account-deletion saga: the person's inbox, preferences, sends
    (queued or not), push subscriptions, reminders and read-model rows go; a tombstone without address or name
    stays, so no later event brings them back or mails them. With the saga's `deletion_id`, the reply
    (user_deletion.step_done) commits with the erasure; a repeated deletion erases nothing more and replies again.
    Returns what went, by kind."""
    user_id = deleted.user_id
    await uow.recipients.forget(user_id, deleted.deleted_at)
    counted = await uow.inbox.forget_person(user_id)
    counted["push_subscriptions"] = await uow.push.forget_person(user_id)
    counted["reminders"] = await uow.reminders.forget_person(user_id)
    await uow.attendees.forget_person(user_id)
    what = {kind: n for kind, n in counted.items() if n}
    if deleted.deletion_id is not None:
        uow.publish(
            UserDeletionStepDone(
                user_id=user_id,
                deletion_id=deleted.deletion_id,
                service="notifications",
                what=what,
                done_at=uow.clock.now(),
            )
        )
    return what


# --- reminders -----------------------------------------------------------------------------------------------------


async def schedule_reminders(uow: NotificationsUnitOfWork, event_id: str, user_id: str) -> None:
    """A person going to an event gets the reminders their preferences ask for, those still ahead."""
    await _schedule_reminders(uow, event_id, user_id, await uow.events.get(event_id), await uow.preferences.of(user_id))


async def _schedule_reminders(
    uow: NotificationsUnitOfWork,
    event_id: str,
    user_id: str,
    facts: EventFacts | None,
    chosen: Preferences,
    *,
    pending: bool = True,
) -> None:
    """`pending`: whether the person may have unsent reminders of the event (False when a read just found none)."""
    if facts is None or facts.starts_at is None or facts.status != "scheduled":
        if pending:
            await uow.reminders.drop(event_id, user_id)
        return
    times = domain.reminder_times(facts.starts_at, chosen.reminder_hours, now=uow.clock.now())
    await uow.reminders.schedule(event_id, user_id, times, pending=pending)


async def send_due_reminders(uow: NotificationsUnitOfWork, limit: int = 100) -> int:
    """Tell everyone whose reminder is due, each exactly once: the inbox row (with its sends) and the schedule's
    `sent_at` commit together, so a crash before the commit sends nothing and one after it has marked it sent."""
    async with uow:
        now = uow.clock.now()
        due = await uow.reminders.claim_due(now, limit)
        for reminder in due:
            facts = await uow.events.get(reminder.event_id)
            if facts is not None and facts.status == "scheduled":
                notice = domain.reminder(facts, reminder.user_id, reminder.hours_before)
                await tell(uow, [notice], f"reminder:{reminder.event_id}:{reminder.hours_before}")
            await uow.reminders.mark_sent(reminder, now)
        return len(due)


async def next_reminder_at(db: Database) -> datetime | None:
    async with reading(db) as stores:
        return await stores.reminders.next_due_at()


# --- the weekly digest ---------------------------------------------------------------------------------------------

DIGEST_BATCH = 200


async def send_weekly_digests(make_uow: Callable[[], NotificationsUnitOfWork]) -> int:
    """This week's digest for everyone who has not had it and has something to read (a few hundred people per
    transaction). At most once per person and week: the digest's cause is the week, unique with the person in the
    inbox. Returns how many were sent."""
    sent, after = 0, ""
    while True:
        uow = make_uow()
        async with uow:
            now = uow.clock.now()
            source = f"digest:{domain.digest_week(now)}"
            people = await uow.recipients.without_digest(source, after, DIGEST_BATCH)
            end = now + timedelta(days=domain.DIGEST_DAYS)
            for user_id, lat, lng in people:
                mine = await uow.events.upcoming_in_groups_of(user_id, now, end, domain.DIGEST_MAX_EVENTS)
                near: list[domain.EventFacts] = []
                if lat is not None and lng is not None:
                    seen = {e.event_id for e in mine}
                    found = await uow.events.upcoming_near(
                        Point(lat, lng), domain.DIGEST_NEAR_KM, now, end, domain.DIGEST_MAX_EVENTS + len(seen)
                    )
                    near = [e for e in found if e.event_id not in seen]
                if (notice := domain.weekly_digest(user_id, mine, near)) is not None:
                    sent += await tell(uow, [notice], source)
        if len(people) < DIGEST_BATCH:
            return sent
        after = people[-1][0]


# --- the inbox -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxPage:
    items: list[Notification]
    next_before: int | None
    unread_count: int


async def inbox(db: Database, me: Principal, *, unread_only: bool, limit: int, before: int | None) -> InboxPage:
    async with reading(db) as stores:
        items = await stores.inbox.page(me.user_id, unread_only=unread_only, limit=limit + 1, before=before)
        unread = await stores.inbox.unread_count(me.user_id)
    more = len(items) > limit
    items = items[:limit]
    return InboxPage(items, items[-1].seq if more else None, unread)


async def mark_read(uow: NotificationsUnitOfWork, me: Principal, notification_id: str) -> None:
    async with uow:
        if not await uow.inbox.mark_read(me.user_id, notification_id, uow.clock.now()):
            # Someone else's notification is as unknown as one that never existed.
            raise NotFound("No such notification.")


async def mark_all_read(uow: NotificationsUnitOfWork, me: Principal) -> None:
    async with uow:
        await uow.inbox.mark_all_read(me.user_id, uow.clock.now())


# --- preferences ---------------------------------------------------------------------------------------------------


async def preferences_of(db: Database, me: Principal) -> Preferences:
    async with reading(db) as stores:
        return await stores.preferences.of(me.user_id)


async def set_preferences(uow: NotificationsUnitOfWork, me: Principal, chosen: Preferences) -> Preferences:
    async with uow:
        await uow.preferences.put(me.user_id, chosen, uow.clock.now())
        # Reminder hours apply to the events already in the person's calendar too.
        for event_id in await uow.attendees.going_to(me.user_id):
            await schedule_reminders(uow, event_id, me.user_id)
    return chosen


async def unsubscribe(uow: NotificationsUnitOfWork, key: bytes, user_id: str, kind: str, signature: str) -> Kind:
    """One-click unsubscribe from an email's link: no login, the signature proves the link is ours."""
    try:
        chosen_kind = Kind(kind)
    except ValueError:
        raise InvalidInput("Unknown kind.", field="kind") from None
    if not signature_matches(key, user_id, chosen_kind, signature):
        raise NotFound("This unsubscribe link is not valid.")
    async with uow:
        if await uow.recipients.deleted([user_id]):
            return chosen_kind  # the account is gone and so are its preferences: nothing to switch off, or recreate
        current = await uow.preferences.of(user_id)
        await uow.preferences.put(user_id, current.without(Channel.EMAIL, chosen_kind), uow.clock.now())
    return chosen_kind


async def opt_out_of_invitations(uow: NotificationsUnitOfWork, key: bytes, email_hash: str, signature: str) -> None:
    """One click from an invitation email, no login: that address gets no invitation email again."""
    if not domain.opt_out_matches(key, email_hash, signature):
        raise NotFound("This link is not valid.")
    async with uow:
        await uow.invitations.opt_out(email_hash, uow.clock.now())


# --- live stream tickets -------------------------------------------------------------------------------------------

TICKET_LIFETIME = timedelta(seconds=60)


def _hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


async def issue_stream_ticket(uow: NotificationsUnitOfWork, me: Principal) -> str:
    """A single-use ticket for `?ticket=` (EventSource cannot send headers); only its hash is stored."""
    ticket = random_secrets.token_urlsafe(32)
    async with uow:
        now = uow.clock.now()
        await uow.tickets.add(_hash(ticket), me.user_id, now + TICKET_LIFETIME, now)
    return ticket


async def redeem_stream_ticket(
    uow: NotificationsUnitOfWork, ticket: str, may_open: Callable[[UserId], None]
) -> UserId | None:
    """The ticket's person, the ticket spent; `may_open` refusing (raising) leaves it unspent, so a stream refused
    for want of a place can be opened with the same ticket once one frees."""
    async with uow:
        user_id = await uow.tickets.take(_hash(ticket), uow.clock.now())
        if user_id is not None:
            may_open(user_id)
        return user_id


# --- web push subscriptions ----------------------------------------------------------------------------------------


async def subscribe_to_push(
    uow: NotificationsUnitOfWork,
    me: Principal,
    endpoint: str,
    p256dh: str,
    auth: str,
    *,
    dev: bool,
    resolve: Resolver,
) -> str:
    """The endpoint is checked by its form and by what its host resolves to now (the sender checks again at each
    send: DNS can change)."""
    try:
        check_subscription(endpoint, p256dh, auth, plain_http_on_loopback=dev)
    except InvalidSubscription as invalid:
        raise InvalidInput(invalid.detail, field=invalid.field) from None
    try:
        await check_public_endpoint(endpoint, resolve, allow_loopback=dev)
    except NotPublic:
        raise InvalidInput("A push endpoint is a public host.", field="endpoint") from None
    except OSError:
        raise InvalidInput("The push endpoint's host does not resolve.", field="endpoint") from None
    async with uow:
        return await uow.push.put(me.user_id, endpoint, p256dh, auth, uow.clock.now())


async def prune_push_receipts(uow: NotificationsUnitOfWork, older_than: timedelta, batch: int) -> int:
    """One small batch of old receipts of finished push sends (a transaction each, so SQLite's single writer is
    never held long); returns how many went (fewer than `batch`: nothing more to prune now)."""
    async with uow:
        return await uow.push.prune_receipts(uow.clock.now() - older_than, batch)


async def unsubscribe_from_push(uow: NotificationsUnitOfWork, me: Principal, subscription_id: str) -> None:
    async with uow:
        if not await uow.push.remove(me.user_id, subscription_id):
            raise NotFound("No such push subscription.")


# --- kept secrets --------------------------------------------------------------------------------------------------


async def kept_secret(uow: NotificationsUnitOfWork, name: str, make: str) -> str:
    """The secret of this name, stored at first use; every process of the service ends up with the same one."""
    async with uow:
        if (found := await uow.secrets.get(name)) is not None:
            return found
        if await uow.secrets.add(name, make, uow.clock.now()):
            return make
        stored = await uow.secrets.get(name)
    assert stored is not None
    return stored


# --- failed deliveries (the operator's commands) -------------------------------------------------------------------


async def failed_deliveries(db: Database, limit: int = 100) -> list[Delivery]:
    async with reading(db) as stores:
        return await stores.deliveries.failed_ones(limit)


async def retry_failed_deliveries(uow: NotificationsUnitOfWork, ids: Sequence[str] = ()) -> int:
    async with uow:
        return await uow.deliveries.retry_failed(uow.clock.now(), ids)


# --- data export ------------------------------------------------------------------------------------------------


async def give_export_part(uow: NotificationsUnitOfWork, event: UserExportRequested) -> None:
    """The notifications service's part of a person's data export: the inbox, preferences, push subscriptions."""
    files = await uow.personal_data.files_of(event.user_id)
    uow.publish(export_part(event, "notifications", files, uow.clock.now()))
