"""Use cases of the groups service: one function per thing a person does, state and outbox committed together.
Rules come from domain.py (their errors are domain errors; api.py gives them HTTP statuses).

Every use case that changes members locks the group row first (`find_for_update`): the member count, the number
of organizers and whether someone is already a member are decided while no one else can change them."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import structlog

from gatherly.contracts.groups import (
    GroupAnnouncement,
    GroupCreated,
    GroupDeleted,
    GroupEventsCancelled,
    GroupInvitationSent,
    GroupUpdated,
    JoinRequestApproved,
    JoinRequestCreated,
    JoinRequestDenied,
    JoinRequestWithdrawn,
    MembershipBanLifted,
    MembershipJoined,
    MembershipLeft,
    MembershipRemoved,
    MembershipRoleChanged,
    QuestionAnswer,
)
from gatherly.contracts.users import GeoPoint, ImageVariants, UserDeleted, UserDeletionStepDone, UserExportRequested
from gatherly.groups.domain import (
    DELETION_TIMEOUT,
    INVITATION_WINDOW,
    AccountDeleted,
    Action,
    BanNotFound,
    Deletion,
    DeletionStatus,
    DeletionStep,
    Group,
    GroupDetails,
    GroupNotFound,
    GroupSearch,
    Invitation,
    InvitationLimits,
    InvitationNotFound,
    InvitationTerms,
    Join,
    JoinPolicy,
    JoinRequestNotFound,
    NeverSeen,
    NotAMember,
    Relation,
    Role,
    Standing,
    UserId,
    announcement_from,
    answers_for,
    check_invitation_quota,
    check_leaving,
    check_removal,
    check_role_change,
    check_stepping_down,
    decide_join,
    decision_message,
    details_from,
    new_group_id,
    require,
    require_member_list,
    slug_base,
    successor,
)
from gatherly.groups.store import BanView, GroupsUnitOfWork, MemberView, MyRequestView, RequestView, Stores
from gatherly.kernel.exports import export_part
from gatherly.kernel.web import FilteredCursors, Listed, PageRequest

log = structlog.get_logger(__name__)


def _snapshot(group: Group) -> dict[str, Any]:
    details = group.details
    location = details.location
    return {
        "group_id": group.id,
        "slug": group.slug,
        "name": details.name,
        "description": details.description,
        "topics": list(details.topics),
        "city": details.city,
        "location": GeoPoint(lat=location.lat, lng=location.lng) if location else None,
        "visibility": details.visibility.value,
        "join_policy": details.join_policy.value,
        "banner_image_id": details.banner_image_id,
    }


async def _not_deleted(uow: GroupsUnitOfWork, person: UserId) -> None:
    if await uow.profiles.is_deleted(person):
        raise AccountDeleted("This account was deleted.")


async def _locked(uow: GroupsUnitOfWork, ref: str) -> Group:
    group = await uow.groups.find_for_update(ref)
    if group is None:
        raise GroupNotFound(f"No group {ref}.")
    return group


# --- the group itself ---------------------------------------------------------------------------------------------


async def create_group(uow: GroupsUnitOfWork, founder: UserId, details: GroupDetails) -> Group:
    async with uow:
        await _not_deleted(uow, founder)
        now = uow.clock.now()
        draft = Group(new_group_id(), "", details, member_count=1, created_at=now, updated_at=now)
        group = await uow.groups.add(draft, slug_base(details.name))
        await uow.memberships.add(group.id, founder, Role.ORGANIZER, now)
        await uow.known.add(group.id, founder, now)
        uow.publish(
            GroupCreated(**_snapshot(group), organizer_id=founder, created_at=now),
            MembershipJoined(group_id=group.id, user_id=founder, role=Role.ORGANIZER, via="created", joined_at=now),
        )
        return group


async def update_group(uow: GroupsUnitOfWork, ref: str, editor: UserId, changes: Mapping[str, Any]) -> GroupView:
    """`changes` names GroupDetails fields; the rest stay as they are. The slug never changes. A group that
    switches from approval to open approves everyone still waiting (nobody is left asking a group that no longer
    asks): join_request.approved and membership.joined for each, as an approval by the editor. Returns the group
    as the editor sees it once the edit is done, from the edit's own transaction (a read after the commit cost a
    read transaction and two statements more)."""
    async with uow:
        group = await _locked(uow, ref)
        relation = await uow.memberships.relation(group.id, editor)
        require(relation, Action.EDIT_GROUP)
        current = group.details
        merged = {name: getattr(current, name) for name in GroupDetails.__dataclass_fields__}
        merged.update(changes)
        now = uow.clock.now()
        updated = group.changed(details_from(**merged), now)
        await uow.groups.save(updated, topics_before=current.topics)
        uow.publish(GroupUpdated(**_snapshot(updated), updated_by=editor, updated_at=now))
        if current.join_policy is JoinPolicy.APPROVAL and updated.details.join_policy is JoinPolicy.OPEN:
            for requester in await uow.requests.user_ids(group.id):
                await uow.requests.remove(group.id, requester)
                await _approved(uow, updated, editor, requester, message=None)
            return await view_group(uow, updated.id, editor)  # the approvals changed its member count
        banners = await uow.groups.banners([updated.card()])
        return GroupView(updated, banners.get(updated.id), relation)


async def delete_group(uow: GroupsUnitOfWork, ref: str, organizer: UserId) -> Deletion:
    """Starts the group-deletion saga (see domain.Deletion). In this one transaction: the group is hidden, its
    memberships, pending requests and bans end (who belonged and who was waiting stay in the saga's data and in
    group.deleted), and the saga waits for the events service to cancel the upcoming events."""
    async with uow:
        group = await _locked(uow, ref)
        require(await uow.memberships.relation(group.id, organizer), Action.DELETE_GROUP)
        return await _start_deletion(uow, group, organizer)


async def _start_deletion(uow: GroupsUnitOfWork, group: Group, deleted_by: UserId) -> Deletion:
    now = uow.clock.now()
    member_ids = list(await uow.memberships.user_ids(group.id))
    requester_ids = list(await uow.requests.user_ids(group.id))
    await uow.groups.mark_deleted(group.id, now)
    await uow.memberships.remove_all(group.id)
    await uow.requests.remove_all(group.id)
    await uow.bans.remove_all(group.id)
    await uow.invitations.remove_all(group.id)
    await uow.known.remove_all(group.id)
    deletion = Deletion(group.id, DeletionStatus.PENDING, DeletionStep.CANCEL_EVENTS, now + DELETION_TIMEOUT)
    data = {"deleted_by": deleted_by, "member_ids": member_ids, "requester_ids": requester_ids}
    await uow.deletions.start(deletion, data, now)
    uow.publish(
        GroupDeleted(
            group_id=group.id,
            slug=group.slug,
            name=group.name,
            deleted_by=deleted_by,
            member_ids=member_ids,
            requester_ids=requester_ids,
            deleted_at=now,
        )
    )
    return deletion


async def finish_deletion(uow: GroupsUnitOfWork, reply: GroupEventsCancelled) -> None:
    """The events service cancelled the group's upcoming events: the saga is complete (also when it had been
    marked failed for being late). Runs in the consumer's unit of work; a repeated reply changes nothing."""
    deletion = await uow.deletions.get(reply.group_id)
    if deletion is None or deletion.status is DeletionStatus.COMPLETED:
        return
    done = replace(deletion, status=DeletionStatus.COMPLETED, step=DeletionStep.DONE, reason=None)
    await uow.deletions.save(done, uow.clock.now())


