"""Use cases of the groups service: one function per thing a person does, state and outbox committed together.
Rules come from domain.py (their errors are domain errors; api.py gives them HTTP statuses).

Every use case that changes members locks the group row first (`find_for_update`): the member count, the number
of organizers and whether someone is already a member are decided while no one else can change them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from gatherly.contracts.groups import (
    GroupAnnouncement,
    GroupCreated,
    GroupDeleted,
    GroupEventsCancelled,
    GroupUpdated,
    JoinRequestApproved,
    JoinRequestCreated,
    JoinRequestDenied,
    JoinRequestWithdrawn,
    MembershipJoined,
    MembershipLeft,
    MembershipRemoved,
    MembershipRoleChanged,
    QuestionAnswer,
)
from gatherly.contracts.users import GeoPoint, ImageVariants
from gatherly.groups.domain import (
    DELETION_TIMEOUT,
    Action,
    Deletion,
    DeletionStatus,
    DeletionStep,
    Found,
    Group,
    GroupDetails,
    GroupNotFound,
    GroupSearch,
    Join,
    JoinRequestNotFound,
    NotAMember,
    Relation,
    Role,
    Standing,
    UserId,
    announcement_from,
    answers_for,
    check_leaving,
    check_removal,
    check_role_change,
    decide_join,
    details_from,
    new_group_id,
    require,
    require_member_list,
    slug_base,
)
from gatherly.groups.store import GroupsUnitOfWork, MemberView, RequestView, Stores
from gatherly.kernel.web import PageRequest

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


async def _locked(uow: GroupsUnitOfWork, ref: str) -> Group:
    group = await uow.groups.find_for_update(ref)
    if group is None:
        raise GroupNotFound(f"No group {ref}.")
    return group


# --- the group itself ---------------------------------------------------------------------------------------------


async def create_group(uow: GroupsUnitOfWork, founder: UserId, details: GroupDetails) -> Group:
    async with uow:
        now = uow.clock.now()
        draft = Group(new_group_id(), "", details, member_count=1, created_at=now, updated_at=now)
        group = await uow.groups.add(draft, slug_base(details.name))
        await uow.memberships.add(group.id, founder, Role.ORGANIZER, now)
        uow.publish(
            GroupCreated(**_snapshot(group), organizer_id=founder, created_at=now),
            MembershipJoined(group_id=group.id, user_id=founder, role=Role.ORGANIZER, via="created", joined_at=now),
        )
        return group


async def update_group(uow: GroupsUnitOfWork, ref: str, editor: UserId, changes: Mapping[str, Any]) -> Group:
    """`changes` names GroupDetails fields; the rest stay as they are. The slug never changes."""
    async with uow:
        group = await _locked(uow, ref)
        require(await uow.memberships.relation(group.id, editor), Action.EDIT_GROUP)
        current = group.details
        merged = {name: getattr(current, name) for name in GroupDetails.__dataclass_fields__}
        merged.update(changes)
        now = uow.clock.now()
        updated = group.changed(details_from(**merged), now)
        await uow.groups.save(updated)
        uow.publish(GroupUpdated(**_snapshot(updated), updated_by=editor, updated_at=now))
        return updated


async def delete_group(uow: GroupsUnitOfWork, ref: str, organizer: UserId) -> Deletion:
    """Starts the group-deletion saga (see domain.Deletion). In this one transaction: the group is hidden, its
    memberships, pending requests and bans end (who belonged and who was waiting stay in the saga's data and in
    group.deleted), and the saga waits for the events service to cancel the upcoming events."""
    async with uow:
        group = await _locked(uow, ref)
        require(await uow.memberships.relation(group.id, organizer), Action.DELETE_GROUP)
        now = uow.clock.now()
        member_ids = list(await uow.memberships.user_ids(group.id))
        requester_ids = list(await uow.requests.user_ids(group.id))
        await uow.groups.mark_deleted(group.id, now)
        await uow.memberships.remove_all(group.id)
        await uow.requests.remove_all(group.id)
        await uow.bans.remove_all(group.id)
        deletion = Deletion(group.id, DeletionStatus.PENDING, DeletionStep.CANCEL_EVENTS, now + DELETION_TIMEOUT)
        data = {"deleted_by": organizer, "member_ids": member_ids, "requester_ids": requester_ids}
        await uow.deletions.start(deletion, data, now)
        uow.publish(
            GroupDeleted(
                group_id=group.id,
                slug=group.slug,
                name=group.name,
                deleted_by=organizer,
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


# --- joining and leaving ----------------------------------------------------------------------------------------


async def join_group(uow: GroupsUnitOfWork, ref: str, person: UserId, answers: Sequence[str]) -> Standing:
    """Joins at once or records a request with the answers, as domain.decide_join says."""
    async with uow:
        group = await _locked(uow, ref)
        decision = decide_join(await uow.memberships.relation(group.id, person), group.details.join_policy)
        if decision is Join.ALREADY_MEMBER:
            return Standing.MEMBER
        if decision is Join.ALREADY_PENDING:
            return Standing.PENDING
        if decision is Join.ADMIT:
            await _admit(uow, group, person, via="open")
            return Standing.MEMBER
        now = uow.clock.now()
        answered = answers_for(group.details, answers)
        await uow.requests.add(group.id, person, answered, now)
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


async def _admit(uow: GroupsUnitOfWork, group: Group, person: UserId, *, via: str) -> None:
    now = uow.clock.now()
    await uow.memberships.add(group.id, person, Role.MEMBER, now)
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


async def approve_request(uow: GroupsUnitOfWork, ref: str, manager: UserId, requester: UserId) -> None:
    async with uow:
        group = await _take_request(uow, ref, manager, requester)
        uow.publish(
            JoinRequestApproved(
                group_id=group.id,
                user_id=requester,
                group_name=group.name,
                decided_by=manager,
                decided_at=uow.clock.now(),
            )
        )
        await _admit(uow, group, requester, via="approval")


async def deny_request(uow: GroupsUnitOfWork, ref: str, manager: UserId, requester: UserId) -> None:
    async with uow:
        group = await _take_request(uow, ref, manager, requester)
        uow.publish(
            JoinRequestDenied(
                group_id=group.id,
                user_id=requester,
                group_name=group.name,
                decided_by=manager,
                decided_at=uow.clock.now(),
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


async def remove_member(uow: GroupsUnitOfWork, ref: str, manager: UserId, member: UserId, *, ban: bool) -> None:
    """Removes a member. With `ban`, the person also cannot join (or ask to) again; a ban may also be laid on
    someone who is not a member (their pending request, if any, is denied)."""
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
        elif target.pending and await uow.requests.remove(group.id, member):
            uow.publish(
                JoinRequestDenied(
                    group_id=group.id, user_id=member, group_name=group.name, decided_by=manager, decided_at=now
                )
            )
        if ban:
            await uow.bans.add(group.id, member, manager, now)


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
    distance_km: float | None = None


async def _find(stores: Stores, ref: str) -> Group:
    group = await stores.groups.find(ref)
    if group is None:
        raise GroupNotFound(f"No group {ref}.")
    return group


async def view_group(stores: Stores, ref: str, caller: UserId | None) -> GroupView:
    group = await _find(stores, ref)
    banners = await stores.groups.banners([group])
    relation = await stores.memberships.relation(group.id, caller) if caller else None
    return GroupView(group, banners.get(group.id), relation)


async def search_groups(stores: Stores, criteria: GroupSearch, page: PageRequest) -> tuple[list[GroupView], Any]:
    found, position = await stores.groups.search(criteria, page.limit, page.cursor)
    banners = await stores.groups.banners(f.group for f in found)
    return [_listed(f, banners.get(f.group.id)) for f in found], position


def _listed(found: Found, banner: ImageVariants | None) -> GroupView:
    return GroupView(found.group, banner, None, found.distance_km)


async def list_members(
    stores: Stores, ref: str, caller: UserId | None, page: PageRequest
) -> tuple[list[MemberView], Any]:
    group = await _find(stores, ref)
    relation = await stores.memberships.relation(group.id, caller)
    require_member_list(group.details.visibility, relation, anonymous=caller is None)
    return await stores.memberships.page(group.id, page.limit, page.cursor)


async def list_requests(stores: Stores, ref: str, manager: UserId, page: PageRequest) -> tuple[list[RequestView], Any]:
    group = await _find(stores, ref)
    require(await stores.memberships.relation(group.id, manager), Action.SEE_REQUESTS)
    return await stores.requests.page(group.id, page.limit, page.cursor)