async def fail_overdue_deletions(uow: GroupsUnitOfWork) -> list[Deletion]:
    """Marks pending deletion sagas past their deadline failed, with the step they were stuck at. Only while still
    pending: on PostgreSQL the events service's reply may commit between reading the overdue sagas and updating
    them, and a completed saga must stay completed."""
    async with uow:
        now = uow.clock.now()
        failed = []
        for deletion in await uow.deletions.overdue(now):
            stuck = replace(deletion, status=DeletionStatus.FAILED, reason=deletion.overdue_reason)
            if await uow.deletions.save(stuck, now, only_if_pending=True):
                failed.append(stuck)
        return failed


# --- a member's account deleted (the groups step of the users service's account-deletion saga) ------------------


async def erase_member(uow: GroupsUnitOfWork, event: UserDeleted) -> None:
    """Runs in the consumer's unit of work, so everything here commits with the saga's reply: the person's name
    and avatar are forgotten; their memberships end (membership.left; where they were the last organizer, the
    domain's `successor` becomes organizer first, or the group is deleted through its own saga when nobody else
    belongs, without them among its `member_ids`); their join requests are withdrawn (join_request.withdrawn) and
    their bans end (membership.ban_lifted, `lifted_by` the person); email invitations sent
    to their confirmed address are redacted (the address erased, the invitation unusable). A repeated message
    finds nothing left to end and replies again, which the saga ignores. Without a `deletion_id` (a message written
    before the saga had replies) the same is erased and nobody is answered."""
    person = UserId(event.user_id)
    email_hash = await uow.profiles.email_hash(person)
    await uow.profiles.forget(person, event.deleted_at)
    what = Counter({"memberships": 0, "join_requests": 0, "bans": 0, "organizers_succeeded": 0, "groups_deleted": 0})
    # The invitations sent to their address keep no trace of it (nor admit anyone).
    redacted = await uow.invitations.redact_sent_to(email_hash, uow.clock.now()) if email_hash is not None else 0
    what["invitations_redacted"] = redacted
    for group_id in await uow.memberships.groups_of(person):
        group = await _locked(uow, group_id)
        what["memberships"] += 1
        if (outcome := await _end_membership_of_deleted(uow, group, person)) is not None:
            what[outcome] += 1
    now = uow.clock.now()
    for group_id in await uow.requests.groups_of(person):
        group = await _locked(uow, group_id)
        if await uow.requests.remove(group.id, person):
            uow.publish(
                JoinRequestWithdrawn(group_id=group.id, user_id=person, group_name=group.name, withdrawn_at=now)
            )
            what["join_requests"] += 1
    banned_from = await uow.bans.remove_all_of(person)
    for group_id in banned_from:  # as when a manager lifts one: read models of bans follow (`lifted_by` the person)
        uow.publish(MembershipBanLifted(group_id=group_id, user_id=person, lifted_by=person, lifted_at=now))
    what["bans"] = len(banned_from)
    await uow.known.forget(person)
    if event.deletion_id is not None:
        uow.publish(
            UserDeletionStepDone(
                user_id=person, deletion_id=event.deletion_id, service="groups", what=dict(what), done_at=now
            )
        )


async def _end_membership_of_deleted(uow: GroupsUnitOfWork, group: Group, person: UserId) -> str | None:
    """Ends `person`'s membership of the (locked) group. Returns "organizers_succeeded" when someone became
    organizer in their place, "groups_deleted" when nobody else belonged, else None."""
    now = uow.clock.now()
    role = (await uow.memberships.relation(group.id, person)).role
    assert role is not None  # groups_of found the membership and the group is locked since
    outcome = None
    if role is Role.ORGANIZER and await uow.memberships.count_with_role(group.id, Role.ORGANIZER) == 1:
        others = [m for m in await uow.memberships.tenures(group.id) if m.user_id != person]
        heir = successor(others)
        if heir is None:
            # Their membership ends first: `group.deleted` lists the members to tell, and they are gone.
            await uow.memberships.remove(group.id, person)
            await _start_deletion(uow, group, person)
            return "groups_deleted"
        previous = next(m.role for m in others if m.user_id == heir)
        await uow.memberships.set_role(group.id, heir, Role.ORGANIZER)
        uow.publish(
            MembershipRoleChanged(
                group_id=group.id,
                user_id=heir,
                role=Role.ORGANIZER,
                previous_role=previous,
                changed_by=person,
                changed_at=now,
            )
        )
        outcome = "organizers_succeeded"
    await uow.memberships.remove(group.id, person)
    await uow.groups.adjust_member_count(group.id, -1)
    uow.publish(MembershipLeft(group_id=group.id, user_id=person, role=role, left_at=now))
    return outcome


# --- joining and leaving ----------------------------------------------------------------------------------------


async def join_group(
    uow: GroupsUnitOfWork, ref: str, person: UserId, answers: Sequence[str], invitation: str | None = None
) -> Standing:
    """Joins at once or records a request with the answers, as domain.decide_join says. With an invitation's
    token the person joins without approval (and the invitation counts one use)."""
    async with uow:
        await _not_deleted(uow, person)
        group = await _locked(uow, ref)
        now = uow.clock.now()
        relation = await uow.memberships.relation(group.id, person)
        # A member following the link again stays a member and uses nothing up.
        invited = None
        if invitation is not None and not relation.is_member:
            invited = await _usable_invitation(uow, group, invitation, person)
        decision = decide_join(relation, group.details.join_policy, invited=invited is not None)
        if decision is Join.ALREADY_MEMBER:
            return Standing.MEMBER
        if decision is Join.ADMIT:
            if invited is not None:
                await uow.invitations.count_use(invited.id)
                if relation.pending and await uow.requests.remove(group.id, person):
                    uow.publish(
                        JoinRequestWithdrawn(group_id=group.id, user_id=person, group_name=group.name, withdrawn_at=now)
                    )
            await _admit(uow, group, person, via="invitation" if invited is not None else "open")
            return Standing.MEMBER
        answered = answers_for(group.details, answers)
        await uow.requests.add(group.id, person, answered, now)
        await uow.known.add(group.id, person, now)
        uow.publish(
            JoinRequestCreated(
                group_id=group.id,
                user_id=person,
                group_name=group.name,
                answers=[QuestionAnswer(question=a.question, answer=a.answer) for a in answered],
                approver_ids=list(await uow.memberships.managers(group.id)),
                requested_at=now,
            )
        )
        return Standing.PENDING


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _usable_invitation(uow: GroupsUnitOfWork, group: Group, token: str, person: UserId) -> Invitation:
    invitation = await uow.invitations.by_token(group.id, _token_hash(token))
    if invitation is None:
        raise InvitationNotFound("This group has no such invitation.")
    # An email invitation's address is compared with the person's confirmed one (a hash of each, both normalized).
    email_hash = await uow.profiles.email_hash(person) if invitation.email is not None else None
    invitation.check_usable(uow.clock.now(), email_hash)
    return invitation


async def _admit(uow: GroupsUnitOfWork, group: Group, person: UserId, *, via: str) -> None:
    now = uow.clock.now()
    await uow.memberships.add(group.id, person, Role.MEMBER, now)
    await uow.known.add(group.id, person, now)
    await uow.groups.adjust_member_count(group.id, +1)
    uow.publish(MembershipJoined(group_id=group.id, user_id=person, role=Role.MEMBER, via=via, joined_at=now))


async def leave_group(uow: GroupsUnitOfWork, ref: str, person: UserId) -> None:
    """A member leaves; someone still waiting for approval withdraws the request."""
    async with uow:
        group = await _locked(uow, ref)
        relation = await uow.memberships.relation(group.id, person)
        now = uow.clock.now()
        if relation.role is None:
            if relation.pending and await uow.requests.remove(group.id, person):
                uow.publish(
                    JoinRequestWithdrawn(group_id=group.id, user_id=person, group_name=group.name, withdrawn_at=now)
                )
                return
            raise NotAMember("You are not a member of this group.")
        check_leaving(relation.role, await uow.memberships.count_with_role(group.id, Role.ORGANIZER))
        await uow.memberships.remove(group.id, person)
        await uow.groups.adjust_member_count(group.id, -1)
        uow.publish(MembershipLeft(group_id=group.id, user_id=person, role=relation.role, left_at=now))


async def _take_request(uow: GroupsUnitOfWork, ref: str, manager: UserId, requester: UserId) -> Group:
    """Checks that `manager` may decide and removes `requester`'s pending request; returns the (locked) group."""
    group = await _locked(uow, ref)
    require(await uow.memberships.relation(group.id, manager), Action.DECIDE_REQUESTS)
    if not await uow.requests.remove(group.id, requester):
        raise JoinRequestNotFound("No pending request from this person.")
    return group


async def approve_request(
    uow: GroupsUnitOfWork, ref: str, manager: UserId, requester: UserId, message: str | None = None
) -> None:
    """Admits the requester; `message` (optional) is the manager's note to them, carried in the event."""
    note = decision_message(message)
    async with uow:
        group = await _take_request(uow, ref, manager, requester)
        await _approved(uow, group, manager, requester, message=note)


async def _approved(
    uow: GroupsUnitOfWork, group: Group, manager: UserId, requester: UserId, *, message: str | None
) -> None:
    uow.publish(
        JoinRequestApproved(
            group_id=group.id,
            user_id=requester,
            group_name=group.name,
            decided_by=manager,
            decided_at=uow.clock.now(),
            message=message,
        )
    )
    await _admit(uow, group, requester, via="approval")


async def deny_request(
    uow: GroupsUnitOfWork, ref: str, manager: UserId, requester: UserId, message: str | None = None
) -> None:
    note = decision_message(message)
    async with uow:
        group = await _take_request(uow, ref, manager, requester)
        uow.publish(
            JoinRequestDenied(
                group_id=group.id,
                user_id=requester,
                group_name=group.name,
                decided_by=manager,
                decided_at=uow.clock.now(),
                message=note,
            )
        )


# --- managing members -------------------------------------------------------------------------------------------


async def change_role(uow: GroupsUnitOfWork, ref: str, manager: UserId, member: UserId, role: Role) -> MemberView:
    async with uow:
        group = await _locked(uow, ref)
        actor = require(await uow.memberships.relation(group.id, manager), Action.CHANGE_ROLES)
        target = (await uow.memberships.relation(group.id, member)).role
        if target is None:
            raise NotAMember("That person is not a member of this group.")
        check_role_change(actor, target, role, await uow.memberships.count_with_role(group.id, Role.ORGANIZER))
        if role is not target:
            await uow.memberships.set_role(group.id, member, role)
            uow.publish(
                MembershipRoleChanged(
                    group_id=group.id,
                    user_id=member,
                    role=role,
                    previous_role=target,
                    changed_by=manager,
                    changed_at=uow.clock.now(),
                )
            )
        view = await uow.memberships.view(group.id, member)
        assert view is not None
        return view


async def step_down(uow: GroupsUnitOfWork, ref: str, person: UserId) -> MemberView:
    """A leader becomes a plain member and stays in the group (a member stepping down changes nothing)."""
    async with uow:
        group = await _locked(uow, ref)
        role = (await uow.memberships.relation(group.id, person)).role
        if role is None:
            raise NotAMember("You are not a member of this group.")
        if role is not Role.MEMBER:
            check_stepping_down(role, await uow.memberships.count_with_role(group.id, Role.ORGANIZER))
            await uow.memberships.set_role(group.id, person, Role.MEMBER)
            uow.publish(
                MembershipRoleChanged(
                    group_id=group.id,
                    user_id=person,
                    role=Role.MEMBER,
                    previous_role=role,
                    changed_by=person,
                    changed_at=uow.clock.now(),
                )
            )
        view = await uow.memberships.view(group.id, person)
        assert view is not None
        return view


async def remove_member(uow: GroupsUnitOfWork, ref: str, manager: UserId, member: UserId, *, ban: bool) -> None:
    """Removes a member. With `ban`, the person also cannot join (or ask to) again; a ban may also be laid on
    someone who is not a member but whom the group has seen (their pending request, if any, is denied)."""
    async with uow:
        group = await _locked(uow, ref)
        actor = require(await uow.memberships.relation(group.id, manager), Action.REMOVE_MEMBERS)
        target = await uow.memberships.relation(group.id, member)
        now = uow.clock.now()
        if target.role is not None:
            check_removal(
                actor,
                target.role,
                await uow.memberships.count_with_role(group.id, Role.ORGANIZER),
                actor_is_target=manager == member,
            )
            await uow.memberships.remove(group.id, member)
            await uow.groups.adjust_member_count(group.id, -1)
            uow.publish(
                MembershipRemoved(
                    group_id=group.id, user_id=member, role=target.role, removed_by=manager, banned=ban, removed_at=now
                )
            )
        elif not ban:
            raise NotAMember("That person is not a member of this group.")
        elif not await uow.known.knows(group.id, member):
            raise NeverSeen("This group has never seen that person: nobody to ban.")
        elif target.pending and await uow.requests.remove(group.id, member):
            uow.publish(
                JoinRequestDenied(
                    group_id=group.id, user_id=member, group_name=group.name, decided_by=manager, decided_at=now
                )
            )
        if ban:
            await uow.bans.add(group.id, member, manager, now)


async def lift_ban(uow: GroupsUnitOfWork, ref: str, manager: UserId, person: UserId) -> None:
    """The person may ask to join (or join) again; they do not become a member by it."""
    async with uow:
        group = await _locked(uow, ref)
        require(await uow.memberships.relation(group.id, manager), Action.LIFT_BANS)
        if not await uow.bans.remove(group.id, person):
            raise BanNotFound("That person is not banned from this group.")
        uow.publish(
            MembershipBanLifted(group_id=group.id, user_id=person, lifted_by=manager, lifted_at=uow.clock.now())
        )


# --- invitations --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A new invitation, its token (handed out once: only its hash is stored) and the slug of its group."""

    invitation: Invitation
    token: str
    slug: str


async def invite(
    uow: GroupsUnitOfWork, ref: str, manager: UserId, terms: InvitationTerms, limits: InvitationLimits
) -> Issued:
    """A new invitation. An email invitation is announced as group.invitation_sent, which the notifications
    service delivers to the address, within the daily bounds per inviter and per group."""
    token = secrets.token_urlsafe(32)
    async with uow:
        group = await _locked(uow, ref)
        require(await uow.memberships.relation(group.id, manager), Action.INVITE)
        now = uow.clock.now()
        if terms.email is not None:
            since = now - INVITATION_WINDOW
            # The group's count is exact (its row is locked); an inviter's, across groups, may let a race of
            # two groups' invitations through at once, which a daily bound can afford.
            sent, oldest = await uow.invitations.emails_since(since, created_by=manager)
            check_invitation_quota(sent, oldest, limits.per_inviter, now, by="from one person")
            sent, oldest = await uow.invitations.emails_since(since, group_id=group.id)
            check_invitation_quota(sent, oldest, limits.per_group, now, by="for one group")
        invitation = Invitation(
            id=str(uuid.uuid4()),
            group_id=group.id,
            created_by=manager,
            created_at=now,
            expires_at=now + terms.expires_in,
            max_uses=terms.max_uses,
            uses=0,
            email=terms.email,
        )
        await uow.invitations.add(invitation, _token_hash(token))
        if terms.email is not None:
            uow.publish(
                GroupInvitationSent(
                    group_id=group.id,
                    invitation_id=invitation.id,
                    slug=group.slug,
                    group_name=group.name,
                    invited_by=manager,
                    email=terms.email,
                    token=token,
                    expires_at=invitation.expires_at,
                    sent_at=now,
                )
            )
        return Issued(invitation, token, group.slug)


async def revoke_invitation(uow: GroupsUnitOfWork, ref: str, manager: UserId, invitation_id: str) -> None:
    async with uow:
        group = await _locked(uow, ref)
        require(await uow.memberships.relation(group.id, manager), Action.INVITE)
        if not await uow.invitations.revoke(group.id, invitation_id, uow.clock.now()):
            raise InvitationNotFound("This group has no such invitation.")


async def announce(uow: GroupsUnitOfWork, ref: str, author: UserId, subject: str, body: str) -> str:
    """Queued for delivery by the notifications service; returns the announcement's id."""
    announcement = announcement_from(subject, body)
    async with uow:
        group = await _locked(uow, ref)
        require(await uow.memberships.relation(group.id, author), Action.ANNOUNCE)
        announcement_id = str(uuid.uuid4())
        recipients = [m for m in await uow.memberships.user_ids(group.id) if m != author]
        uow.publish(
            GroupAnnouncement(
                group_id=group.id,
                announcement_id=announcement_id,
                group_name=group.name,
                author_id=author,
                subject=announcement.subject,
                body=announcement.body,
                recipient_ids=list(recipients),
                sent_at=uow.clock.now(),
            )
        )
        return announcement_id


# --- reading ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupView:
    group: Group
    banner: ImageVariants | None
    relation: Relation | None  # None for anonymous callers


async def _find(stores: Stores, ref: str) -> Group:
    group = await stores.groups.find(ref)
    if group is None:
        raise GroupNotFound(f"No group {ref}.")
    return group


async def view_group(stores: Stores, ref: str, caller: UserId | None) -> GroupView:
    group = await _find(stores, ref)
    banners = await stores.groups.banners([group.card()])
    relation = await stores.memberships.relation(group.id, caller) if caller else None
    return GroupView(group, banners.get(group.id), relation)


async def search_groups(
    stores: Stores, criteria: GroupSearch, page: PageRequest
) -> tuple[list[Listed], Any, int | None]:
    """A page of groups as a list shows them (their banners included), the position after it, and for `member=me` or
    `pending=me` how many groups the search finds in all (else None; with `near`, those within the radius). A first
    page without `near` takes its total from its own statement; a next page, or a nearby search, counts in a second
    one."""
    # A cursor is tied to the search's filters (its position means nothing in another list).
    cursors = FilteredCursors(lambda: criteria.filters)
    after = cursors.after(page.cursor)
    total: int | None
    if criteria.counted and criteria.near is None and after is None:
        listed, position, total = await stores.groups.first_page_with_total(criteria, page.limit)
    else:
        listed, position = await stores.groups.search(criteria, page.limit, after)
        total = await stores.groups.count(criteria) if criteria.counted else None
    return listed, cursors.next(position), total


T = TypeVar("T")


@dataclass(frozen=True)
class Listing(Generic[T]):
    """A page of a list, the position after it (None on the last page) and how many the whole list holds."""

    items: list[T]
    position: Any
    total: int


async def list_members(
    stores: Stores, ref: str, caller: UserId | None, page: PageRequest, role: Role | None = None
) -> Listing[MemberView]:
    group = await _find(stores, ref)
    relation = await stores.memberships.relation(group.id, caller)
    require_member_list(group.details.visibility, relation, anonymous=caller is None)
    # A cursor is tied to the role it was made with, as a search's to its filters (a client's cursor from one list
    # would go on in another).
    cursors = FilteredCursors(lambda: [role])
    members, position = await stores.memberships.page(group.id, page.limit, cursors.after(page.cursor), role)
    return Listing(members, cursors.next(position), await stores.memberships.count(group.id, role))


async def list_requests(stores: Stores, ref: str, manager: UserId, page: PageRequest) -> Listing[RequestView]:
    group = await _find(stores, ref)
    require(await stores.memberships.relation(group.id, manager), Action.SEE_REQUESTS)
    requests, position = await stores.requests.page(group.id, page.limit, page.cursor)
    return Listing(requests, position, await stores.requests.count(group.id))


async def my_requests(stores: Stores, person: UserId, page: PageRequest) -> Listing[MyRequestView]:
    requests, position = await stores.requests.of_person(person, page.limit, page.cursor)
    return Listing(requests, position, await stores.requests.count_of(person))


async def list_bans(stores: Stores, ref: str, manager: UserId, page: PageRequest) -> Listing[BanView]:
    group = await _find(stores, ref)
    require(await stores.memberships.relation(group.id, manager), Action.SEE_BANS)
    bans, position = await stores.bans.page(group.id, page.limit, page.cursor)
    return Listing(bans, position, await stores.bans.count(group.id))


async def list_invitations(
    stores: Stores, ref: str, manager: UserId, page: PageRequest
) -> tuple[list[Invitation], Any]:
    group = await _find(stores, ref)
    require(await stores.memberships.relation(group.id, manager), Action.INVITE)
    return await stores.invitations.page(group.id, page.limit, page.cursor)


# --- data export ------------------------------------------------------------------------------------------------


async def give_export_part(uow: GroupsUnitOfWork, event: UserExportRequested) -> None:
    """The groups service's part of a person's data export: memberships, join requests, bans, groups organized."""
    files = await uow.personal_data.files_of(event.user_id)
    uow.publish(export_part(event, "groups", files, uow.clock.now()))
